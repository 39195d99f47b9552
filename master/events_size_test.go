package master

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/queue"
	"github.com/templateworker/templateworker/store"
)

// countingEvents counts the reads of pending events from the store.
type countingEvents struct {
	store.Store
	reads atomic.Int64
}

func (c *countingEvents) PendingEvents(ctx context.Context, tenant proto.Id, scheduledOnly bool, limit int) ([]store.EventRecord, error) {
	c.reads.Add(1)
	return c.Store.PendingEvents(ctx, tenant, scheduledOnly, limit)
}

// PendingSize is the store's (the embedded interface does not promote it).
func (c *countingEvents) PendingSize(ctx context.Context, tenant proto.Id, scheduledOnly bool) (int, int64, error) {
	return c.Store.(store.PendingSizer).PendingSize(ctx, tenant, scheduledOnly)
}

// A ctx.events.list whose answer cannot fit in a frame is refused from
// the sizes of the tenant's scheduled events, without reading and decoding
// them (up to its 16 MiB share: ~300 ms of master CPU per refusal, for a
// refusal charged like a frame's worth); one that fits is read as before.
func TestScheduledEventsRefusedWithoutReading(t *testing.T) {
	st := &countingEvents{Store: openTestStore(t)}
	q, err := queue.Open(context.Background(), queue.Config{Store: st,
		Dispatch: func(context.Context, proto.Id, proto.Event) (proto.Value, error) { return proto.Null, nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = q.Close(context.Background()) })
	late := &lateQueue{}
	late.Set(q)
	ev := newWorkerEvents(late, 64<<10)
	ctx := context.Background()
	id := proto.GuildID(1)
	big := proto.Value(`"` + strings.Repeat("x", 30<<10) + `"`)
	for i := 0; i < 3; i++ {
		if _, err := q.Schedule(ctx, id, time.Now().Add(time.Hour), proto.Event{Name: "Big", Data: big}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ev.ScheduledEvents(ctx, id); proto.CodeOf(err) != proto.CodeKVResultTooLarge {
		t.Fatalf("a list of 90 KB for a 64 KiB frame: %v, want kv_result_too_large", err)
	}
	if n := st.reads.Load(); n != 0 {
		t.Fatalf("the refused list read the tenant's pending events %d times, want 0 (refused by their sizes)", n)
	}
	small := proto.GuildID(2)
	if _, err := q.Schedule(ctx, small, time.Now().Add(time.Hour), proto.Event{Name: "Small", Data: proto.Value(`1`)}); err != nil {
		t.Fatal(err)
	}
	if list, err := ev.ScheduledEvents(ctx, small); err != nil || len(list) != 1 || st.reads.Load() != 1 {
		t.Fatalf("a list that fits: %+v %v after %d reads", list, err, st.reads.Load())
	}
}
