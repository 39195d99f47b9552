package worker

import (
	"context"
	"errors"
	"math"
	"strconv"
	"time"

	lua "github.com/Shopify/go-lua"

	"github.com/templateworker/templateworker/proto"
)

// EventStore is what ctx.events needs from the master: its durable queue
// of scheduled events. In process mode the Mesophyll client proxies it; in
// the thread topology the master implements it over its queue.
type EventStore interface {
	// ScheduleEvent stores ev for tenant, due at at, and returns its id.
	// Past the tenant's backlog bound it fails with backlog_full.
	ScheduleEvent(ctx context.Context, tenant proto.Id, at time.Time, ev proto.Event) (string, error)
	// CancelEvent cancels the tenant's pending scheduled event id; false
	// when the tenant has no such pending event.
	CancelEvent(ctx context.Context, tenant proto.Id, id string) (bool, error)
	// ScheduledEvents lists the tenant's pending scheduled events in
	// delivery order.
	ScheduledEvents(ctx context.Context, tenant proto.Id) ([]proto.ScheduledEvent, error)
}

// storeCallSteps is what one store call (ctx.kv.*, ctx.events.*) costs
// the call's instruction budget besides the bytes it carries and its JSON
// work: a round trip to the master, which costs the two processes about
// 90-130 µs of CPU (10,000 ctx.kv.get calls of a missing key, measured on
// 2 busy cores), as much as 2,600-3,700 VM instructions (~35 ns each
// there). The charge also checks the call's deadline.
const storeCallSteps = 2500

// maxEventIDBytes bounds the id ctx.events.cancel takes (queue ids are
// decimal numbers).
const maxEventIDBytes = 64

// openEvents pushes the ctx.events table: schedule, cancel, list.
func (vm *VM) openEvents() {
	lua.NewLibrary(vm.l, []lua.RegistryFunction{
		{Name: "schedule", Function: vm.eventsSchedule},
		{Name: "cancel", Function: vm.eventsCancel},
		{Name: "list", Function: vm.eventsList},
	})
}

// eventsSchedule is ctx.events.schedule(seconds, name, data) → id.
func (vm *VM) eventsSchedule(l *lua.State) int {
	const fn = "ctx.events.schedule"
	vm.charge(l, storeCallSteps)
	if l.TypeOf(1) != lua.TypeNumber {
		vm.raise(l, fn+": seconds must be a number, got "+lua.TypeNameOf(l, 1))
	}
	secs, _ := l.ToNumber(1)
	maxSecs := proto.MaxScheduleAhead.Seconds()
	switch {
	case math.IsNaN(secs):
		vm.raise(l, fn+": seconds must be a number, got NaN")
	case secs < 0:
		vm.raise(l, fn+": seconds must not be negative, got "+strconv.FormatFloat(secs, 'g', -1, 64))
	case secs > maxSecs:
		vm.raise(l, fn+": seconds must be at most "+strconv.FormatFloat(maxSecs, 'f', 0, 64)+
			" (one year), got "+strconv.FormatFloat(secs, 'g', -1, 64))
	}
	if l.TypeOf(2) != lua.TypeString {
		vm.raise(l, fn+": name must be a string, got "+lua.TypeNameOf(l, 2))
	}
	name, _ := l.ToString(2)
	ev := proto.Event{Name: name, Data: proto.Null}
	if err := ev.Validate(); err != nil {
		vm.raise(l, fn+": bad name: "+err.Error())
	}
	if !l.IsNoneOrNil(3) {
		b, err := encodeJSON(l, 3, proto.MaxValueBytes+1, vm.meterFn)
		if err != nil && !errors.Is(err, errTooLong) {
			vm.jsonFailed(l, fn+": data cannot be stored: ", err)
		}
		if errors.Is(err, errTooLong) || len(b) > proto.MaxValueBytes {
			vm.raise(l, fn+": data is larger than "+strconv.Itoa(proto.MaxValueBytes)+" bytes encoded")
		}
		ev.Data = b
	}
	vm.chargeStore(l, len(ev.Name)+len(ev.Data))
	at := time.Now().Add(time.Duration(secs * float64(time.Second)))
	ctx, cancel := vm.storeCtx()
	id, err := vm.store.ScheduleEvent(ctx, vm.tenant, at, ev)
	cancel()
	if err != nil {
		vm.hostFailed(l, fn, err)
	}
	l.PushString(id)
	return 1
}

// eventsCancel is ctx.events.cancel(id) → true if a pending event was
// cancelled, false if the tenant has none with that id.
func (vm *VM) eventsCancel(l *lua.State) int {
	const fn = "ctx.events.cancel"
	vm.charge(l, storeCallSteps)
	if l.TypeOf(1) != lua.TypeString {
		vm.raise(l, fn+": id must be a string (as ctx.events.schedule returned it), got "+lua.TypeNameOf(l, 1))
	}
	id, _ := l.ToString(1)
	if id == "" || len(id) > maxEventIDBytes {
		l.PushBoolean(false) // no event has such an id
		return 1
	}
	ctx, cancel := vm.storeCtx()
	ok, err := vm.store.CancelEvent(ctx, vm.tenant, id)
	cancel()
	if err != nil {
		vm.hostFailed(l, fn, err)
	}
	l.PushBoolean(ok)
	return 1
}

// eventsList is ctx.events.list() → array of {id=, name=, data=,
// deliver_at=<unix seconds>} in delivery order.
func (vm *VM) eventsList(l *lua.State) int {
	const fn = "ctx.events.list"
	vm.charge(l, storeCallSteps)
	ctx, cancel := vm.storeCtx()
	list, err := vm.store.ScheduledEvents(ctx, vm.tenant)
	cancel()
	if err != nil {
		vm.hostFailed(l, fn, err)
	}
	n := 0
	for i := range list {
		n += len(list[i].ID) + len(list[i].Event.Name) + len(list[i].Event.Data)
	}
	vm.chargeStore(l, n)
	l.CreateTable(len(list), 0)
	for i := range list {
		e := &list[i]
		l.CreateTable(0, 4)
		l.PushString(e.ID)
		l.SetField(-2, "id")
		l.PushString(e.Event.Name)
		l.SetField(-2, "name")
		if err := pushJSON(l, e.Event.Data, vm.meterFn); err != nil {
			vm.jsonFailed(l, fn+": stored data is not valid JSON: ", err)
		}
		l.SetField(-2, "data")
		l.PushNumber(float64(e.DeliverAt.UnixMilli()) / 1000)
		l.SetField(-2, "deliver_at")
		l.RawSetInt(-2, i+1)
	}
	return 1
}
