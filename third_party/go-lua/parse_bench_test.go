package lua

import (
	"strings"
	"testing"
	"time"
)

// BenchmarkParseChargeInterval parses issue 14's attack chunk (1.3e6 table
// stores, 15.6 MB) with a Charge callback and MaxMemory 64 MiB (the
// worker's default: the parse ends with the memory error) and reports the longest and the
// mean wall time between two calls of it (gap-max-us, gap-mean-us): how
// long parsing can run before the host may stop it. On a busy machine the
// wall gaps include time the process was not running; cpu-gap-max-us is the
// longest gap in process CPU time. ns/op is one parse.
func BenchmarkParseChargeInterval(b *testing.B) {
	src := strings.Repeat("a.b.c.d.e=1 ", 1_300_000)
	var worst, sum, cpuWorst time.Duration
	calls := 0
	for i := 0; i < b.N; i++ {
		l := NewState()
		last, lastCPU := time.Now(), processCPU()
		SetLimits(l, Limits{MaxMemory: 64 << 20, Charge: func(*State, int) {
			now, nowCPU := time.Now(), processCPU()
			if c := nowCPU - lastCPU; c > cpuWorst {
				cpuWorst = c
			}
			lastCPU = nowCPU
			d := now.Sub(last)
			if d > worst {
				worst = d
			}
			sum, calls, last = sum+d, calls+1, now
		}})
		if err := LoadBuffer(l, src, "=x", "t"); err == nil || !strings.Contains(l.ToValue(-1).(string), "not enough memory") {
			b.Fatalf("got %v %v", err, l.ToValue(-1))
		}
	}
	b.ReportMetric(float64(worst.Microseconds()), "gap-max-us")
	b.ReportMetric(float64(sum.Microseconds())/float64(calls), "gap-mean-us")
	b.ReportMetric(float64(cpuWorst.Microseconds()), "cpu-gap-max-us")
}
