package main

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/templateworker/templateworker/proto"
)

// TestHostileRefusedAnswersCharged: a ctx.kv.find or ctx.events.list
// whose answer is over one frame is refused by the master, which has read
// the whole answer from the store (a tenant's KV may hold 16 MiB) to know
// it (the master now stops at the frame's budget). The refusal is charged
// to the call's instruction budget as a frame's worth of answer is: a
// template looping over pcall'd refused finds ends with cpu_limit after a
// few of them, instead of keeping the master reading the store until its
// --lua-timeout (about 180 refused finds, 5 s of master CPU, in one 5 s
// call). Both topologies; the neighbour is served and unharmed.
func TestHostileRefusedAnswersCharged(t *testing.T) {
	for _, topo := range hostileTopologies {
		t.Run(topo.name, func(t *testing.T) {
			attacker, neighbour := hostilePair()
			m := startHostile(t, topo.args, neighbour, "--lua-max-instructions", "5000000", "--lua-timeout", "20s")
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			for i := 0; i < 20; i++ {
				fill := `local e, ctx = ... ctx.kv.set("k` + strconv.Itoa(i) + `", ("v"):rep(250000))
					ctx.events.schedule(3600, "Later", ("d"):rep(250000)) return 1`
				if v, err := m.api.RunScript(ctx, attacker, "fill", fill, nil); err != nil || string(v) != "1" {
					t.Fatalf("fill %d: %s %v", i, v, err)
				}
			}
			for _, call := range []string{`ctx.kv.find, ""`, `ctx.events.list`} {
				loop := `local e, ctx = ... local n = 0
					while true do
						local ok, err = pcall(` + call + `)
						if ok then return "fit" end
						if not string.find(tostring(err), "kv_result_too_large", 1, true) then error(err) end
						n = n + 1
					end`
				_, err := m.api.RunScript(ctx, attacker, "loop", loop, nil)
				if proto.CodeOf(err) != proto.CodeCPULimit {
					t.Fatalf("a loop of refused %s calls ended with %v, want cpu_limit (the refusals charged)", call, err)
				}
				wantNeighbourServed(t, m, neighbour)
			}
			wantHealthy(t, m, neighbour, topo.name == "process")
		})
	}
}
