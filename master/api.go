package master

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/queue"
	"github.com/templateworker/templateworker/store"
	"github.com/templateworker/templateworker/worker"
)

// maxBody is the largest request body the API accepts.
const maxBody = 1 << 20

// templateName is what a template name may look like.
var templateName = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$`)

// API serves the HTTP API of the master.
type API struct {
	Store   store.Store
	Workers *Pool
	// Queue is the durable event queue of nowait events; nil: nowait
	// events go to the workers' memory-only queues.
	Queue *queue.Queue
	// Quarantine refuses hostile tenants; nil disables it.
	Quarantine *Quarantine
	// Metrics records calls; nil disables it.
	Metrics *Metrics
	// RollingRestart replaces the workers one at a time; nil when the
	// topology has no worker processes.
	RollingRestart func(ctx context.Context) error
	// Token is the bearer token every /v1 route requires.
	Token string
	// CallTimeout bounds a waited call (dispatch or script).
	CallTimeout time.Duration
	Log         zerolog.Logger
	// Ready reports readiness beyond the workers (e.g. the store); may be nil.
	Ready func(ctx context.Context) error
	// Cluster forwards calls for tenants owned by other masters; nil when
	// clustering is off.
	Cluster Cluster
	// MaxFrame is the Mesophyll frame limit (--mesophyll-max-frame, 4 MiB
	// when 0): a tenant's template set must fit in one frame, in both
	// topologies.
	MaxFrame int64
	// Events is the durable event queue (delayed events, dead letters,
	// pending lists); nil answers those routes with store_unavailable.
	Events EventQueue

	guardOnce sync.Once
	guarded   WorkerLike // Workers behind Quarantine, made once
}

// Handler returns the API's routes.
func (a *API) Handler() http.Handler {
	mux := http.NewServeMux()
	v1 := func(pattern string, h func(w http.ResponseWriter, r *http.Request) error) {
		mux.Handle(pattern, a.auth(a.routed(h)))
	}
	v1("PUT /v1/tenants/{kind}/{tid}/templates/{name}", a.putTemplate)
	v1("GET /v1/tenants/{kind}/{tid}/templates", a.listTemplates)
	v1("DELETE /v1/tenants/{kind}/{tid}/templates/{name}", a.deleteTemplate)
	v1("POST /v1/tenants/{kind}/{tid}/events", a.dispatch)
	v1("POST /v1/tenants/{kind}/{tid}/scripts", a.runScript)
	v1("DELETE /v1/tenants/{kind}/{tid}/vm", a.dropTenant)
	v1("GET /v1/tenants/{kind}/{tid}/kv", a.listKV)
	v1("GET /v1/workers", a.listWorkers)
	v1("POST /v1/workers/restart", a.restartWorkers)
	v1("GET /v1/quarantine", a.listQuarantine)
	v1("DELETE /v1/tenants/{kind}/{tid}/quarantine", a.liftQuarantine)
	v1("GET /v1/events/pending", a.listPending)
	v1("DELETE /v1/tenants/{kind}/{tid}/events/{id}", a.cancelEvent)
	v1("GET /v1/dead-letters", a.listDeadLetters)
	v1("POST /v1/dead-letters/{id}/retry", a.retryDeadLetter)
	v1("DELETE /v1/dead-letters/{id}", a.deleteDeadLetter)
	a.HealthRoutes(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if allow := allowedMethods(mux, r); len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			writeError(w, proto.Errorf(proto.CodeMethodNotAllowed, "%s is not allowed on %s (allowed: %s)", r.Method, r.URL.Path, strings.Join(allow, ", ")))
			return
		}
		writeError(w, proto.Errorf(proto.CodeNotFound, "no route for %s %s", r.Method, r.URL.Path))
	})
	return mux
}

// allowedMethods lists the methods that do have a route for r's path.
func allowedMethods(mux *http.ServeMux, r *http.Request) []string {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete} {
		if m == r.Method {
			continue
		}
		r2 := r.Clone(r.Context())
		r2.Method = m
		if _, pattern := mux.Handler(r2); pattern != "" && pattern != "/" {
			allow = append(allow, m)
		}
	}
	return allow
}

// HealthRoutes adds /healthz, /readyz and /metrics (no token: they are
// for load balancers, systemd and Prometheus) to mux.
func (a *API) HealthRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", a.readyz)
	if a.Metrics != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(a.Metrics.Registry, promhttp.HandlerOpts{}))
	}
}

// auth checks the bearer token, then runs h and renders its error.
func (a *API) auth(h func(w http.ResponseWriter, r *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(a.Token)) != 1 {
			writeError(w, proto.Errorf(proto.CodeUnauthorized, "missing or invalid bearer token"))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		if err := h(w, r); err != nil {
			e := proto.AsError(err)
			if e.Code == proto.CodeInternal {
				a.Log.Error().Err(err).Str("path", r.URL.Path).Msg("request failed")
				e = proto.Errorf(proto.CodeInternal, "internal error")
			}
			writeError(w, e)
		}
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, e *proto.Error) {
	status := proto.HTTPStatus(e.Code)
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
	} else if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, status, map[string]*proto.Error{"error": e})
}

// tenant parses {kind}/{tid} from the path.
func tenant(r *http.Request) (proto.Id, error) {
	id, err := proto.ParseIdParts(r.PathValue("kind"), r.PathValue("tid"))
	if err != nil {
		return proto.Id{}, proto.Errorf(proto.CodeBadRequest, "bad tenant in path: %v", err)
	}
	return id, nil
}

// decodeEvent reads an event body: the spelling json.Marshal writes
// without reflection (the common case), anything else as decode does.
func decodeEvent(r *http.Request) (proto.Event, error) {
	var ev proto.Event
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return ev, bodyError(err)
	}
	if fast, ok := proto.ParseCanonicalEvent(bytes.TrimRight(body, " \t\r\n")); ok {
		return fast, nil
	}
	return ev, decodeFrom(bytes.NewReader(body), &ev)
}

// decode reads a JSON body into v, rejecting unknown fields and trailing data.
func decode(r *http.Request, v any) error { return decodeFrom(r.Body, v) }

// bodyError is the API error of a failed read or decode of a body.
func bodyError(err error) error {
	var tooBig *http.MaxBytesError
	var netErr net.Error
	switch {
	case errors.As(err, &tooBig):
		return proto.Errorf(proto.CodeTooLarge, "request body is larger than %d bytes", maxBody)
	case errors.As(err, &netErr) && netErr.Timeout():
		return proto.Errorf(proto.CodeRequestTimeout, "request body did not arrive in time (--http-read-timeout)")
	case errors.Is(err, io.EOF):
		return proto.Errorf(proto.CodeBadRequest, "request body is empty: want a JSON object")
	}
	return proto.Errorf(proto.CodeBadRequest, "bad JSON body: %v", err)
}

func decodeFrom(body io.Reader, v any) error {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return bodyError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return proto.Errorf(proto.CodeBadRequest, "bad JSON body: trailing data after the object")
	}
	return nil
}

func (a *API) callCtx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), a.CallTimeout)
}

type putTemplateBody struct {
	Code   *string  `json:"code"`
	Events []string `json:"events"`
}

func (a *API) putTemplate(w http.ResponseWriter, r *http.Request) error {
	id, err := tenant(r)
	if err != nil {
		return err
	}
	name := r.PathValue("name")
	if !templateName.MatchString(name) {
		return proto.Errorf(proto.CodeBadRequest, "bad template name %q: use 1-64 letters, digits, '_', '.', '-' (not starting with '.' or '-')", name)
	}
	var body putTemplateBody
	if err := decode(r, &body); err != nil {
		return err
	}
	if body.Code == nil {
		return proto.Errorf(proto.CodeBadRequest, "missing \"code\"")
	}
	events, err := cleanEvents(body.Events)
	if err != nil {
		return err
	}
	t := proto.Template{Name: name, Code: *body.Code, Events: events, UpdatedAt: time.Now().UTC()}
	if len(t.Code) > proto.MaxTemplateBytes {
		return checkTemplate(nil, id, t, a.MaxFrame)
	}
	others, err := a.Store.Templates(r.Context(), id)
	if err != nil {
		return err
	}
	if err := checkTemplate(others, id, t, a.MaxFrame); err != nil {
		return err
	}
	if err := worker.Compile(name, *body.Code); err != nil {
		return err
	}
	if err := a.Store.PutTemplate(r.Context(), id, t); err != nil {
		return err
	}
	a.invalidate(r.Context(), id)
	writeJSON(w, http.StatusOK, map[string]any{"template": templateInfo{Name: t.Name, Events: t.Events, UpdatedAt: t.UpdatedAt}})
	return nil
}

type templateInfo struct {
	Name      string    `json:"name"`
	Events    []string  `json:"events"`
	UpdatedAt time.Time `json:"updated_at"`
}

// cleanEvents validates and de-duplicates event names.
func cleanEvents(in []string) ([]string, error) {
	out := make([]string, 0, len(in))
	seen := make(map[string]bool, len(in))
	for _, e := range in {
		if err := (proto.Event{Name: e}).Validate(); err != nil {
			return nil, proto.Errorf(proto.CodeBadRequest, "bad event in \"events\": %v", err)
		}
		if !seen[e] {
			seen[e] = true
			out = append(out, e)
		}
	}
	return out, nil
}

// invalidate makes the next dispatch of id load the new templates.
func (a *API) invalidate(ctx context.Context, id proto.Id) {
	ctx, cancel := context.WithTimeout(ctx, a.CallTimeout)
	defer cancel()
	if err := a.Workers.DropTenant(ctx, id); err != nil {
		// A worker that is down starts with no cached state anyway.
		a.Log.Warn().Err(err).Str("tenant", id.String()).Msg("drop tenant after template change")
	}
	if a.Cluster != nil {
		a.Cluster.TemplatesChanged(ctx, id)
	}
}

func (a *API) listTemplates(w http.ResponseWriter, r *http.Request) error {
	id, err := tenant(r)
	if err != nil {
		return err
	}
	tpls, err := a.Store.Templates(r.Context(), id)
	if err != nil {
		return err
	}
	if tpls == nil {
		tpls = []proto.Template{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"templates": tpls})
	return nil
}

func (a *API) deleteTemplate(w http.ResponseWriter, r *http.Request) error {
	id, err := tenant(r)
	if err != nil {
		return err
	}
	name := r.PathValue("name")
	if !templateName.MatchString(name) {
		return proto.Errorf(proto.CodeBadRequest, "bad template name %q", name)
	}
	if err := a.Store.DeleteTemplate(r.Context(), id, name); err != nil {
		return err
	}
	a.invalidate(r.Context(), id)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *API) dispatch(w http.ResponseWriter, r *http.Request) error {
	id, err := tenant(r)
	if err != nil {
		return err
	}
	ev, deliverAt, err := a.delivery(r)
	if err != nil {
		return err
	}
	if err := ev.Validate(); err != nil {
		return proto.Errorf(proto.CodeBadRequest, "bad event: %v", err)
	}
	if !deliverAt.IsZero() {
		return a.acceptDelayed(w, r, id, ev, deliverAt)
	}
	wait := queryGet(r.URL.RawQuery, "wait")
	ev.ID = "" // only the queue names events
	switch wait {
	case "false", "0":
		if a.Queue == nil {
			err := a.calls().DispatchEventNoWait(id, ev)
			a.Metrics.observe(time.Now(), false, err)
			if err != nil {
				return err
			}
			writeJSON(w, http.StatusAccepted, map[string]bool{"accepted": true})
			return nil
		}
		if a.Quarantine != nil {
			if err := a.Quarantine.Check(id); err != nil {
				a.Metrics.observe(time.Now(), false, err)
				return err
			}
		}
		eid, err := a.Queue.Accept(r.Context(), id, ev, time.Time{})
		a.Metrics.observe(time.Now(), false, err)
		if err != nil {
			return err
		}
		writeAccepted(w, eid)
		return nil
	case "", "true", "1":
	default:
		return proto.Errorf(proto.CodeBadRequest, "bad wait parameter %q: want true or false", wait)
	}
	ctx, cancel := a.callCtx(r)
	defer cancel()
	start := time.Now()
	v, err := a.calls().DispatchEvent(ctx, id, ev)
	a.Metrics.observe(start, true, err)
	if err != nil {
		return err
	}
	writeResult(w, v)
	return nil
}

// writeAccepted answers 202 {"accepted":true,"id":"N"}: the event is
// committed to the queue under id N (the event.id its template sees).
func writeAccepted(w http.ResponseWriter, id string) {
	b := make([]byte, 0, 48)
	b = append(b, `{"accepted":true,"id":"`...)
	b = append(b, id...)
	b = append(b, "\"}\n"...)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_, _ = w.Write(b)
}

