package mesophyll

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/templateworker/templateworker/proto"
)

// fakeEvents are the fake backend's scheduled events, by tenant.
type fakeEvents struct {
	mu     sync.Mutex
	next   int
	events map[proto.Id][]proto.ScheduledEvent
	worker map[string]int // the worker that scheduled each id
}

var backendEvents sync.Map // *fakeBackend → *fakeEvents

func (b *fakeBackend) events() *fakeEvents {
	v, _ := backendEvents.LoadOrStore(b, &fakeEvents{events: map[proto.Id][]proto.ScheduledEvent{}, worker: map[string]int{}})
	return v.(*fakeEvents)
}

func (b *fakeBackend) ScheduleEvent(ctx context.Context, workerID int, tenant proto.Id, at time.Time, ev proto.Event) (string, error) {
	e := b.events()
	e.mu.Lock()
	defer e.mu.Unlock()
	if ev.Name == "full" {
		return "", &proto.Error{Code: proto.CodeBacklogFull, Message: "tenant has 1 pending events", RetryAfter: 1}
	}
	e.next++
	id := strconv.Itoa(e.next)
	e.events[tenant] = append(e.events[tenant], proto.ScheduledEvent{ID: id, Event: ev, DeliverAt: at})
	e.worker[id] = workerID
	return id, nil
}

func (b *fakeBackend) CancelEvent(ctx context.Context, workerID int, tenant proto.Id, id string) (bool, error) {
	e := b.events()
	e.mu.Lock()
	defer e.mu.Unlock()
	list := e.events[tenant]
	for i := range list {
		if list[i].ID == id {
			e.events[tenant] = append(list[:i], list[i+1:]...)
			return true, nil
		}
	}
	return false, nil
}

func (b *fakeBackend) ScheduledEvents(ctx context.Context, workerID int, tenant proto.Id) ([]proto.ScheduledEvent, error) {
	e := b.events()
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]proto.ScheduledEvent(nil), e.events[tenant]...), nil
}

// TestScheduleEventRoundTrips: the ctx.events store calls reach the
// backend with the worker's id and come back with ids, booleans, lists
// and the backend's error codes.
func TestScheduleEventRoundTrips(t *testing.T) {
	h := newHarness(t, ServerOptions{})
	c, _, _ := h.worker(1, newFakeHandler())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	g := proto.GuildID(42)

	list, err := c.ScheduledEvents(ctx, g)
	if err != nil || list == nil || len(list) != 0 {
		t.Fatalf("empty list: %#v, %v", list, err)
	}
	at := time.Date(2027, 1, 2, 3, 4, 5, 600, time.UTC)
	id, err := c.ScheduleEvent(ctx, g, at, proto.Event{Name: "Remind", Data: proto.Value(`{"what":"tea"}`)})
	if err != nil || id != "1" {
		t.Fatalf("ScheduleEvent: %q, %v", id, err)
	}
	if w := h.backend.events().worker[id]; w != 1 {
		t.Fatalf("scheduled for worker %d, want 1", w)
	}
	list, err = c.ScheduledEvents(ctx, g)
	if err != nil || len(list) != 1 || list[0].ID != "1" || list[0].Event.Name != "Remind" ||
		string(list[0].Event.Data) != `{"what":"tea"}` || !list[0].DeliverAt.Equal(at) {
		t.Fatalf("list: %+v, %v", list, err)
	}
	if ok, err := c.CancelEvent(ctx, g, "1"); err != nil || !ok {
		t.Fatalf("cancel: %v, %v", ok, err)
	}
	if ok, err := c.CancelEvent(ctx, g, "1"); err != nil || ok {
		t.Fatalf("second cancel: %v, %v", ok, err)
	}
	_, err = c.ScheduleEvent(ctx, g, at, proto.Event{Name: "full"})
	wantCode(t, err, proto.CodeBacklogFull)
}
