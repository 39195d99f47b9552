package worker

import (
	"container/list"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	lua "github.com/Shopify/go-lua"
	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/internal/tenantlog"
	"github.com/templateworker/templateworker/proto"
)

// Manager owns the tenants of one worker: their template lists, their VMs,
// and the dispatch semantics. It is safe for concurrent use by calls of
// different tenants: its maps are guarded by a lock, a VM runs outside it,
// and a tenant with a call running (busy) is never evicted or closed under
// it. The calls of one tenant must not run concurrently (the worker's
// scheduler runs them one at a time): a tenant's VM has one owner.
type Manager struct {
	id, total int
	mu        sync.Mutex // guards tenants, lru and the tenants' fields but vm's state
	store     Store
	limits    Limits
	log       zerolog.Logger
	lines     *tenantlog.Limiter // the lines about a tenant's aborted calls
	tenants   map[proto.Id]*tenant
	// pool bounds the sum of the VMs' memory (Limits.MaxWorkerMemory); nil
	// when unlimited. A VM is entered into it (lua.EnterPool) while it runs,
	// so that concurrent members never measure each other.
	pool  *lua.MemoryPool
	cache CacheOptions
	lru   *list.List // of *tenant, most recently used first
	stats CacheStats
	// now is the clock of the tenants' idle times; nil: time.Now, and a
	// call's own reading of it serves (a test sets a fake one).
	now func() time.Time

	// stop, when set, ends the running call of every VM at its next count
	// hook (the worker abandoned them: see Thread).
	stop *atomic.Bool
	// wedge and released are the watchdog's test hook (see
	// Options.TestWedgeFunction).
	wedge    string
	released <-chan struct{}
}

// tenant is the cached state of one tenant on this worker.
type tenant struct {
	id        proto.Id
	templates []proto.Template // ordered by name
	events    map[string][]int // event name → indexes into templates
	vm        *VM              // nil until an event needs it
	elem      *list.Element    // in Manager.lru
	lastUsed  time.Time
	busy      int      // calls running; a busy tenant is never evicted
	names     [][]byte // the templates' names as JSON strings, built once
	// logs is what the tenant logged over time (its VMs share it).
	logs logBucket
	// dropped is set when the tenant was dropped or evicted while busy:
	// its VM is closed when its call ends.
	dropped bool
	// slow is set once a dispatch of the tenant ran longer than inlineMax
	// (its templates' run, not the VM's creation) and did the work of a
	// long run (inlineSlowSteps): its calls no longer run on a reading
	// goroutine (Thread.TryDispatchEvent) until it is reloaded, so a
	// tenant's long calls hold up a worker's reading for the hand-off's
	// millisecond once per load at most.
	slow bool
}

// quoted returns template i's name as a JSON string.
func (t *tenant) quoted(i int) []byte {
	if t.names == nil {
		t.names = make([][]byte, len(t.templates))
	}
	if t.names[i] == nil {
		t.names[i], _ = json.Marshal(t.templates[i].Name)
	}
	return t.names[i]
}

// NewManager returns the manager of worker id among total workers.
func NewManager(id, total int, store Store, limits Limits, log zerolog.Logger) *Manager {
	m := &Manager{
		id: id, total: total, store: store, limits: limits, log: log,
		tenants: make(map[proto.Id]*tenant),
		lines:   tenantlog.New(tenantlog.DefaultPerSecond, tenantlog.DefaultBurst),
		cache:   CacheOptions{}.withDefaults(),
		lru:     list.New(),
	}
	if limits.MaxWorkerMemory > 0 {
		m.pool = lua.NewMemoryPool(limits.MaxWorkerMemory)
	}
	return m
}

// MemoryUsed returns the worker's VMs' memory as last measured (the sum the
// worker-wide ceiling applies to); 0 without a ceiling.
func (m *Manager) MemoryUsed() int64 {
	if m.pool == nil {
		return 0
	}
	return m.pool.Used()
}

// SetCache sets the bounds of the tenant cache (see CacheOptions). Call
// it before the first dispatch.
func (m *Manager) SetCache(c CacheOptions) { m.cache = c.withDefaults() }

