package worker

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
)

var g1 = proto.GuildID(1234567890123456789)

func newTestManager(t *testing.T, s *memStore) *Manager {
	t.Helper()
	return NewManager(0, 1, s, DefaultLimits, zerolog.Nop())
}

func ev(name, data string) proto.Event {
	return proto.Event{Name: name, Data: proto.Value(data)}
}

func TestDispatchUnregisteredEventRunsNoLua(t *testing.T) {
	s := newMemStore()
	s.put(g1, "a", `error("must not run")`, "Ping")
	m := newTestManager(t, s)
	v, err := m.Dispatch(context.Background(), g1, ev("Other", "{}"))
	if err != nil || string(v) != "null" {
		t.Fatalf("got %s, %v; want null", v, err)
	}
	if m.Loaded() != 0 {
		t.Fatalf("a VM was built for an unregistered event")
	}
	// A tenant with no templates at all: also null.
	v, err = m.Dispatch(context.Background(), proto.UserID(5), ev("Ping", "{}"))
	if err != nil || string(v) != "null" {
		t.Fatalf("got %s, %v; want null", v, err)
	}
}

func TestDispatchResultsInNameOrder(t *testing.T) {
	s := newMemStore()
	s.put(g1, "b", `local event, ctx = ... return event.data.who .. "!"`, "Ping")
	s.put(g1, "a", `local event = ... return {n = event.name, author = event.author}`, "Ping")
	s.put(g1, "c", `return 1`, "Other")
	m := newTestManager(t, s)
	author := "42"
	v, err := m.Dispatch(context.Background(), g1, proto.Event{Name: "Ping", Author: &author, Data: proto.Value(`{"who":"ops"}`)})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"a":{"author":"42","n":"Ping"},"b":"ops!"}`; string(v) != want {
		t.Fatalf("got %s want %s", v, want)
	}
}

func TestDispatchTemplateErrorIsolates(t *testing.T) {
	s := newMemStore()
	s.put(g1, "bad", "local x = 1\nerror('boom')", "Ping")
	s.put(g1, "good", `return "ok"`, "Ping")
	m := newTestManager(t, s)
	_, err := m.Dispatch(context.Background(), g1, ev("Ping", "null"))
	pe := proto.AsError(err)
	if pe.Code != proto.CodeScriptError {
		t.Fatalf("code %q, want script_error (%v)", pe.Code, err)
	}
	if !strings.Contains(pe.Message, `template "bad"`) || !strings.Contains(pe.Message, "bad:2: boom") {
		t.Fatalf("message %q should name the template, line and message", pe.Message)
	}
	if string(pe.Results) != `{"bad":null,"good":"ok"}` {
		t.Fatalf("results %s", pe.Results)
	}
}

func TestVMCacheAndDrop(t *testing.T) {
	s := newMemStore()
	s.put(g1, "count", `counter = (counter or 0) + 1 return counter`, "Ping")
	m := newTestManager(t, s)
	for i := 1; i <= 3; i++ {
		v, err := m.Dispatch(context.Background(), g1, ev("Ping", "{}"))
		if err != nil || string(v) != `{"count":`+itoa(i)+`}` {
			t.Fatalf("call %d: %s %v", i, v, err)
		}
	}
	if s.loads != 1 {
		t.Fatalf("templates loaded %d times, want 1", s.loads)
	}
	vm := m.tenants[g1].vm
	m.Drop(g1)
	if !vm.broken {
		t.Fatal("dropped VM not marked broken")
	}
	if _, err := vm.runCode(context.Background(), "x", "return 1", ev("x", "")); proto.CodeOf(err) != proto.CodeTenantBroken {
		t.Fatalf("broken VM used: %v", err)
	}
	v, _ := m.Dispatch(context.Background(), g1, ev("Ping", "{}"))
	if string(v) != `{"count":1}` {
		t.Fatalf("after drop got %s, want a fresh VM", v)
	}
	if s.loads != 2 {
		t.Fatalf("templates not reloaded after drop")
	}
}

func TestRunScriptAndKV(t *testing.T) {
	s := newMemStore()
	m := newTestManager(t, s)
	ctx := context.Background()
	code := `local event, ctx = ...
ctx.kv.set("b", {x = 1})
ctx.kv.set("a", "one")
ctx.kv.set("c", json.array({}))
local got = ctx.kv.get("b")
local all = ctx.kv.find("")
ctx.kv.delete("c")
return {got = got.x, keys = {all[1].key, all[2].key, all[3].key}, missing = ctx.kv.get("zzz") == nil, tenant = ctx.tenant}`
	v, err := m.RunScript(ctx, g1, "adhoc", code, ev("x", "{}"))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"got":1,"keys":["a","b","c"],"missing":true,"tenant":{"id":"1234567890123456789","type":"Guild"}}`
	if string(v) != want {
		t.Fatalf("got %s\nwant %s", v, want)
	}
	if _, ok := s.kv[g1]["c"]; ok {
		t.Fatal("delete did not delete")
	}
	if string(s.kv[g1]["b"]) != `{"x":1}` {
		t.Fatalf("stored %s", s.kv[g1]["b"])
	}
}