// writeResult answers 200 {"result":v}, as writeJSON would, without
// reflection: v is JSON already.
func writeResult(w http.ResponseWriter, v proto.Value) {
	if len(v) == 0 {
		v = proto.Value("null")
	}
	b := make([]byte, 0, len(v)+12)
	b = append(b, `{"result":`...)
	b = append(b, v...)
	b = append(b, "}\n"...)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

type scriptBody struct {
	Name  string       `json:"name"`
	Code  *string      `json:"code"`
	Event *proto.Event `json:"event"`
}

func (a *API) runScript(w http.ResponseWriter, r *http.Request) error {
	id, err := tenant(r)
	if err != nil {
		return err
	}
	var body scriptBody
	if err := decode(r, &body); err != nil {
		return err
	}
	if body.Code == nil {
		return proto.Errorf(proto.CodeBadRequest, "missing \"code\"")
	}
	if body.Name == "" {
		body.Name = "script"
	}
	if !templateName.MatchString(body.Name) {
		return proto.Errorf(proto.CodeBadRequest, "bad script name %q", body.Name)
	}
	ev := proto.Event{Name: "RunScript"}
	if body.Event != nil {
		ev = *body.Event
		if err := ev.Validate(); err != nil {
			return proto.Errorf(proto.CodeBadRequest, "bad event: %v", err)
		}
	}
	ctx, cancel := a.callCtx(r)
	defer cancel()
	start := time.Now()
	v, err := a.calls().RunScript(ctx, id, body.Name, *body.Code, ev)
	a.Metrics.observe(start, true, err)
	if err != nil {
		return err
	}
	writeResult(w, v)
	return nil
}

func (a *API) dropTenant(w http.ResponseWriter, r *http.Request) error {
	id, err := tenant(r)
	if err != nil {
		return err
	}
	ctx, cancel := a.callCtx(r)
	defer cancel()
	if err := a.Workers.DropTenant(ctx, id); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *API) listKV(w http.ResponseWriter, r *http.Request) error {
	id, err := tenant(r)
	if err != nil {
		return err
	}
	items, err := a.Store.KvFind(r.Context(), id, r.URL.Query().Get("prefix"))
	if err != nil {
		return err
	}
	if items == nil {
		items = []proto.KVItem{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": items})
	return nil
}

func (a *API) listWorkers(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]any{"workers": a.workerStatus()})
	return nil
}

func (a *API) readyz(w http.ResponseWriter, r *http.Request) {
	var problems []string
	for _, s := range a.Workers.Status() {
		if s.State != "running" && s.State != "ready" {
			problems = append(problems, fmt.Sprintf("worker %d is %s", s.ID, s.State))
		}
	}
	if a.Ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := a.Ready(ctx); err != nil {
			problems = append(problems, "store: "+proto.AsError(err).Message)
		}
	}
	if a.Cluster != nil {
		if err := a.Cluster.Check(); err != nil {
			problems = append(problems, "cluster: "+err.Error())
		}
	}
	if len(problems) > 0 {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "problems": problems})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ready": true})
}