// Loaded returns the number of tenants whose VM is built.
func (m *Manager) Loaded() int { return int(m.stats.vms.Load()) }

// acquire returns the tenant's cached state, loading its templates once
// (outside the lock: the store's wait is not the other tenants'), and
// marks it busy; release ends that.
func (m *Manager) acquire(ctx context.Context, id proto.Id) (*tenant, error) {
	t, _, err := m.acquireCached(ctx, id, time.Time{})
	return t, err
}

// acquireCached is acquire for a call that began at at (zero: now); it
// also reports whether the tenant was cached (no wait for the store).
func (m *Manager) acquireCached(ctx context.Context, id proto.Id, at time.Time) (*tenant, bool, error) {
	m.mu.Lock()
	if t, ok := m.tenants[id]; ok {
		m.touch(t, at)
		t.busy++
		m.mu.Unlock()
		return t, true, nil
	}
	m.mu.Unlock()
	tpls, err := m.store.Templates(ctx, id)
	if err != nil {
		e := proto.AsError(err)
		if e.Code == proto.CodeInternal {
			e = proto.Errorf(proto.CodeStoreUnavailable, "load templates of %s: %v", id, err)
		}
		return nil, false, e
	}
	sort.Slice(tpls, func(i, j int) bool { return tpls[i].Name < tpls[j].Name })
	t := &tenant{id: id, templates: tpls, events: make(map[string][]int)}
	for i, tp := range tpls {
		for _, ev := range tp.Events {
			if idx := t.events[ev]; len(idx) == 0 || idx[len(idx)-1] != i {
				t.events[ev] = append(idx, i)
			}
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if old, ok := m.tenants[id]; ok {
		t = old // loaded meanwhile by a call that is not this tenant's event (a script)
	} else {
		m.makeRoom()
		m.tenants[id] = t
	}
	m.touch(t, time.Time{}) // at was before the store's wait
	t.busy++
	return t, false, nil
}

// release ends acquire: it discards a VM that an aborted call left
// untrusted, or that was dropped while the call ran.
func (m *Manager) release(t *tenant) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t.busy--
	switch {
	case t.vm != nil && t.vm.broken:
		m.lines.Event(&m.log, zerolog.WarnLevel, t.id).Msg("discarding tenant VM after an aborted call")
		m.setVM(t, nil)
	case t.dropped && t.busy == 0:
		m.setVM(t, nil)
	}
}

// inlineMax is the longest run after which a tenant's calls no longer run
// on a reading goroutine, if the run did inlineSlowSteps of work.
const inlineMax = time.Millisecond

// inlineSlowSteps is the least work (instructions and the host functions'
// charges) of a run that makes its tenant slow when it took longer than
// inlineMax. A quick run that took that long did not hold up the reading
// with its own work: its thread was descheduled (a busy host), the
// collector stopped it, or it waited in a store call (which reads the
// connection meanwhile). Without this floor one such run on a loaded host
// sent a tenant's quick calls off the reading goroutine for the rest of
// its load, with a goroutine hand-off each way per call. 10,000 steps of
// plain Lua take 0.1-0.4 ms here (a tenth to a half of inlineMax; more
// where instructions allocate), so a run that holds up the reading for
// inlineMax by its own work is over it on any host, and a run of a few
// hundred steps (a typical template) never is.
const inlineSlowSteps = 10 * hookEvery

// noteRun records that tenant t's dispatch, which began at start, has
// ended; vm's shared budget holds the work its templates did.
func (m *Manager) noteRun(t *tenant, vm *VM, start time.Time) {
	if vm.shared.steps >= inlineSlowSteps && time.Since(start) > inlineMax {
		m.mu.Lock()
		t.slow = true
		m.mu.Unlock()
	}
}

// inlineOK reports whether tenant id's next call may run on a process
// worker's reading goroutine (Thread.TryDispatchEvent): it is loaded, its
// VM is built (a cold start, templates fetched and compiled, never runs
// there) and none of its runs since it was loaded was slow. A call that
// runs long there anyway hands the reading to another goroutine after a
// millisecond (mesophyll.InlineHandoff).
func (m *Manager) inlineOK(id proto.Id) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.tenants[id]
	return ok && t.vm != nil && !t.slow
}

