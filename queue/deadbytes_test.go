package queue

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/templateworker/templateworker/proto"
)

// A tenant whose large events keep failing cannot pile up dead letters
// past its byte share (BacklogTenantBytes, the bytes its pending events
// may hold): its oldest dead letters beyond that share are deleted as the
// next one moves in, as they are beyond DeadLetterKeep, so the disk it
// takes and GET /v1/dead-letters?tenant= stay bounded by bytes as well as
// by count. The newest one is always kept; a neighbour's are untouched.
func TestDeadLettersBoundedByTenantBytes(t *testing.T) {
	rec := newRecorder()
	rec.fail = failPoison
	const share = 64 << 10
	q := openQueue(t, Config{Store: openStore(t, t.TempDir()), Dispatch: rec.dispatch, MaxAttempts: 1,
		BacklogTenantBytes: share, BacklogBytesFlag: "--test-bytes"})
	ctx := context.Background()
	bad, other := proto.GuildID(1), proto.GuildID(2)
	big := proto.Event{Name: "Poison", Data: proto.Value(`"` + strings.Repeat("x", 15<<10) + `"`)}
	if _, err := q.Accept(ctx, other, ev("Poison"), time.Time{}); err != nil {
		t.Fatal(err)
	}
	var last string
	for i := 0; i < 20; i++ {
		id, err := q.Accept(ctx, bad, big, time.Time{})
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		last = id
		waitFor(t, "the event dead-lettered", func() bool { return q.PendingCount(bad) == 0 })
	}
	dl, _, err := q.DeadLetters(ctx, &bad, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range dl {
		n += eventBytes(e.Event)
	}
	if n > share || len(dl) == 0 || dl[len(dl)-1].ID != last {
		t.Fatalf("the tenant keeps %d dead letters of %d bytes (the newest %s), want at most its %d-byte share, the newest (%s) among them",
			len(dl), n, dl[len(dl)-1].ID, share, last)
	}
	if dl, _, err := q.DeadLetters(ctx, &other, "", 0); err != nil || len(dl) != 1 {
		t.Fatalf("the neighbour's dead letters: %d, %v; want its one", len(dl), err)
	}
	// One event that takes the whole share leaves only itself.
	whole := proto.Event{Name: "Poison", Data: proto.Value(`"` + strings.Repeat("y", share-64) + `"`)}
	id, err := q.Accept(ctx, bad, whole, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the whole-share event dead-lettered", func() bool { return q.PendingCount(bad) == 0 })
	if dl, _, err := q.DeadLetters(ctx, &bad, "", 0); err != nil || len(dl) != 1 || dl[0].ID != id {
		t.Fatalf("after a dead letter of the whole share: %d dead letters, %v; want only it (%s)", len(dl), err, id)
	}
}

// Every tenant's dead letters together are not bounded by any one
// tenant's share: a page of them is bounded by DeadLetterPageBytes
// instead, says that more follow, and paging from its last id lists each
// dead letter once.
func TestDeadLetterPagesBoundedByBytes(t *testing.T) {
	rec := newRecorder()
	rec.fail = failPoison
	q := openQueue(t, Config{Store: openStore(t, t.TempDir()), Dispatch: rec.dispatch, MaxAttempts: 1})
	ctx := context.Background()
	const tenants, size = 20, 900 << 10 // 18 MiB in all
	for i := range tenants {
		g := proto.GuildID(uint64(i+1) << 22)
		big := proto.Event{Name: "Poison", Data: proto.Value(`"` + strings.Repeat("x", size) + `"`)}
		if _, err := q.Accept(ctx, g, big, time.Time{}); err != nil {
			t.Fatalf("tenant %d: %v", i, err)
		}
		waitFor(t, "the event dead-lettered", func() bool { return q.PendingCount(g) == 0 })
	}
	seen := map[string]bool{}
	after, pages := "", 0
	for {
		dl, more, err := q.DeadLetters(ctx, nil, after, 0)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		var n int64
		for _, e := range dl {
			n += eventBytes(e.Event)
			if seen[e.ID] {
				t.Fatalf("dead letter %s listed twice", e.ID)
			}
			seen[e.ID] = true
		}
		if n > DeadLetterPageBytes || len(dl) == 0 {
			t.Fatalf("page %d: %d dead letters of %d bytes, want 1 or more within %d", pages, len(dl), n, DeadLetterPageBytes)
		}
		if !more {
			break
		}
		after = dl[len(dl)-1].ID
	}
	if len(seen) != tenants || pages < 2 {
		t.Fatalf("%d dead letters in %d pages, want all %d in 2 or more", len(seen), pages, tenants)
	}
}
