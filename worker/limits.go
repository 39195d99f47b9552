package worker

import (
	"fmt"
	"strconv"
	"time"

	"github.com/templateworker/templateworker/mesophyll"
	"github.com/templateworker/templateworker/proto"
)

// Limits bound every call (dispatch or run script) into a tenant VM. Zero
// fields mean unlimited, except where DefaultLimits says otherwise.
type Limits struct {
	// MaxInstructions is the most Lua VM instructions one call may execute
	// (--lua-max-instructions). Work done by Go library functions such as
	// the pattern matcher is charged against the same budget.
	MaxInstructions int64
	// Timeout is the wall time one call may take (--lua-timeout); the
	// caller's context deadline applies too, whichever is sooner.
	Timeout time.Duration
	// MaxMemory is the ceiling on a tenant VM's memory (--lua-max-memory).
	MaxMemory int64
	// MaxString is the longest string a script may build (--lua-max-string).
	MaxString int
	// MaxCallDepth bounds nested calls, so deep recursion is an error
	// rather than unbounded growth.
	MaxCallDepth int
	// MaxResult is the most bytes a call's result may take encoded as
	// JSON (--max-result): a dispatch's object of template results, a
	// script's result. Over it the call fails with result_too_large.
	MaxResult int
	// MaxWorkerMemory is the ceiling on the sum of the memory of one
	// worker's tenant VMs (--lua-max-worker-memory); the sum of their
	// MaxMemory may exceed it. The VM whose allocation takes the worker
	// over it fails with memory_limit; 0 = no worker-wide ceiling.
	MaxWorkerMemory int64
	// MaxSource is the longest chunk, in bytes, that a template, a script
	// or load may compile; 0 means MaxString.
	MaxSource int
	// StoreAnswer is the most bytes of encoded values one store answer (a
	// ctx.kv.find, a ctx.events.list) may carry: what a Mesophyll frame
	// carries (proto.ValueBudget of --mesophyll-max-frame); 0 means that
	// of the default frame. An answer the master refused as larger is
	// charged to the call as if that many bytes had been decoded: the
	// master read at least as much from the store to know.
	StoreAnswer int
}

// storeAnswer is StoreAnswer, defaulting to the default frame's budget.
func (l Limits) storeAnswer() int {
	if l.StoreAnswer > 0 {
		return l.StoreAnswer
	}
	return proto.ValueBudget(mesophyll.DefaultMaxFrame)
}

// maxSource is MaxSource, defaulting to MaxString.
func (l Limits) maxSource() int {
	if l.MaxSource > 0 {
		return l.MaxSource
	}
	return l.MaxString
}

// DefaultLimits are the limits of a worker when none are configured.
var DefaultLimits = Limits{
	MaxInstructions: 50_000_000,
	Timeout:         5 * time.Second,
	MaxMemory:       64 << 20,
	MaxString:       16 << 20,
	MaxCallDepth:    10_000,
	MaxResult:       DefaultMaxResult,
	MaxWorkerMemory: 512 << 20,
}

// DefaultMaxResult is the default of Limits.MaxResult: 1 MiB, as much as
// a request body may carry.
const DefaultMaxResult = 1 << 20

// hookEvery is how many VM instructions run between two checks of the
// call's budget, deadline and abort flag.
const hookEvery = 1000

// String describes the limits for logs.
func (l Limits) String() string {
	return fmt.Sprintf("instructions=%d timeout=%s memory=%d string=%d depth=%d source=%d result=%d worker_memory=%d",
		l.MaxInstructions, l.Timeout, l.MaxMemory, l.MaxString, l.MaxCallDepth, l.maxSource(), l.MaxResult, l.MaxWorkerMemory)
}

func itoa(i int) string { return strconv.Itoa(i) }