// vm returns the tenant's VM, building it if needed; t is busy, so
// nothing else touches its VM meanwhile.
func (m *Manager) vm(id proto.Id, t *tenant) (*VM, error) {
	if t.vm != nil && !t.vm.broken {
		return t.vm, nil
	}
	vm, err := newVM(id, m.store, m.limits, m.log)
	if err != nil {
		return nil, err
	}
	vm.stop = m.stop
	vm.logs, vm.logNow = &t.logs, m.clock
	if m.wedge != "" {
		installWedge(vm.l, m.wedge, m.released)
	}
	if m.pool != nil {
		vm.setLimits(m.pool)
	}
	m.mu.Lock()
	m.setVM(t, vm)
	m.mu.Unlock()
	return vm, nil
}

// enter and exit bracket a run of vm (lua.EnterPool).
func (m *Manager) enter(vm *VM) {
	if m.pool != nil {
		lua.EnterPool(vm.l)
	}
}

func (m *Manager) exit(vm *VM) {
	if m.pool != nil {
		lua.ExitPool(vm.l)
	}
}

// Dispatch runs every template of the tenant subscribed to ev, in name
// order, and returns {"<template>": <first result>, ...}. An event nobody
// subscribes to returns null without running Lua or building a VM. If a
// template fails the others still run and the call fails with
// script_error carrying the successful results.
func (m *Manager) Dispatch(ctx context.Context, id proto.Id, ev proto.Event) (proto.Value, error) {
	return m.dispatchAt(ctx, id, ev, time.Time{})
}

// dispatchAt is Dispatch of a call that began at at (zero: now), as the
// worker's progress record has it. The tenant is marked used at at, and
// the call's shared budget starts at at when the tenant was cached with
// its VM built, so that nothing but a lookup lies between (two clock
// readings fewer); a call that waited for the store or built a VM starts
// it afterwards, as Dispatch does.
func (m *Manager) dispatchAt(ctx context.Context, id proto.Id, ev proto.Event, at time.Time) (proto.Value, error) {
	if err := ev.Validate(); err != nil {
		return nil, proto.Errorf(proto.CodeBadRequest, "%v", err)
	}
	t, cached, err := m.acquireCached(ctx, id, at)
	if err != nil {
		return nil, err
	}
	defer m.release(t)
	subs := t.events[ev.Name]
	if len(subs) == 0 {
		return proto.Null, nil
	}
	built := t.vm != nil && !t.vm.broken
	vm, err := m.vm(id, t)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, 64)
	out = append(out, '{')
	var failures failureList
	var hostErr *proto.Error
	m.enter(vm)
	defer m.exit(vm)
	start := at
	if start.IsZero() || !cached || !built {
		start = time.Now()
	}
	vm.shareBudget(start) // the templates of one dispatch share one call's limits
	defer vm.unshareBudget()
	defer m.noteRun(t, vm, start) // before unshareBudget: it reads the steps
	for n, i := range subs {
		tp := &t.templates[i]
		res, err := vm.runTemplate(ctx, tp, ev)
		if err != nil {
			var pe *proto.Error
			if errors.As(err, &pe) && pe.Code != proto.CodeScriptError && pe.Code != proto.CodeCompileError {
				// A limit ends the whole call (the VM is discarded); an
				// infrastructure failure (the store) is reported with its
				// own code once the other templates have run.
				if isLimit(pe.Code) {
					hostErr = pe
					break
				}
				if hostErr == nil {
					hostErr = pe
				}
			}
			failures.add(fmt.Sprintf("template %q: %v", tp.Name, messageOf(err)))
			res = proto.Null
		}
		if n > 0 {
			out = append(out, ',')
		}
		out = append(out, t.quoted(i)...)
		out = append(out, ':')
		out = append(out, res...)
	}
	out = append(out, '}')
	if hostErr != nil {
		return nil, hostErr
	}
	if max := m.limits.MaxResult; max > 0 && len(out) > max {
		return nil, proto.Errorf(proto.CodeResultTooLarge, "the results of the %d templates are %d bytes together, over the %d-byte limit (--max-result)", len(subs), len(out), max)
	}
	if failures.failed() {
		return nil, &proto.Error{Code: proto.CodeScriptError, Message: failures.String(), Results: out}
	}
	return out, nil
}

