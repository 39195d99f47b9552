package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
)

// Manager owns the tenants of one worker: their template lists, their VMs,
// and the dispatch semantics. It is not safe for concurrent use: exactly
// one goroutine (a worker's loop) drives it.
type Manager struct {
	id, total int
	store     Store
	limits    Limits
	log       zerolog.Logger
	tenants   map[proto.Id]*tenant
}

// tenant is the cached state of one tenant on this worker.
type tenant struct {
	templates []proto.Template // ordered by name
	events    map[string][]int // event name → indexes into templates
	vm        *VM              // nil until an event needs it
}

// NewManager returns the manager of worker id among total workers.
func NewManager(id, total int, store Store, limits Limits, log zerolog.Logger) *Manager {
	return &Manager{
		id: id, total: total, store: store, limits: limits, log: log,
		tenants: make(map[proto.Id]*tenant),
	}
}

// Loaded returns the number of tenants whose VM is built.
func (m *Manager) Loaded() int {
	n := 0
	for _, t := range m.tenants {
		if t.vm != nil {
			n++
		}
	}
	return n
}

// state returns the tenant's cached state, loading its templates once.
func (m *Manager) state(ctx context.Context, id proto.Id) (*tenant, error) {
	if t, ok := m.tenants[id]; ok {
		return t, nil
	}
	tpls, err := m.store.Templates(ctx, id)
	if err != nil {
		e := proto.AsError(err)
		if e.Code == proto.CodeInternal {
			e = proto.Errorf(proto.CodeStoreUnavailable, "load templates of %s: %v", id, err)
		}
		return nil, e
	}
	sort.Slice(tpls, func(i, j int) bool { return tpls[i].Name < tpls[j].Name })
	t := &tenant{templates: tpls, events: make(map[string][]int)}
	for i, tp := range tpls {
		for _, ev := range tp.Events {
			if idx := t.events[ev]; len(idx) == 0 || idx[len(idx)-1] != i {
				t.events[ev] = append(idx, i)
			}
		}
	}
	m.tenants[id] = t
	return t, nil
}

// vm returns the tenant's VM, building it if needed.
func (m *Manager) vm(id proto.Id, t *tenant) (*VM, error) {
	if t.vm != nil && !t.vm.broken {
		return t.vm, nil
	}
	if t.vm != nil {
		t.vm.close()
	}
	vm, err := newVM(id, m.store, m.limits, m.log)
	if err != nil {
		return nil, err
	}
	t.vm = vm
	return vm, nil
}

// Dispatch runs every template of the tenant subscribed to ev, in name
// order, and returns {"<template>": <first result>, ...}. An event nobody
// subscribes to returns null without running Lua or building a VM. If a
// template fails the others still run and the call fails with
// script_error carrying the successful results.
func (m *Manager) Dispatch(ctx context.Context, id proto.Id, ev proto.Event) (proto.Value, error) {
	if err := ev.Validate(); err != nil {
		return nil, proto.Errorf(proto.CodeBadRequest, "%v", err)
	}
	t, err := m.state(ctx, id)
	if err != nil {
		return nil, err
	}
	subs := t.events[ev.Name]
	if len(subs) == 0 {
		return proto.Null, nil
	}
	vm, err := m.vm(id, t)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, 64)
	out = append(out, '{')
	var failures []string
	var hostErr *proto.Error
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
			failures = append(failures, fmt.Sprintf("template %q: %v", tp.Name, messageOf(err)))
			res = proto.Null
		}
		if n > 0 {
			out = append(out, ',')
		}
		name, _ := json.Marshal(tp.Name)
		out = append(out, name...)
		out = append(out, ':')
		out = append(out, res...)
	}
	out = append(out, '}')
	m.afterCall(id, t)
	if hostErr != nil {
		return nil, hostErr
	}
	if len(failures) > 0 {
		return nil, &proto.Error{Code: proto.CodeScriptError, Message: strings.Join(failures, "; "), Results: out}
	}
	return out, nil
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

// afterCall discards a VM that an aborted call left untrusted.
func (m *Manager) afterCall(id proto.Id, t *tenant) {
	if t.vm != nil && t.vm.broken {
		m.log.Warn().Str("tenant", id.String()).Msg("discarding tenant VM after an aborted call")
		t.vm.close()
		t.vm = nil
	}
}

// RunScript compiles and runs ad-hoc code in the tenant's VM with the same
// (event, ctx) arguments and returns its first result. The tenant need not
// have templates.
func (m *Manager) RunScript(ctx context.Context, id proto.Id, name, code string, ev proto.Event) (proto.Value, error) {
	if name == "" {
		name = "script"
	}
	t, err := m.state(ctx, id)
	if err != nil {
		return nil, err
	}
	vm, err := m.vm(id, t)
	if err != nil {
		return nil, err
	}
	res, err := vm.runCode(ctx, name, code, ev)
	m.afterCall(id, t)
	if err != nil {
		var pe *proto.Error
		if errors.As(err, &pe) {
			return nil, pe
		}
		return nil, proto.Errorf(proto.CodeScriptError, "script %q: %v", name, err)
	}
	return res, nil
}

// Drop discards the tenant's VM and cached templates. The VM is marked
// broken so any holder sees a clear error; the next call rebuilds it.
func (m *Manager) Drop(id proto.Id) {
	if t, ok := m.tenants[id]; ok {
		if t.vm != nil {
			t.vm.close() // broken, and its coroutines ended
		}
		delete(m.tenants, id)
	}
}

// DropAll discards every tenant's VM and cached templates.
func (m *Manager) DropAll() {
	for id := range m.tenants {
		m.Drop(id)
	}
}

// StartupTenants lists the tenants this worker owns that subscribe to
// OnStartup.
func (m *Manager) StartupTenants(ctx context.Context) ([]proto.Id, error) {
	ids, err := m.store.TenantsWithEvent(ctx, OnStartup)
	if err != nil {
		return nil, err
	}
	mine := ids[:0]
	for _, id := range ids {
		if id.WorkerID(m.total) == m.id {
			mine = append(mine, id)
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
