package worker

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
)

// TestJSONKeyCollisions: a table whose keys become the same JSON object
// key is an error naming the key, in result encoding, json.encode and
// kv.set; nothing is stored.
func TestJSONKeyCollisions(t *testing.T) {
	s := newMemStore()
	m := newTestManager(t, s)
	tables := map[string]string{
		`local t = {} t[1] = "a" t["1"] = "b"`:                 `the keys number 1 and string "1" both become the object key "1"`,
		`local t = {x = 1} t[2.5] = "a" t["2.5"] = "b"`:        `the keys number 2.5 and string "2.5" both become the object key "2.5"`,
		`local t = {} t[0.1] = 1 t[0.1 + 1e-16] = 2`:           `both become the object key "0.1"`,
		`local t = {} t[1e15] = 1 t["1e+15"] = 2`:              `the keys number 1e+15 and string "1e+15"`,
		`local t = {{}} t[1][-1] = 1 t[1]["-1"] = 2`:           `object key "-1"`,
		`local t = {} t[3] = 1 t["3"] = 2 t[1] = 0`:            `object key "3"`,
		`local t = {} t[2^53] = 1 t["9.007199254741e+15"] = 2`: `object key "9.007199254741e+15"`,
	}
	for build, want := range tables {
		for _, use := range []string{
			" return t",
			" return json.encode(t)",
			" local e, ctx = ... ctx.kv.set('k', t) return 1",
		} {
			code := build + use
			v, err := m.RunScript(context.Background(), g1, "s", code, ev("x", ""))
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%s: got %s %v, want an error containing %q", code, v, err, want)
			}
		}
	}
	if len(s.kv[g1]) != 0 {
		t.Fatalf("a colliding table was stored: %v", s.kv[g1])
	}
	// Keys that do not collide: mixed tables are objects, none lost.
	for code, want := range map[string]string{
		`local t = {} t[1] = "a" t["2"] = "b" return t`:             `{"1":"a","2":"b"}`,
		`return {[1] = "a", [3] = "c", x = "x"}`:                    `{"1":"a","3":"c","x":"x"}`,
		`return {1, 2, x = 3}`:                                      `{"1":1,"2":2,"x":3}`,
		`return {[1] = "a", [2] = "b", [2.5] = "c"}`:                `{"1":"a","2":"b","2.5":"c"}`,
		`return {[2] = "b", [3] = "c"}`:                             `{"2":"b","3":"c"}`,
		`return {"a", "b", "c"}`:                                    `["a","b","c"]`,
		`return json.decode(json.encode({[10] = 1, ["10"] = nil}))`: `{"10":1}`,
	} {
		v, err := m.RunScript(context.Background(), g1, "s", code, ev("x", ""))
		if err != nil || string(v) != want {
			t.Errorf("%s: got %s %v, want %s", code, v, err, want)
		}
	}
}

// TestJSONKeyTypeErrors: a key that cannot be a JSON object key is an
// error naming its own type.
func TestJSONKeyTypeErrors(t *testing.T) {
	m := newTestManager(t, newMemStore())
	for table, kind := range map[string]string{
		`{[true] = 1}`:         "boolean",
		`{[false] = 1, a = 2}`: "boolean",
		`{[{}] = 1}`:           "table",
		`{[print] = 1}`:        "function",
		`{[json.null] = 1}`:    "userdata",
	} {
		want := "cannot encode a table with " + kind + " keys as JSON"
		for _, use := range []string{"return %s", "return json.encode(%s)", "local e, ctx = ... ctx.kv.set('k', %s)"} {
			code := fmt.Sprintf(use, table)
			_, err := m.RunScript(context.Background(), g1, "s", code, ev("x", ""))
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%s: got %v, want %q", code, err, want)
			}
		}
	}
}

