package worker

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
)

// hostileLimits keep the hostile corpus quick, also under -race.
var hostileLimits = Limits{
	MaxInstructions: 5_000_000,
	Timeout:         30 * time.Second,
	MaxMemory:       8 << 20,
	MaxString:       1 << 20,
	MaxCallDepth:    200,
}

// hostileCases is the corpus of hostile scripts: each must end with its
// exact error code (and a message naming the limit or problem).
var hostileCases = []struct {
	name, code, wantCode, wantMsg string
}{
	{"infinite loop", `while true do end`, proto.CodeCPULimit, "5000000 instructions"},
	{"loop in pcall", `while true do pcall(function() while true do end end) end`, proto.CodeCPULimit, "instruction limit"},
	{"loop in metamethod", `return setmetatable({}, {__index = function() while true do end end}).x`, proto.CodeCPULimit, "instruction limit"},
	{"pcall swallows the limit", `local n = 0 while true do local ok = pcall(function() while true do end end) n = n + 1 end`, proto.CodeCPULimit, "instruction limit"},
	{"string doubling", `local s = "x" while true do s = s .. s end`, proto.CodeMemoryLimit, "1048576 bytes"},
	{"string doubling in pcall", `while true do pcall(function() local s = "x" while true do s = s .. s end end) end`, proto.CodeMemoryLimit, "1048576 bytes"},
	{"string.rep huge", `return #string.rep("x", 1e10)`, proto.CodeMemoryLimit, "bytes"},
	{"table growth", `local t = {} for i = 1, 1e9 do t[i] = i end`, proto.CodeMemoryLimit, "8388608 bytes"},
	{"table of tables", `local t = {} while true do t[#t + 1] = {1, 2, 3} end`, proto.CodeMemoryLimit, "8388608 bytes"},
	{"deep recursion", `local function f() return 1 + f() end return f()`, proto.CodeStackOverflow, "200"},
	{"recursion through metamethods", `local t = setmetatable({}, {}) getmetatable(t).__index = function(t, k) return t[k] end return t.x`, proto.CodeStackOverflow, ""},
	{"loop in gsub callback", `return string.gsub(string.rep("a", 100), ".", function() while true do end end)`, proto.CodeCPULimit, "instruction limit"},
	{"pathological pattern", `return string.find(string.rep("a", 30000), string.rep("a*", 20) .. "b")`, proto.CodeCPULimit, "instruction limit"},
	{"gsub result too long", `local s = string.rep("x", 1000) return #string.gsub(s, "x", string.rep("y", 2000))`, proto.CodeMemoryLimit, "1048576 bytes"},
	{"sort with an inconsistent comparator", `local t = {} for i = 1, 100 do t[i] = i % 7 end table.sort(t, function(a, b) return true end)`, proto.CodeScriptError, "invalid order function"},
	{"error with a table", `error({})`, proto.CodeScriptError, "hostile"},
	{"error with a huge message", `error(string.rep("x", 500000))`, proto.CodeScriptError, "truncated"},
	{"io", `return io.open("/etc/passwd")`, proto.CodeScriptError, "nil value"},
	{"os.execute", `return os.execute("id")`, proto.CodeScriptError, "nil value"},
	{"os.getenv", `return os.getenv("HOME")`, proto.CodeScriptError, "nil value"},
	{"require", `return require("os")`, proto.CodeScriptError, "nil value"},
	{"dofile", `return dofile("/etc/passwd")`, proto.CodeScriptError, "nil value"},
	{"debug", `return debug.getinfo(1)`, proto.CodeScriptError, "nil value"},
	{"package", `return package.loaded`, proto.CodeScriptError, "nil value"},
	{"collectgarbage collect", `collectgarbage("collect")`, proto.CodeScriptError, "only \"count\""},
	{"huge JSON nesting", `return json.decode(string.rep("[", 100000))`, proto.CodeScriptError, "json.decode"},
	{"JSON keys that collide", `local t = {} t[1] = "a" t["1"] = "b" return t`, proto.CodeScriptError, `both become the object key "1"`},
	{"boolean JSON key", `return json.encode({[true] = 1})`, proto.CodeScriptError, "boolean keys"},
	{"JSON encoding past the budget", `local t = {} for i = 1, 100000 do t[i] = i end for i = 1, 20 do json.encode(t) end`, proto.CodeCPULimit, "instruction limit"},
	{"huge JSON document", `local s = "[" .. string.rep('{"a":1},', 120000) .. "1]" return #json.decode(s)`, proto.CodeMemoryLimit, "8388608 bytes"},
}

func TestHostileCorpus(t *testing.T) {
	s := newMemStore()
	victim, neighbour := proto.GuildID(1<<22), proto.GuildID(2<<22)
	s.put(neighbour, "ok", `return "fine"`, "Ping")
	m := NewManager(0, 1, s, hostileLimits, zerolog.Nop())
	ctx := context.Background()
	for _, c := range hostileCases {
		t.Run(c.name, func(t *testing.T) {
			// The VM holds state that must not survive an aborted call.
			if _, err := m.RunScript(ctx, victim, "setup", `marker = true`, ev("x", "")); err != nil {
				t.Fatal(err)
			}
			_, err := m.RunScript(ctx, victim, "hostile", c.code, ev("x", ""))
			pe := proto.AsError(err)
			if err == nil || pe.Code != c.wantCode || !strings.Contains(pe.Message, c.wantMsg) {
				t.Fatalf("got %.300v; want %s containing %q", err, c.wantCode, c.wantMsg)
			}
			if len(pe.Message) > 8<<10 {
				t.Fatalf("error message is %d bytes", len(pe.Message))
			}
			if isLimit(c.wantCode) {
				v, err := m.RunScript(ctx, victim, "check", `return marker == nil`, ev("x", ""))
				if err != nil || string(v) != "true" {
					t.Fatalf("VM not discarded after %s: %s %v", c.wantCode, v, err)
				}
			}
			v, err := m.Dispatch(ctx, neighbour, ev("Ping", "{}"))
			if err != nil || string(v) != `{"ok":"fine"}` {
				t.Fatalf("neighbour after hostile call: %s %v", v, err)
			}
		})
	}
}

