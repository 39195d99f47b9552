package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/store"
)

// BenchmarkBulkPutTemplate seeds 10,000 tenants per iteration into SQLite
// with store.BulkPutTemplate (the scale benchmarks' seeding).
func BenchmarkBulkPutTemplate(b *testing.B) {
	st, err := store.Open(context.Background(), store.Config{DataDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	tpl := proto.Template{Name: "t", Code: "return 1", Events: []string{"Ping"}}
	base := 0
	for b.Loop() {
		ids := make([]proto.Id, 10000)
		for i := range ids {
			ids[i] = proto.GuildID(uint64(base+i+1) << 22)
		}
		base += len(ids)
		start := time.Now()
		if err := store.BulkPutTemplate(context.Background(), st, ids, tpl); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(len(ids))/time.Since(start).Seconds(), "tenants/s")
	}
}
