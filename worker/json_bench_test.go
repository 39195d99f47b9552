package worker

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
)

// BenchmarkJSONCost calibrates the steps charged for JSON work against VM
// instructions: each case runs a call and reports ns/step, the wall time
// divided by the steps the call was charged (instructions included). A
// step should cost about what an instruction of the "instructions" case
// does; the README's Limits section quotes these figures.
func BenchmarkJSONCost(b *testing.B) {
	event := func(keys int) proto.Event {
		var sb strings.Builder
		sb.WriteString(`{`)
		for i := 0; i < keys; i++ {
			if i > 0 {
				sb.WriteByte(',')
			}
			fmt.Fprintf(&sb, `"key%d":%d`, i, i)
		}
		sb.WriteString(`}`)
		return proto.Event{Name: "E", Data: proto.Value(sb.String())}
	}
	cases := []struct {
		name, code string
		ev         proto.Event
	}{
		{"instructions", `local x = 0 for i = 1, 100000 do x = x + i end return x`, proto.Event{Name: "E"}},
		{"encode-object-2k", `local t = {} for i = 1, 2000 do t["key" .. i] = i end return t`, proto.Event{Name: "E"}},
		{"encode-array-10k", `local t = {} for i = 1, 10000 do t[i] = i end return t`, proto.Event{Name: "E"}},
		{"encode-strings", `local t = {} local s = ("x"):rep(4096) for i = 1, 200 do t[i] = s end return t`, proto.Event{Name: "E"}},
		{"encode-escaped", `local t = {} local s = ("\n"):rep(4096) for i = 1, 200 do t[i] = s end return t`, proto.Event{Name: "E"}},
		{"decode-object-2k", `return 1`, event(2000)},
		{"decode-return-2k", `local e = ... return e.data`, event(2000)},
		{"json.decode-array", `local s = "[" .. ("1,"):rep(20000) .. "1]" return #json.decode(s)`, proto.Event{Name: "E"}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			lim := DefaultLimits
			lim.MaxInstructions = 1 << 50
			lim.MaxResult = 0 // the big results are the point: no --max-result
			vm, err := newVM(proto.GuildID(1), newMemStore(), lim, zerolog.Nop())
			if err != nil {
				b.Fatal(err)
			}
			var steps int64
			for b.Loop() {
				if _, err := vm.runCode(context.Background(), "bench", c.code, c.ev); err != nil {
					b.Fatal(err)
				}
				steps += vm.call.steps
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(steps), "ns/step")
			b.ReportMetric(float64(steps)/float64(b.N), "steps/op")
		})
	}
}
