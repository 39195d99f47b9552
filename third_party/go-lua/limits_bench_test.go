package lua

import "testing"

const loopChunk = `local s = 0 for i = 1, 100 do s = s + i end return s`

const tableChunk = `local t = {} for i = 1, 100 do t[i] = {i, tostring(i)} t["k" .. i] = i end return #t`

// benchmarkChunk calls a compiled chunk b.N times on one State; limited
// adds all limits and a count hook every 1000 instructions, as a host
// enforcing an instruction budget would.
func benchmarkChunk(b *testing.B, chunk string, limited bool) {
	l := NewState()
	OpenLibraries(l)
	if limited {
		SetLimits(l, Limits{
			MaxStringLength: 16 << 20,
			MaxCallDepth:    200,
			MaxMemory:       64 << 20,
			OnLimit:         func(*State, string, int64) {},
		})
		var budget int
		SetDebugHook(l, func(l *State, _ Debug) {
			if budget++; budget < 0 {
				Errorf(l, "budget exceeded")
			}
		}, MaskCount, 1000)
	}
	if err := LoadString(l, chunk); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		l.PushValue(-1)
		if err := l.ProtectedCall(0, 1, 0); err != nil {
			b.Fatal(err)
		}
		l.Pop(1)
	}
}

func BenchmarkLoopNoLimits(b *testing.B)  { benchmarkChunk(b, loopChunk, false) }
func BenchmarkLoopLimits(b *testing.B)    { benchmarkChunk(b, loopChunk, true) }
func BenchmarkTableNoLimits(b *testing.B) { benchmarkChunk(b, tableChunk, false) }
func BenchmarkTableLimits(b *testing.B)   { benchmarkChunk(b, tableChunk, true) }
