package lua

import (
	"fmt"
	"syscall"
	"testing"
	"time"
)

// processCPU is the CPU time of the process (all threads), as lua5.2's
// os.clock reports it: on a busy machine wall time is not comparable.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// traversalChunk sums a 100,000-key table with pairs; the table is built
// once, outside the timed loop.
const traversalChunk = `local t = ...
local n = 0
for k, v in pairs(t) do n = n + v end
return n`

// BenchmarkPairs100k times one pairs traversal of a table of 100,000 string
// keys. It also reports the process CPU time per traversal (cpu-ns/op), the
// figure to compare with lua5.2's os.clock for the same loop:
// `lua5.2 testdata/traverse.lua` runs the three loops of these benchmarks.
func BenchmarkPairs100k(b *testing.B) { benchmarkTraversal(b, traversalChunk) }

// BenchmarkPairs100kFresh adds and removes a key before each traversal, so
// each one snapshots the keys again, and writes one field during it (from
// then on each step looks its value up).
func BenchmarkPairs100kFresh(b *testing.B) {
	benchmarkTraversal(b, `local t = ...
t.extra = 0 t.extra = nil
local n = 0
for k, v in pairs(t) do n = n + v if k == "k1" then t[k] = v end end
return n`)
}

// BenchmarkNextInterleaved100k runs two interleaved traversals of one table.
func BenchmarkNextInterleaved100k(b *testing.B) {
	benchmarkTraversal(b, `local t = ...
local a, b, n = nil, nil, 0
repeat a = next(t, a) b = next(t, b) if a then n = n + t[a] end until a == nil
return n`)
}

func benchmarkTraversal(b *testing.B, chunk string) {
	l := NewState()
	OpenLibraries(l)
	if err := DoString(l, `local t = {} for i = 1, 100000 do t["k" .. i] = i end keys100k = t`); err != nil {
		b.Fatal(err)
	}
	if err := LoadString(l, chunk); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	cpu := processCPU()
	for i := 0; i < b.N; i++ {
		l.PushValue(-1)
		l.Global("keys100k")
		if err := l.ProtectedCall(1, 1, 0); err != nil {
			b.Fatal(err)
		}
		if n, _ := l.ToNumber(-1); n != 100000*100001/2 {
			b.Fatal(fmt.Sprint("sum ", n))
		}
		l.Pop(1)
	}
	b.ReportMetric(float64(processCPU()-cpu)/float64(b.N), "cpu-ns/op")
}