// chargedVM is a VM with no instruction limit, to build data in, whose
// budget a test then lowers.
func chargedVM(t testing.TB) *VM {
	t.Helper()
	lim := DefaultLimits
	lim.MaxInstructions = 1 << 40
	lim.Timeout = time.Hour
	vm, err := newVM(proto.GuildID(1), newMemStore(), lim, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return vm
}

// TestJSONWorkIsCharged: encoding a big result or json.encode/kv.set
// value and decoding a big event or json.decode/kv value end with
// cpu_limit under a budget that the same call with small data stays
// within: the JSON work is charged, not only the Lua instructions.
func TestJSONWorkIsCharged(t *testing.T) {
	const setup = `big = {} for i = 1, 3000 do big["key" .. i] = i end
		arr = {} for i = 1, 20000 do arr[i] = i end
		small = {a = 1, b = {1, 2}}
		text = json.encode(arr)
		str = ("x"):rep(1e6)
		esc = ("\n"):rep(1e5)
		return 1`
	bigEvent := func(keys int) proto.Event {
		var b strings.Builder
		b.WriteString(`{`)
		for i := 0; i < keys; i++ {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `"key%d":%d`, i, i)
		}
		b.WriteString(`}`)
		return proto.Event{Name: "E", Data: proto.Value(b.String())}
	}
	cases := []struct {
		name, code string
		ev         proto.Event
	}{
		{"result object", `return big`, proto.Event{Name: "E"}},
		{"result array", `return arr`, proto.Event{Name: "E"}},
		{"result long string", `return str`, proto.Event{Name: "E"}},
		{"result escaped string", `return esc`, proto.Event{Name: "E"}},
		{"json.encode", `return #json.encode(big)`, proto.Event{Name: "E"}},
		{"kv.set", `local e, ctx = ... ctx.kv.set("k", arr) return 1`, proto.Event{Name: "E"}},
		{"json.decode", `return #json.decode(text)`, proto.Event{Name: "E"}},
		{"event data", `return 1`, bigEvent(5000)},
		{"event returned", `local e = ... return e.data.key1`, bigEvent(5000)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			vm := chargedVM(t)
			ctx := context.Background()
			if _, err := vm.runCode(ctx, "setup", setup, proto.Event{Name: "E"}); err != nil {
				t.Fatal(err)
			}
			// The same call on small data stays within the budget.
			vm.limits.MaxInstructions = 10_000
			small := strings.NewReplacer("big", "small", "arr", "small", "str", "'x'", "esc", "'\\n'", "text", "'[1]'").Replace(c.code)
			if _, err := vm.runCode(ctx, "small", small, proto.Event{Name: "E", Data: proto.Value(`{"key1":1}`)}); err != nil {
				t.Fatalf("%s on small data: %v", small, err)
			}
			_, err := vm.runCode(ctx, "big", c.code, c.ev)
			if proto.CodeOf(err) != proto.CodeCPULimit || !strings.Contains(err.Error(), "10000 instructions") {
				t.Fatalf("%s: got %v, want cpu_limit", c.code, err)
			}
			if !strings.Contains(c.name, "string") && vm.call.steps > vm.limits.MaxInstructions+hookEvery+2*jsonChargeEvery {
				t.Errorf("charged %d steps against a budget of %d: overshoot beyond one batch", vm.call.steps, vm.limits.MaxInstructions)
			}
			if !vm.broken {
				t.Error("the VM of an aborted call is kept")
			}
		})
	}
}

// TestJSONEncodingStopsAtTheDeadline: a call whose deadline passes while
// its result is being encoded ends with timeout.
func TestJSONEncodingStopsAtTheDeadline(t *testing.T) {
	vm := chargedVM(t)
	ctx := context.Background()
	if _, err := vm.runCode(ctx, "setup", `big = {} for i = 1, 3000 do big["key" .. i] = {i, i} end return 1`, proto.Event{Name: "E"}); err != nil {
		t.Fatal(err)
	}
	dl, cancel := context.WithCancel(ctx)
	cancel()
	// A call whose context ends between the script's return and the
	// result's encoding: begin, cancel, encode.
	vm.begin(dl)
	vm.l.Global("big")
	_, err := encodeJSON(vm.l, -1, 0, vm.meter)
	vm.l.Pop(1)
	vm.end()
	if proto.CodeOf(err) != proto.CodeTimeout {
		t.Fatalf("got %v, want timeout", err)
	}
}

// TestJSONNullIsUserdata: json.null is an ordinary Lua value: type() says
// userdata (go-lua answered "value expected" for a light userdata), it
// prints, and it equals only itself.
func TestJSONNullIsUserdata(t *testing.T) {
	m := newTestManager(t, newMemStore())
	code := `return {type(json.null), tostring(json.null):match("^userdata: ") ~= nil,
		json.null == json.null, rawequal(json.null, json.null), json.null ~= nil, json.null ~= false,
		select("#", json.null), (pcall(function() return json.null.x end))}`
	v, err := m.RunScript(context.Background(), g1, "s", code, ev("x", ""))
	if err != nil || string(v) != `["userdata",true,true,true,true,true,1,false]` {
		t.Fatalf("got %s %v", v, err)
	}
}
