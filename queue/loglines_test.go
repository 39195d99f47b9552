package queue

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/internal/syncbuf"
	"github.com/templateworker/templateworker/internal/tenantlog"
	"github.com/templateworker/templateworker/proto"
)

// TestFailureLinesBoundedPerTenant: a tenant with many poison events gets
// at most a burst of retry and dead-letter lines (the queue's counters and
// the dead-letter table keep every one), while a neighbour's failure is
// still logged.
func TestFailureLinesBoundedPerTenant(t *testing.T) {
	rec := newRecorder()
	rec.fail = func(proto.Id, proto.Event) error { return proto.Errorf(proto.CodeCPULimit, "spun") }
	var sink syncbuf.Buffer
	st := openStore(t, t.TempDir())
	q := openQueue(t, Config{Store: st, Dispatch: rec.dispatch, MaxAttempts: 2, RetryBackoff: time.Millisecond,
		RetryBackoffMax: 2 * time.Millisecond, Log: zerolog.New(&sink)})
	q.lines.Now = func() time.Time { return time.Unix(1000, 0) } // no refill, however slow the test
	ctx := context.Background()
	bad, other := proto.GuildID(1), proto.GuildID(2)
	const events = 30
	for range events {
		if _, err := q.Accept(ctx, bad, ev("Poison"), time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := q.Accept(ctx, other, ev("Poison"), time.Time{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every event dead-lettered", func() bool { return q.Stats().DeadLettered == events+1 })
	if s := q.Stats(); s.Retried != events+1 {
		t.Fatalf("stats = %+v, want every event retried once", s)
	}
	var badLines, otherLines int
	for _, line := range strings.Split(sink.String(), "\n") {
		if !strings.Contains(line, "retrying after a backoff") && !strings.Contains(line, "dead-lettered after its last attempt") {
			continue
		}
		switch {
		case strings.Contains(line, `"tenant":"`+bad.String()+`"`):
			badLines++
		case strings.Contains(line, `"tenant":"`+other.String()+`"`):
			otherLines++
		}
	}
	if badLines != tenantlog.DefaultBurst || otherLines != 2 {
		t.Fatalf("%d lines for %d failed deliveries of one tenant (want %d), %d for its neighbour's 2 (want 2)",
			badLines, 2*events, tenantlog.DefaultBurst, otherLines)
	}
}