// maxFailureText bounds the joined messages of a dispatch's failed
// templates: a tenant with thousands of failing templates gets a message
// of bounded size.
const maxFailureText = 16 << 10

// failureList collects the messages of a dispatch's failed templates, up
// to maxFailureText bytes; past it, it counts them.
type failureList struct {
	msgs       []string
	size, more int
}

func (f *failureList) add(msg string) {
	if f.more > 0 || f.size+len(msg) > maxFailureText {
		f.more++
		return
	}
	f.msgs = append(f.msgs, msg)
	f.size += len(msg) + 2
}

func (f *failureList) failed() bool { return len(f.msgs) > 0 || f.more > 0 }

func (f *failureList) String() string {
	s := strings.Join(f.msgs, "; ")
	if f.more > 0 {
		s += fmt.Sprintf("; ... and %d more", f.more)
	}
	return s
}

func isLimit(code string) bool {
	switch code {
	case proto.CodeCPULimit, proto.CodeTimeout, proto.CodeMemoryLimit, proto.CodeStackOverflow:
		return true
	}
	return false
}

func messageOf(err error) string {
	var pe *proto.Error
	if errors.As(err, &pe) {
		return pe.Message
	}
	return err.Error()
}

// RunScript compiles and runs ad-hoc code in the tenant's VM with the same
// (event, ctx) arguments and returns its first result. The tenant need not
// have templates.
func (m *Manager) RunScript(ctx context.Context, id proto.Id, name, code string, ev proto.Event) (proto.Value, error) {
	if name == "" {
		name = "script"
	}
	t, err := m.acquire(ctx, id)
	if err != nil {
		return nil, err
	}
	vm, err := m.vm(id, t)
	if err != nil {
		m.release(t)
		return nil, err
	}
	m.enter(vm)
	res, err := vm.runCode(ctx, name, code, ev)
	m.exit(vm)
	m.release(t)
	if err != nil {
		var pe *proto.Error
		if errors.As(err, &pe) {
			return nil, pe
		}
		return nil, proto.Errorf(proto.CodeScriptError, "script %q: %v", name, err)
	}
	return res, nil
}

// Drop discards the tenant's VM and cached templates; the next call
// rebuilds them. A VM whose call is running is closed when the call ends.
func (m *Manager) Drop(id proto.Id) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if t, ok := m.tenants[id]; ok {
		m.forget(t)
	}
}

// DropAll discards every tenant's VM and cached templates (those running
// a call when it ends).
func (m *Manager) DropAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, t := range m.tenants {
		m.forget(t)
	}
}

// StartupTenants lists the tenants this worker owns that subscribe to
// OnStartup.
func (m *Manager) StartupTenants(ctx context.Context) ([]proto.Id, error) {
	return startupTenants(ctx, m.store, m.id, m.total)
}

// startupTenants lists the tenants of worker id of total in st that
// subscribe to OnStartup.
func startupTenants(ctx context.Context, st Store, id, total int) ([]proto.Id, error) {
	ids, err := st.TenantsWithEvent(ctx, OnStartup)
	if err != nil {
		return nil, err
	}
	mine := ids[:0]
	for _, t := range ids {
		if t.WorkerID(total) == id {
			mine = append(mine, t)
		}
	}
	return mine, nil
}

// OnStartup is the event a worker dispatches to its tenants when it starts.
const OnStartup = "OnStartup"

// StartupEvent is the event sent on worker start.
func StartupEvent() proto.Event {
	return proto.Event{Name: OnStartup, Data: proto.Value(`{"reason":"worker_startup"}`)}
}
