package lua

import "testing"

// TestShareCopyOnWrite: a shared table is each State's own table whose
// first write copies the frozen contents; other States and the frozen
// table never see it. Share refuses values a State could modify.
func TestShareCopyOnWrite(t *testing.T) {
	src := NewState()
	src.CreateTable(2, 2)
	src.PushString("a")
	src.RawSetInt(-2, 1)
	src.PushGoFunction(func(*State) int { return 0 })
	src.SetField(-2, "f")
	src.PushNumber(3)
	src.SetField(-2, "n")
	s, err := Share(src, -1)
	if err != nil {
		t.Fatal(err)
	}
	src.NewTable()
	src.SetField(-2, "t")
	if _, err := Share(src, -1); err == nil {
		t.Fatal("Share accepted a table holding a table")
	}
	a, b := NewState(), NewState()
	for _, l := range []*State{a, b} {
		OpenLibraries(l)
		l.PushShared(s)
		l.SetGlobal("lib")
	}
	if err := DoString(a, `lib.n = 4; lib[1] = "z"; lib.x = true; lib.f = nil`); err != nil {
		t.Fatal(err)
	}
	if err := DoString(b, `assert(lib.n == 3 and lib[1] == "a" and lib.x == nil and type(lib.f) == "function", "b sees a's writes")
local n = 0 for _ in pairs(lib) do n = n + 1 end assert(n == 3, n)`); err != nil {
		t.Fatal(err)
	}
	if err := DoString(a, `assert(lib.n == 4 and lib[1] == "z" and lib.x and lib.f == nil, "a lost its writes")`); err != nil {
		t.Fatal(err)
	}
	if s.t.hash["n"] != 3.0 || s.t.array[0] != "a" {
		t.Fatal("the frozen table was written")
	}
}
