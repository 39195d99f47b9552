package luastd

import (
	"regexp"
	"strings"
	"testing"

	lua "github.com/Shopify/go-lua"
)

// Benchmarks of the matcher against Go's regexp on equivalent simple
// patterns. The Lua side includes the go-lua call overhead (pushing the
// arguments, calling string.match/gsub through the VM API).

const (
	benchRanges = "ranges: 10-20, 300-4000, 5-6 and 77777-88888 end"
	benchSpaces = "the   quick\tbrown \n fox  jumps   over the lazy    dog  "
)

// benchCall calls string.<fn>(args...) b.N times.
func benchCall(b *testing.B, fn string, args ...string) {
	l := newState(Limits{Charge: func(*lua.State, int) {}})
	l.Global("string")
	l.Field(-1, fn)
	l.Remove(-2)
	f := l.Top()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		l.PushValue(f)
		for _, a := range args {
			l.PushString(a)
		}
		l.Call(len(args), 1)
		l.Pop(1)
	}
}

func BenchmarkMatch(b *testing.B) {
	b.Run("lua", func(b *testing.B) { benchCall(b, "match", benchRanges, "(%d+)-(%d+)") })
	b.Run("regexp", func(b *testing.B) {
		re := regexp.MustCompile(`(\d+)-(\d+)`)
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if re.FindStringSubmatch(benchRanges) == nil {
				b.Fatal("no match")
			}
		}
	})
}

func BenchmarkMatchAnchoredLong(b *testing.B) {
	long := strings.Repeat("abcdefghij", 100) + "=42"
	b.Run("lua", func(b *testing.B) { benchCall(b, "match", long, "^(%a+)=(%d+)$") })
	b.Run("regexp", func(b *testing.B) {
		re := regexp.MustCompile(`^([a-zA-Z]+)=(\d+)$`)
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if re.FindStringSubmatch(long) == nil {
				b.Fatal("no match")
			}
		}
	})
}

func BenchmarkGsub(b *testing.B) {
	b.Run("lua", func(b *testing.B) { benchCall(b, "gsub", benchSpaces, "%s+", " ") })
	b.Run("regexp", func(b *testing.B) {
		re := regexp.MustCompile(`\s+`)
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			_ = re.ReplaceAllString(benchSpaces, " ")
		}
	})
}

func BenchmarkGsubLong(b *testing.B) {
	long := strings.Repeat(benchSpaces, 100)
	b.Run("lua", func(b *testing.B) { benchCall(b, "gsub", long, "%s+", " ") })
	b.Run("regexp", func(b *testing.B) {
		re := regexp.MustCompile(`\s+`)
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			_ = re.ReplaceAllString(long, " ")
		}
	})
}

func BenchmarkFormat(b *testing.B) {
	l := newState(Limits{})
	if err := lua.LoadString(l, `return string.format("%d items at %.2f (%s) %5.1f%%", 42, 3.14159, "ok", 99.5)`); err != nil {
		b.Fatal(err)
	}
	f := l.Top()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		l.PushValue(f)
		l.Call(0, 1)
		l.Pop(1)
	}
}

func BenchmarkSort1000(b *testing.B) {
	l := newState(Limits{})
	if err := lua.LoadString(l, `local t = {} for i = 1, 1000 do t[i] = (i * 7919) % 1009 end table.sort(t)`); err != nil {
		b.Fatal(err)
	}
	f := l.Top()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		l.PushValue(f)
		l.Call(0, 0)
	}
}
