package queue

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/templateworker/templateworker/proto"
)

// A cancelled event gives back its bytes as well as its count: a tenant
// that keeps one event pending and schedules and cancels large ones (a
// reminder template) is not refused with backlog_full for bytes it no
// longer holds.
func TestCancelGivesBackBytes(t *testing.T) {
	const share = 64 << 10
	q := openQueue(t, Config{Store: openStore(t, t.TempDir()), Dispatch: newRecorder().dispatch,
		BacklogTenantBytes: share, BacklogBytesFlag: "--test-bytes"})
	ctx := context.Background()
	id := proto.GuildID(1)
	later := time.Now().Add(time.Hour)
	if _, err := q.Schedule(ctx, id, later, ev("Keep")); err != nil {
		t.Fatal(err)
	}
	big := proto.Event{Name: "Big", Data: proto.Value(`"` + strings.Repeat("x", 20<<10) + `"`)}
	for i := 0; i < 20; i++ {
		eid, err := q.Schedule(ctx, id, later, big)
		if err != nil {
			t.Fatalf("schedule %d (each cancelled before the next): %v", i, err)
		}
		if ok, err := q.Cancel(ctx, id, eid); !ok || err != nil {
			t.Fatalf("cancel %d: %v %v", i, ok, err)
		}
	}
}
