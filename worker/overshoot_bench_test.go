package worker

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/templateworker/templateworker/proto"
)

// BenchmarkLimitOvershoot measures, for each kind of work a call can make
// the worker do, how far past its limits the call runs: overshoot-ms is
// the worst wall time past a 1 ms --lua-timeout, overshoot-steps the
// worst count of steps charged past a 20,000 instruction budget. The
// README's Limits section quotes these figures (run with -benchtime 5x).
func BenchmarkLimitOvershoot(b *testing.B) {
	var event strings.Builder
	event.WriteString("{")
	for i := 0; i < 60000; i++ {
		if i > 0 {
			event.WriteByte(',')
		}
		fmt.Fprintf(&event, `"k%d":1`, i)
	}
	event.WriteString("}")
	bigEvent := proto.Event{Name: "E", Data: proto.Value(event.String())}
	none := proto.Event{Name: "E"}
	const (
		obj  = `obj = {} for i = 1, 60000 do obj["key" .. i] = i end `
		arr  = `arr = {} for i = 1, 1000000 do arr[i] = i end `
		mb   = `mb = ("x"):rep(1024):rep(1024) `
		strs = mb + `strs = {} for i = 1, 16 do strs[i] = mb .. i end `
		escs = `local esc = ("\n"):rep(1024):rep(1024) escs = {} for i = 1, 16 do escs[i] = esc .. i end `
		mb8  = mb + `mb8 = mb:rep(8) `
	)
	cases := []struct {
		name, setup, code string
		ev                proto.Event
	}{
		{"VM instructions", "", `while true do end`, none},
		{"result: object of 60,000 keys", obj, `return obj`, none},
		{"result: array of 1,000,000", arr, `return arr`, none},
		{"result: 16 strings of 1 MiB", strs, `return strs`, none},
		{"result: 16 escaped strings of 1 MiB", escs, `return escs`, none},
		{"json.encode of 1,000,000", arr, `return #json.encode(arr)`, none},
		{"json.decode of 6.9 MB", arr + `text = json.encode(arr) arr = nil`, `return #json.decode(text)`, none},
		{"event of 60,000 keys decoded", "", `return 1`, bigEvent},
		{"pattern backtracking", "", `return string.find(("a"):rep(30000), ("a*"):rep(20) .. "b")`, none},
		{"table.sort of 1,000,000", arr, `table.sort(arr, function(a, b) return a > b end)`, none},
		{"table.concat", strs, `while true do local s = table.concat(strs) end`, none},
		{"string.rep 8 MiB", "", `while true do local s = ("x"):rep(8388608) end`, none},
		{"string.format of 8 MiB", mb8, `while true do local s = string.format("%s", mb8) end`, none},
		{"unpack 500,000", arr, `while true do local n = select("#", unpack(arr, 1, 500000)) end`, none},
		{"log flood", mb8, `while true do print(mb8) end`, none},
		{"string.sub copying 4 MiB", mb8, `while true do local s = mb8:sub(1, 4194303) end`, none},
		{"VM concat of 8 MiB (not charged per byte)", mb8, `while true do local s = mb8 .. mb8 end`, none},
		{"VM == of 8 MiB strings (not charged per byte)", mb8 + `other = mb:rep(8)`, `local n = 0 while true do if mb8 == other then n = n + 1 end end`, none},
	}
	newVM := func(setup string) *VM {
		vm := chargedVM(b)
		vm.limits.MaxMemory = 1 << 30
		vm.limits.MaxResult = 0 // results of 16 MiB: measured against the string limit, not --max-result
		vm.setLimits(nil)
		if _, err := vm.runCode(context.Background(), "setup", setup+" return 1", none); err != nil {
			b.Fatal(err)
		}
		return vm
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			var worstMs float64
			var worstSteps int64
			for b.Loop() {
				vm := newVM(c.setup)
				ctx := context.Background()
				// The deadline.
				// 1 ms: every case takes longer, on any machine.
				vm.limits.Timeout = time.Millisecond
				start := time.Now()
				_, err := vm.runCode(ctx, "attack", c.code, c.ev)
				if proto.CodeOf(err) != proto.CodeTimeout {
					b.Fatalf("deadline: %v", err)
				}
				worstMs = max(worstMs, float64(time.Since(start)-vm.limits.Timeout)/1e6)
				// The instruction budget (a fresh VM: the aborted one is broken).
				vm = newVM(c.setup)
				vm.limits.MaxInstructions = 20_000
				_, err = vm.runCode(ctx, "attack", c.code, c.ev)
				if proto.CodeOf(err) != proto.CodeCPULimit {
					b.Fatalf("budget: %v", err)
				}
				worstSteps = max(worstSteps, vm.call.steps-vm.limits.MaxInstructions)
			}
			b.ReportMetric(worstMs, "overshoot-ms")
			b.ReportMetric(float64(worstSteps), "overshoot-steps")
		})
	}
}
