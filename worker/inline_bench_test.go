package worker

import (
	"context"
	"runtime"
	"testing"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
)

// BenchmarkTryDispatchEvent is the worker's own part of a process
// dispatch, without the connection: Thread.TryDispatchEvent of an idle
// worker (the inline path Mesophyll's Client takes) for a template that
// returns nil and for the 100-iteration loop.
func BenchmarkTryDispatchEvent(b *testing.B) {
	for _, tc := range []struct{ name, code string }{
		{"empty", `return nil`},
		{"loop", `local s = 0 for i = 1, 100 do s = s + i end return s`},
	} {
		b.Run(tc.name, func(b *testing.B) {
			st := newMemStore()
			id := proto.GuildID(1 << 22)
			st.put(id, "loop", tc.code, "Ping")
			w, err := New(0, 1, Options{Store: st, Logger: zerolog.Nop(), NoStartup: true})
			if err != nil {
				b.Fatal(err)
			}
			defer w.Kill(context.Background())
			ctx := context.Background()
			ev := proto.Event{Name: "Ping", Data: proto.Value(`{}`)}
			// A cold tenant's first call never runs inline, nor the calls
			// of a tenant one of whose runs took over a millisecond (on a
			// busy machine a descheduled run can): warm it afresh, and
			// wait for its slot to be free again.
			warm := func() {
				_ = w.DropTenant(ctx, id)
				if _, err := w.DispatchEvent(ctx, id, ev); err != nil {
					b.Fatal(err)
				}
				for w.Queued() != 0 || len(w.Running()) != 0 {
					runtime.Gosched()
				}
			}
			warm()
			if _, ran, err := w.TryDispatchEvent(ctx, id, ev); !ran || err != nil {
				b.Fatalf("first inline dispatch: ran %v, %v", ran, err)
			}
			b.ReportAllocs()
			rewarmed := 0
			for i := 0; i < b.N; i++ {
				for { // each timed iteration is one call run inline
					_, ran, err := w.TryDispatchEvent(ctx, id, ev)
					if err != nil {
						b.Fatal(err)
					}
					if ran {
						break
					}
					b.StopTimer()
					if rewarmed++; rewarmed > 10*b.N+100 {
						b.Fatalf("%d re-warms for %d calls: the calls do not run inline", rewarmed, b.N)
					}
					warm()
					b.StartTimer()
				}
			}
			b.ReportMetric(float64(rewarmed), "rewarmed")
		})
	}
}
