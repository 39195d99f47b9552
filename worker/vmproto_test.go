package worker

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
)

// TestSharedLibrariesIsolated: the library tables are shared by every VM
// until written; a tenant that writes, deletes, replaces or sets a
// metatable on any of them (and on its globals) changes its own copy
// only, and keeps seeing its changes.
func TestSharedLibrariesIsolated(t *testing.T) {
	m := NewManager(0, 2, newMemStore(), DefaultLimits, zerolog.Nop())
	ctx := context.Background()
	a, b := proto.GuildID(1<<22), proto.GuildID(2<<22)
	vandal := `local _, ctx = ...
string.upper = function() return "owned" end
string.extra = 1
table.insert = nil
math.pi = 3
os.time = nil
coroutine.resume = nil
bit32.band = nil
json.null = "x"
ctx.kv.get = nil
ctx.log.info = nil
setmetatable(math, { __index = function() return "meta" end })
getmetatable("").__index = { len = function() return -1 end }
print = nil
_G.pcall = nil
pairs = nil
return string.upper("a") .. ("x"):len() .. tostring(table.insert) .. math.pi .. math.nothing .. tostring(pcall)`
	if v, err := m.RunScript(ctx, a, "vandal", vandal, ev("x", "")); err != nil || string(v) != `"owned-1nil3metanil"` {
		t.Fatalf("vandal: %s %v", v, err)
	}
	check := `local _, ctx = ...
local n = 0 for _ in pairs(string) do n = n + 1 end
return string.upper("a") .. ("x"):len() .. type(table.insert) .. math.pi .. tostring(math.nothing) ..
  type(os.time) .. type(coroutine.resume) .. type(bit32.band) .. tostring(json.null ~= "x") .. type(ctx.kv.get) ..
  type(ctx.log.info) .. type(print) .. type(pcall) .. tostring(getmetatable(math)) .. tostring(string.extra) .. n`
	want := fmt.Sprintf(`"A1function%vnilfunctionfunctionfunctiontruefunctionfunctionfunctionfunctionnilnil%d"`, "3.1415926535898", 13) // string has 13 functions
	if v, err := m.RunScript(ctx, b, "check", check, ev("x", "")); err != nil || string(v) != want {
		t.Fatalf("other tenant: %s %v, want %s", v, err, want)
	}
	// The vandal keeps its own changes across calls.
	if v, err := m.RunScript(ctx, a, "again", `return string.upper("a") .. tostring(string.extra) .. tostring(table.insert)`, ev("x", "")); err != nil || string(v) != `"owned1nil"` {
		t.Fatalf("vandal's second call: %s %v", v, err)
	}
}

// TestSharedLibrariesConcurrent: VMs on different goroutines read and
// write their copies of the shared libraries at once (run with -race).
func TestSharedLibrariesConcurrent(t *testing.T) {
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				vm, err := newVM(proto.GuildID(uint64(g*100+i+1)<<22), newMemStore(), DefaultLimits, zerolog.Nop())
				if err != nil {
					t.Error(err)
					return
				}
				code := `local n = 0 for k, v in pairs(string) do n = n + 1 end
for k, v in pairs(_G) do n = n + 1 end
if (...).data then string.gsub = nil; math.floor = 1 end
return n + #string.rep("x", 3) + collectgarbage("count") * 0`
				for j := range 3 {
					if _, err := vm.runCode(context.Background(), "c", code, proto.Event{Name: "x", Data: proto.Value(fmt.Sprint(j == 1))}); err != nil {
						t.Error(err)
						return
					}
				}
				vm.close()
			}
		}()
	}
	wg.Wait()
}
