package proto

import (
	"errors"
	"fmt"
	"net/http"
)

// Error codes. They are stable and part of the API: HTTP bodies, Mesophyll
// responses and CLI output all carry them.
const (
	CodeBadRequest        = "bad_request"
	CodeUnauthorized      = "unauthorized"
	CodeNotFound          = "not_found"
	CodeMethodNotAllowed  = "method_not_allowed"
	CodeTooLarge          = "request_too_large"
	CodeScriptError       = "script_error"
	CodeCompileError      = "compile_error"
	CodeTenantBroken      = "tenant_broken"
	CodeWorkerOverloaded  = "worker_overloaded"
	CodeWorkerUnavailable = "worker_unavailable"
	CodeTimeout           = "timeout"
	CodeCPULimit          = "cpu_limit"
	CodeMemoryLimit       = "memory_limit"
	CodeStackOverflow     = "stack_overflow"
	CodeTenantQuarantined = "tenant_quarantined"
	CodeStoreUnavailable  = "store_unavailable"
	CodeKVQuotaExceeded   = "kv_quota_exceeded"
	CodeInvalidKV         = "invalid_kv"
	CodeShuttingDown      = "shutting_down"
	CodeConflict          = "conflict"
	CodeShardUnavailable  = "shard_unavailable"
	CodeInternal          = "internal"
	// CodeResultTooLarge: a call's result is over --max-result (or does
	// not fit in a Mesophyll frame).
	CodeResultTooLarge = "result_too_large"
	// CodeKVResultTooLarge: a ctx.kv.find (or kv.get) answer is over what
	// one store response may carry.
	CodeKVResultTooLarge = "kv_result_too_large"
	// CodeTemplateTooLarge: a template, or a tenant's set of templates,
	// is over its size limit.
	CodeTemplateTooLarge = "template_too_large"
	// CodeBacklogFull: a worker's held nowait events are at their byte
	// limit (--worker-queue-bytes).
	CodeBacklogFull = "backlog_full"
	// CodeTooManyConnections: the API is at --max-connections.
	CodeTooManyConnections = "too_many_connections"
	// CodeRequestTimeout: the request (its body) did not arrive in time.
	CodeRequestTimeout = "request_timeout"
	// CodeNotRun: a pipelined event (DispatchEvent with a window) was not
	// run because an earlier event of its window ended with an error its
	// queue delivers again (see StopsWindow); it is delivered again later,
	// no attempt counted.
	CodeNotRun = "not_run"
)

// StopsWindow reports whether an event ending with an error of this code
// is delivered again by the master's durable queue (a fatal limit, a
// worker death, an internal error, or a wait: quarantine, overload,
// store, shutdown, not_run), so that the later events of its window must
// not run before it. The errors a template raises itself (script_error,
// kv_quota_exceeded, ...) count as delivered and do not stop a window.
func StopsWindow(code string) bool {
	switch code {
	case CodeCPULimit, CodeTimeout, CodeMemoryLimit, CodeStackOverflow, CodeWorkerUnavailable, CodeInternal,
		CodeTenantQuarantined, CodeWorkerOverloaded, CodeBacklogFull, CodeStoreUnavailable, CodeShuttingDown,
		CodeShardUnavailable, CodeNotRun:
		return true
	}
	return false
}

// Error is an error with a stable machine-readable code. Its JSON form is
// {"code":"...","message":"..."} with optional extra fields.
type Error struct {
	// Code is one of the Code* constants.
	Code string `json:"code"`
	// Message is a human-readable explanation naming the problem.
	Message string `json:"message"`
	// Results carries the results of the templates that succeeded when a
	// dispatch fails with script_error.
	Results Value `json:"results,omitempty"`
	// RetryAfter, in seconds, tells a client when to try again.
	RetryAfter int `json:"retry_after,omitempty"`
}

// Error implements error.
func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Errorf returns an *Error with the given code and formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// AsError returns err as an *Error, wrapping unknown errors as internal.
func AsError(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: CodeInternal, Message: err.Error()}
}

// CodeOf returns the code of err, or "" for nil.
func CodeOf(err error) string {
	if err == nil {
		return ""
	}
	return AsError(err).Code
}

// HTTPStatus maps an error code to the HTTP status the API answers with.
func HTTPStatus(code string) int {
	switch code {
	case CodeBadRequest, CodeCompileError, CodeInvalidKV, CodeTooLarge:
		return http.StatusBadRequest
	case CodeUnauthorized:
		return http.StatusUnauthorized
	case CodeNotFound:
		return http.StatusNotFound
	case CodeMethodNotAllowed:
		return http.StatusMethodNotAllowed
	case CodeScriptError, CodeCPULimit, CodeMemoryLimit, CodeStackOverflow, CodeKVQuotaExceeded,
		CodeResultTooLarge, CodeKVResultTooLarge:
		return http.StatusUnprocessableEntity
	case CodeTemplateTooLarge:
		return http.StatusRequestEntityTooLarge
	case CodeRequestTimeout:
		return http.StatusRequestTimeout
	case CodeTenantQuarantined:
		return http.StatusLocked
	case CodeConflict:
		return http.StatusConflict
	case CodeTenantBroken, CodeWorkerOverloaded, CodeWorkerUnavailable, CodeStoreUnavailable, CodeShuttingDown, CodeShardUnavailable,
		CodeBacklogFull, CodeTooManyConnections:
		return http.StatusServiceUnavailable
	case CodeTimeout:
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}
