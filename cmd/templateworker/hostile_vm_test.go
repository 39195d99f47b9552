package main

import (
	"context"
	"strings"
	"testing"

	"github.com/templateworker/templateworker/proto"
)

// TestHostileVMWedges runs issue 14's VM rows (the xpcall handler, load
// with a recursive reader, parsing a huge chunk) through the real API in
// both topologies: each attacker's call ends with its coded error, and the
// neighbour on the same worker is served and not quarantined, with the
// master up.
func TestHostileVMWedges(t *testing.T) {
	cases := []struct {
		name, code, wantCode, wantMsg string
	}{
		{"xpcall handler loops", `return xpcall(error, function() while true do end end)`, proto.CodeCPULimit, "5000000 instructions"},
		{"xpcall body and handler loop", `return xpcall(function() while true do end end, function() while true do end end)`, proto.CodeCPULimit, "5000000 instructions"},
		{"load with a recursive reader", `local f f = function() load(f) return nil end load(f)`, proto.CodeStackOverflow, "call depth"},
		{"load of a huge chunk", `return load(("a.b.c.d.e=1 "):rep(1.3e6))`, proto.CodeCPULimit, "5000000 instructions"},
	}
	for _, topo := range []struct {
		name string
		args []string
		n    int
	}{
		{"thread", []string{"--thread-workers", "1"}, 1},
		{"process", []string{"--process-workers", "2"}, 2},
	} {
		t.Run(topo.name, func(t *testing.T) {
			args := append([]string{"--lua-max-instructions", "5000000", "--lua-timeout", "2m"}, topo.args...)
			m := startMaster(t, "", args...)
			if topo.n > 1 {
				m.waitReady(t)
			}
			ctx := context.Background()
			neighbour := tenantOn(0, topo.n, 1)
			if err := m.api.PutTemplate(ctx, neighbour, "quick", `return "ok"`, []string{"Ping"}); err != nil {
				t.Fatal(err)
			}
			// The handler case as a template author writes it: Lua 5.2's answer.
			v, err := m.api.RunScript(ctx, tenantOn(0, topo.n, 2), "x", `return {xpcall(function() error("x") end, function(m) return m end)}`, nil)
			if err != nil || string(v) != `[false,"x:1: x"]` {
				t.Fatalf("xpcall with a handler: %s %v", v, err)
			}
			for i, c := range cases {
				attacker := tenantOn(0, topo.n, uint64(10+i))
				_, err := m.api.RunScript(ctx, attacker, "hostile", c.code, nil)
				if pe := proto.AsError(err); err == nil || pe.Code != c.wantCode || !strings.Contains(pe.Message, c.wantMsg) {
					t.Fatalf("%s: got %.300v; want %s containing %q", c.name, err, c.wantCode, c.wantMsg)
				}
				if v, err := m.api.Dispatch(ctx, neighbour, proto.Event{Name: "Ping"}); err != nil || string(v) != `{"quick":"ok"}` {
					t.Fatalf("%s: neighbour: %s %v", c.name, v, err)
				}
			}
			q, err := m.api.Quarantined(ctx)
			if err != nil || strings.Contains(string(q), neighbour.String()[len("guild:"):]) {
				t.Fatalf("quarantine list: %s %v", q, err)
			}
			select {
			case <-m.exited:
				t.Fatal("the master exited")
			default:
			}
			if _, err := m.api.Workers(ctx); err != nil {
				t.Fatalf("master: %v", err)
			}
		})
	}
}