func TestKVLimits(t *testing.T) {
	m := newTestManager(t, newMemStore())
	cases := map[string]string{
		`ctx.kv.set("", 1)`:                        "key must be 1 to 512 bytes, got 0",
		`ctx.kv.set(string.rep("k", 513), 1)`:      "got 513",
		`ctx.kv.set(5, 1)`:                         "key must be a string",
		`ctx.kv.set("k", string.rep("v", 262144))`: "larger than 262144 bytes",
		`ctx.kv.set("k", function() end)`:          "cannot encode a function",
		`local t = {} t.t = t ctx.kv.set("k", t)`:  "cyclic",
		`ctx.kv.set("k", 0/0)`:                     "cannot encode NaN",
		`ctx.kv.set("k")`:                          "missing value",
	}
	for code, want := range cases {
		_, err := m.RunScript(context.Background(), g1, "s", "local event, ctx = ...\n"+code, ev("x", ""))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want error containing %q", code, err, want)
		}
	}
	// 512-byte key is fine.
	if _, err := m.RunScript(context.Background(), g1, "s", `local e, ctx = ... ctx.kv.set(string.rep("k", 512), 1)`, ev("x", "")); err != nil {
		t.Fatal(err)
	}
}

func TestStoreErrorKeepsCode(t *testing.T) {
	s := newMemStore()
	m := newTestManager(t, s)
	s.fail = proto.Errorf(proto.CodeKVQuotaExceeded, "tenant has 10000 keys")
	_, err := m.RunScript(context.Background(), g1, "s", `local e, ctx = ... ctx.kv.set("k", 1)`, ev("x", ""))
	// Templates cannot even load while the store fails.
	if proto.CodeOf(err) != proto.CodeKVQuotaExceeded {
		t.Fatalf("got %v", err)
	}
	s.fail = nil
	if _, err := m.RunScript(context.Background(), g1, "s", `return 1`, ev("x", "")); err != nil {
		t.Fatal(err)
	}
	s.fail = proto.Errorf(proto.CodeKVQuotaExceeded, "tenant has 10000 keys")
	_, err = m.RunScript(context.Background(), g1, "s", `local e, ctx = ... ctx.kv.set("k", 1)`, ev("x", ""))
	if proto.CodeOf(err) != proto.CodeKVQuotaExceeded || !strings.Contains(err.Error(), "10000 keys") {
		t.Fatalf("got %v", err)
	}
	// A template that catches the error succeeds.
	v, err := m.RunScript(context.Background(), g1, "s", `local e, ctx = ... return pcall(ctx.kv.set, "k", 1)`, ev("x", ""))
	if err != nil || string(v) != "false" {
		t.Fatalf("got %s %v", v, err)
	}
}

func TestJSONRoundTrip(t *testing.T) {
	m := newTestManager(t, newMemStore())
	cases := []string{
		`{"a":[1,2,3],"b":{"c":null},"d":"x\"y","e":true,"f":1.5,"g":[],"h":{}}`,
		`[1,null,3]`,
		`"héllo ✓"`,
		`-0.25`,
		`[[[]]]`,
	}
	for _, c := range cases {
		v, err := m.RunScript(context.Background(), g1, "s", `local e = ... return e.data`, ev("x", c))
		if err != nil {
			t.Fatalf("%s: %v", c, err)
		}
		var a, b any
		json.Unmarshal([]byte(c), &a)
		if err := json.Unmarshal(v, &b); err != nil {
			t.Fatalf("%s: invalid output %s", c, v)
		}
		if ja, _ := json.Marshal(a); string(ja) != mustMarshal(b) {
			t.Errorf("round trip of %s gave %s", c, v)
		}
	}
	v, _ := m.RunScript(context.Background(), g1, "s", `return json.decode(json.encode({1, "two", {three = 3}}))`, ev("x", ""))
	if string(v) != `[1,"two",{"three":3}]` {
		t.Fatalf("json lib round trip: %s", v)
	}
	_, err := m.RunScript(context.Background(), g1, "s", `return json.decode("{bad")`, ev("x", ""))
	if err == nil || !strings.Contains(err.Error(), "json.decode: invalid JSON") {
		t.Fatalf("bad json: %v", err)
	}
	_, err = m.RunScript(context.Background(), g1, "s", `return 1/0`, ev("x", ""))
	if err == nil || !strings.Contains(err.Error(), "cannot encode") {
		t.Fatalf("inf result: %v", err)
	}
	v, _ = m.RunScript(context.Background(), g1, "s", `return 9007199254740993`, ev("x", ""))
	if string(v) != "9007199254740992" {
		t.Fatalf("2^53+1 became %s (float64 precision, documented)", v)
	}
}

func mustMarshal(v any) string { b, _ := json.Marshal(v); return string(b) }

// TestDispatchTemplatesShareOneBudget: the templates of one dispatch run
// within one instruction budget, not one each, so a tenant cannot multiply
// its CPU by subscribing many templates to an event.
func TestDispatchTemplatesShareOneBudget(t *testing.T) {
	s := newMemStore()
	// Each template alone fits the budget (about 40% of it); together
	// they do not.
	spin := `local n = 0 for i = 1, 40000 do n = n + i end return n`
	for _, name := range []string{"a", "b", "c"} {
		s.put(g1, name, spin, "Ping")
	}
	s.put(proto.GuildID(7), "a", spin, "Ping")
	limits := DefaultLimits
	limits.MaxInstructions = 200_000 // a template is about 80,000 (2 per iteration)
	m := NewManager(0, 1, s, limits, zerolog.Nop())
	if _, err := m.Dispatch(context.Background(), proto.GuildID(7), ev("Ping", "{}")); err != nil {
		t.Fatalf("one template within the budget: %v", err)
	}
	_, err := m.Dispatch(context.Background(), g1, ev("Ping", "{}"))
	if proto.CodeOf(err) != proto.CodeCPULimit {
		t.Fatalf("three templates of 40%% each: %v, want cpu_limit", err)
	}
	// The next dispatch starts a fresh budget.
	if _, err := m.Dispatch(context.Background(), proto.GuildID(7), ev("Ping", "{}")); err != nil {
		t.Fatalf("a later dispatch: %v", err)
	}
}
