package worker

import (
	"context"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
)

// Hostile scripts that used to wedge a worker inside the VM (issue 14's
// table): each ends with its limit's code, and the neighbour is served.
var vmWedgeCases = []struct {
	name, code, wantCode, wantMsg string
}{
	{"xpcall with a looping handler", `return xpcall(error, function() while true do end end)`, proto.CodeCPULimit, "instruction limit"},
	{"xpcall looping body and handler", `return xpcall(function() while true do end end, function() while true do end end)`, proto.CodeCPULimit, "instruction limit"},
	{"load with a recursive reader", `local f f = function() load(f) return nil end load(f)`, proto.CodeStackOverflow, "call depth"},
	{"load with a looping reader", `return load(function() while true do end end)`, proto.CodeCPULimit, "instruction limit"},
	{"load with an endless reader", `return load(function() return "x = 1 " end)`, proto.CodeMemoryLimit, "source length limit exceeded (1048576 bytes)"},
	{"huge chunk", `return load(("a.b.c.d.e=1 "):rep(80000))`, proto.CodeCPULimit, "instruction limit"},
	{"xpcall handler swallowing in a loop", `while true do xpcall(function() while true do end end, function(m) return m end) end`, proto.CodeCPULimit, "instruction limit"},
}

func TestVMWedgesEndWithTheirLimit(t *testing.T) {
	s := newMemStore()
	victim, neighbour := proto.GuildID(1<<22), proto.GuildID(2<<22)
	s.put(neighbour, "ok", `return "fine"`, "Ping")
	m := NewManager(0, 1, s, hostileLimits, zerolog.Nop())
	ctx := context.Background()
	for _, c := range vmWedgeCases {
		t.Run(c.name, func(t *testing.T) {
			_, err := m.RunScript(ctx, victim, "hostile", c.code, ev("x", ""))
			if pe := proto.AsError(err); err == nil || pe.Code != c.wantCode || !strings.Contains(pe.Message, c.wantMsg) {
				t.Fatalf("got %.300v; want %s containing %q", err, c.wantCode, c.wantMsg)
			}
			v, err := m.Dispatch(ctx, neighbour, ev("Ping", "{}"))
			if err != nil || string(v) != `{"ok":"fine"}` {
				t.Fatalf("neighbour after hostile call: %s %v", v, err)
			}
		})
	}
}

// Lua 5.2 behaviour a template author relies on, as the reference
// interpreter gives it.
func TestVMLua52Semantics(t *testing.T) {
	m := NewManager(0, 1, newMemStore(), hostileLimits, zerolog.Nop())
	for _, c := range []struct{ code, want string }{
		{`return {xpcall(function() error("x") end, function(m) return m end)}`, `[false,"x:1: x"]`},
		{`local ok, e = pcall(error, {code = 7}) return {ok, e.code}`, `[false,7]`},
		{`return {pcall(error)}`, `[false]`},
		{`local t = {nil, "return ", "3"} return load(function() return table.remove(t, 1) end)() == nil`, `true`},
		{`local i, s = 0, "return 40 + 2" return load(function() i = i + 1 return s:sub(i, i) end)()`, `42`},
	} {
		v, err := m.RunScript(context.Background(), g1, "x", c.code, ev("x", ""))
		if err != nil || string(v) != c.want {
			t.Errorf("%s: got %s %v; want %s", c.code, v, err, c.want)
		}
	}
}
