package main

import (
	"context"
	"strings"
	"testing"

	"github.com/templateworker/templateworker/proto"
)

// TestHostileCoroutinesEndToEnd runs coroutine attacks through the real
// binary in both topologies: each ends with its coded error while a
// neighbour tenant on the same worker keeps being served and is not
// quarantined, and the master stays up.
func TestHostileCoroutinesEndToEnd(t *testing.T) {
	cases := []struct{ name, code, want string }{
		{"coroutine that never finishes", `coroutine.resume(coroutine.create(function() while true do end end))`, proto.CodeCPULimit},
		{"resume swallows the limit", `while true do coroutine.resume(coroutine.create(function() while true do end end)) end`, proto.CodeCPULimit},
		{"abandoned coroutine bomb", `while true do local co = coroutine.create(function() coroutine.yield() end) coroutine.resume(co) end`, proto.CodeCPULimit},
		{"kept coroutine bomb", `local t = {} while true do local co = coroutine.wrap(function() coroutine.yield() end) co() t[#t + 1] = co end`, proto.CodeMemoryLimit},
		{"nested resumes", `local function f() coroutine.wrap(f)() end f()`, proto.CodeStackOverflow},
		{"yield in __index forever", `local t = setmetatable({}, {__index = function() while true do coroutine.yield() end end}) local co = coroutine.wrap(function() return t.x end) while true do co() end`, proto.CodeCPULimit},
		{"yield in __tostring", `local o = setmetatable({}, {__tostring = function() coroutine.yield() end}) return coroutine.wrap(function() return tostring(o) end)()`, proto.CodeScriptError},
		{"error object whose __tostring errors", `coroutine.wrap(function() error(setmetatable({}, {__tostring = function() error("again") end})) end)()`, proto.CodeScriptError},
	}
	for _, topo := range [][]string{{"--thread-workers", "1"}, {"--process-workers", "1"}} {
		t.Run(topo[0], func(t *testing.T) {
			m := startMaster(t, "", append(topo, "--lua-max-instructions", "2000000", "--lua-max-memory", "16MiB", "--lua-timeout", "60s")...)
			if topo[0] == "--process-workers" {
				m.waitReady(t)
			}
			ctx := context.Background()
			neighbour := proto.GuildID(1)
			if err := m.api.PutTemplate(ctx, neighbour, "gen", `local co = coroutine.wrap(function() coroutine.yield("fine") return "done" end) local r = co() co() return r`, []string{"Ping"}); err != nil {
				t.Fatal(err)
			}
			for i, c := range cases {
				attacker := proto.GuildID(uint64(100 + i)) // fresh each time: 3 limit hits would quarantine one
				_, err := m.api.RunScript(ctx, attacker, "hostile", c.code, nil)
				if pe := proto.AsError(err); err == nil || pe.Code != c.want {
					t.Fatalf("%s: got %.300v; want %s", c.name, err, c.want)
				}
				v, err := m.api.Dispatch(ctx, neighbour, proto.Event{Name: "Ping"})
				if err != nil || string(v) != `{"gen":"fine"}` {
					t.Fatalf("%s: neighbour: %s %v", c.name, v, err)
				}
			}
			q, err := m.api.Quarantined(ctx)
			if err != nil {
				t.Fatalf("master after the attacks: %v", err)
			}
			if strings.Contains(string(q), `"id":"1"`) {
				t.Fatalf("neighbour quarantined: %s", q)
			}
		})
	}
}