func TestLoadRefusesBinaryChunks(t *testing.T) {
	m := NewManager(0, 1, newMemStore(), hostileLimits, zerolog.Nop())
	v, err := m.RunScript(context.Background(), g1, "s",
		`local f, err = load("\27LuaR\0\1\4\8\4\8\0", "x", "b") local g, err2 = load("\27LuaR\0\1\4\8\4\8\0") return {f == nil, err, g == nil, err2 ~= nil}`, ev("x", ""))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(v), `[true,"attempt to load a binary chunk`) || !strings.HasSuffix(string(v), `true,true]`) {
		t.Fatalf("got %s", v)
	}
	v, err = m.RunScript(context.Background(), g1, "s", `return load("return 1 + 1")()`, ev("x", ""))
	if err != nil || string(v) != "2" {
		t.Fatalf("text load: %s %v", v, err)
	}
}

// TestTenantIsolation: what one tenant changes in its VM (the string
// metatable, _G, library tables) is invisible to another.
func TestTenantIsolation(t *testing.T) {
	m := NewManager(0, 1, newMemStore(), hostileLimits, zerolog.Nop())
	a, b := proto.GuildID(1), proto.UserID(1)
	ctx := context.Background()
	tamper := `getmetatable("").__index.upper = function() return "pwned" end
string.lower = nil
table.insert = nil
setmetatable(_G, {__index = function() return function() return "hijack" end end})
json.encode = function() return "hijack" end
local e, ctx = ...
ctx.kv.set("a", 1)
return ("x"):upper()`
	v, err := m.RunScript(ctx, a, "s", tamper, ev("x", ""))
	if err != nil || string(v) != `"pwned"` {
		t.Fatalf("tamper: %s %v", v, err)
	}
	v, err = m.RunScript(ctx, b, "s", `local e, ctx = ...
return {("x"):upper(), string.lower("Y"), json.encode({1}), type(table.insert), nothing == nil, ctx.kv.get("a") == nil}`, ev("x", ""))
	if err != nil || string(v) != `["X","y","[1]","function",true,true]` {
		t.Fatalf("other tenant sees tampering: %s %v", v, err)
	}
}

func TestTimeoutLimit(t *testing.T) {
	lim := hostileLimits
	lim.MaxInstructions = 0
	lim.Timeout = 200 * time.Millisecond
	m := NewManager(0, 1, newMemStore(), lim, zerolog.Nop())
	_, err := m.RunScript(context.Background(), g1, "s", `while true do end`, ev("x", ""))
	if pe := proto.AsError(err); pe.Code != proto.CodeTimeout || !strings.Contains(pe.Message, "200ms") {
		t.Fatalf("got %v", err)
	}
	// The caller's context ends the call too.
	lim.Timeout = time.Minute
	m = NewManager(0, 1, newMemStore(), lim, zerolog.Nop())
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = m.RunScript(ctx, g1, "s", `while true do end`, ev("x", ""))
	// The message names the deadline that ended the call: the caller's
	// 100 ms, not the one-minute limit that never came into play.
	if pe := proto.AsError(err); pe.Code != proto.CodeTimeout || !strings.Contains(pe.Message, "caller deadline") || strings.Contains(pe.Message, "1m0s") {
		t.Fatalf("caller deadline: got %v", err)
	}
}

// TestStandardLibraryInTemplates: ordinary Lua 5.2 that parses a command
// runs unchanged in a tenant VM.
func TestStandardLibraryInTemplates(t *testing.T) {
	m := NewManager(0, 1, newMemStore(), hostileLimits, zerolog.Nop())
	code := `local event = ...
local cmd, user, dur, reason = event.data.text:match("^!(%a+)%s+<@(%d+)>%s+(%d+[dhm])%s*(.*)$")
local words = {}
for w in reason:gmatch("%S+") do words[#words + 1] = w:upper() end
local n = select("#", 1, nil, 3)
local t = {3, 1, 2} table.sort(t, function(a, b) return a > b end)
return {cmd = cmd, user = user, dur = dur, words = words, n = n, sorted = table.concat(t, ","),
  fmt = string.format("%5.2f|%-3d|%q", 3.14159, 7, "a\nb"), sub = (("hello world"):gsub("o", "0")),
  u = unpack({9}), year = os.date("!%Y", 0), t = os.time({year = 2000, month = 1, day = 1, hour = 0}) ~= nil}`
	v, err := m.RunScript(context.Background(), g1, "s", code, ev("x", `{"text":"!ban <@123> 7d spam and eggs"}`))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"cmd":"ban","dur":"7d","fmt":" 3.14|7  |\"a\\\nb\"","n":3,"sorted":"3,2,1","sub":"hell0 w0rld","t":true,"u":9,"user":"123","words":["SPAM","AND","EGGS"],"year":"1970"}`
	if string(v) != want {
		t.Fatalf("got  %s\nwant %s", v, want)
	}
}
