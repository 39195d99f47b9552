package lua

import (
	"sync"
	"testing"
)

// TestSharedChunk: States loading one shared chunk run it independently
// and concurrently (go test -race): each gets its own closures of the
// chunk's nested functions, never another State's cached one.
func TestSharedChunk(t *testing.T) {
	const code = `local g = function() return 1 end
n = (n or 0) + g()
return tostring(g), n`
	first := NewState()
	OpenLibraries(first)
	if err := LoadString(first, code); err != nil {
		t.Fatal(err)
	}
	ch := ShareChunk(first, -1)
	if ch == nil || !ch.p.shared || !ch.p.prototypes[0].shared {
		t.Fatal("the chunk's prototypes are not marked shared")
	}
	first.Pop(1)
	states := []*State{first, NewState(), NewState()}
	OpenLibraries(states[1])
	OpenLibraries(states[2])
	names := make([]map[string]bool, len(states))
	var wg sync.WaitGroup
	for i, l := range states {
		names[i] = map[string]bool{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for call := 1; call <= 50; call++ {
				LoadChunk(l, ch)
				if err := l.ProtectedCall(0, 2, 0); err != nil {
					t.Error(err)
					return
				}
				name, _ := l.ToString(-2)
				if n, _ := l.ToInteger(-1); n != call {
					t.Errorf("state %d call %d: n = %d (another State's globals?)", i, call, n)
				}
				names[i][name] = true
				l.Pop(2)
			}
		}()
	}
	wg.Wait()
	seen := map[string]int{}
	for i, ns := range names {
		for n := range ns {
			if j, ok := seen[n]; ok {
				t.Fatalf("states %d and %d share the closure %s", j, i, n)
			}
			seen[n] = i
		}
	}
	if ch.p.cache != nil || ch.p.prototypes[0].cache != nil {
		t.Fatal("a shared prototype cached a closure")
	}
}