// calls is the pool as seen through the quarantine.
func (a *API) calls() WorkerLike {
	a.guardOnce.Do(func() {
		a.guarded = a.Workers
		if a.Quarantine != nil {
			a.guarded = guarded{WorkerLike: a.Workers, q: a.Quarantine}
		}
	})
	return a.guarded
}

func (a *API) listQuarantine(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]any{"quarantined": a.Quarantine.List()})
	return nil
}

func (a *API) liftQuarantine(w http.ResponseWriter, r *http.Request) error {
	id, err := tenant(r)
	if err != nil {
		return err
	}
	lifted, err := a.Quarantine.Lift(r.Context(), id)
	if err != nil {
		return err
	}
	if !lifted {
		return proto.Errorf(proto.CodeNotFound, "tenant %s is not quarantined", id)
	}
	a.Log.Info().Str("tenant", id.String()).Msg("quarantine lifted by an operator")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *API) restartWorkers(w http.ResponseWriter, r *http.Request) error {
	if a.RollingRestart == nil {
		return proto.Errorf(proto.CodeConflict, "rolling restart needs process workers (--process-workers)")
	}
	// A rolling restart takes as long as the workers take to drain: not
	// bounded by the server's write timeout.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
	start := time.Now()
	if err := a.RollingRestart(r.Context()); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"restarted": true, "seconds": time.Since(start).Seconds()})
	return nil
}
