package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/store"
)

// BenchmarkCommitEventsSQLite is one group commit of the event queue in
// steady state: n accepted events (of 64 tenants) and the deletion of the
// n delivered before them, per commit; it reports the cost per event.
func BenchmarkCommitEventsSQLite(b *testing.B) {
	for _, n := range []int{1, 10, 13, 32, 100} {
		b.Run(fmt.Sprintf("events=%d", n), func(b *testing.B) {
			s := openSQLite(b, store.DefaultQuota)
			ctx := context.Background()
			ev := proto.Event{Name: "Ping", Data: proto.Value(`{"who":"ops"}`)}
			var prev []int64
			k := 0
			for b.Loop() {
				batch := store.EventBatch{Done: prev}
				now := time.Now()
				for range n {
					batch.Add = append(batch.Add, store.EventRecord{Tenant: proto.GuildID(uint64(k%64 + 1)), Event: ev, AcceptedAt: now, DeliverAt: now})
					k++
				}
				seqs, err := s.CommitEvents(ctx, batch)
				if err != nil || len(seqs) != n {
					b.Fatal(len(seqs), err)
				}
				prev = seqs
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/event")
			// Measured what the name says: each commit deleted the
			// events of the one before, so only the last n are left.
			left, err := s.EventBacklog(ctx)
			if err != nil {
				b.Fatal(err)
			}
			total := 0
			for _, t := range left {
				total += t.Count
			}
			if total != n {
				b.Fatalf("after the commits the store holds %d events, want %d", total, n)
			}
		})
	}
}
