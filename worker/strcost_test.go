package worker

import (
	"context"
	"testing"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
)

// TestLongStringOperationsAreCharged: .., ==, < and table indexing with
// long strings cost instructions by their size, so a loop of them over 8 MiB strings ends in
// cpu_limit within the budget instead of running a millisecond per
// instruction (each case would finish well inside the budget if every
// operation cost one instruction).
func TestLongStringOperationsAreCharged(t *testing.T) {
	limits := DefaultLimits
	limits.MaxInstructions = 1_000_000 // the two reps cost about 280,000
	limits.MaxMemory = 1 << 30
	limits.Timeout = 0
	const big = `local a = string.rep(string.rep("x", 4096), 2048) local b = string.rep(string.rep("x", 4096), 2048) local n = 0 `
	for name, code := range map[string]string{
		"concat": big + `for i = 1, 1000 do local t = a .. "y" n = n + #t end return n`,
		"equal":  big + `for i = 1, 1000 do if a == b then n = n + 1 end end return n`,
		"less":   big + `for i = 1, 1000 do if a <= b then n = n + 1 end end return n`,
		// A long key is hashed whole on every access (and compared
		// byte by byte when it is another string of the same bytes).
		"table key set": big + `local t = {} for i = 1, 1000 do t[a] = i end return t[a]`,
		"table key get": big + `local t = {[a] = 1} for i = 1, 1000 do n = n + t[b] end return n`,
	} {
		t.Run(name, func(t *testing.T) {
			m := NewManager(0, 1, newMemStore(), limits, zerolog.Nop())
			_, err := m.RunScript(context.Background(), g1, name, code, proto.Event{Name: "RunScript"})
			if proto.CodeOf(err) != proto.CodeCPULimit {
				t.Fatalf("%s of 8 MiB strings 1000 times: %v, want cpu_limit", name, err)
			}
			// Short strings are not charged extra: the same loop fits.
			short := `local a, b, n = ("x"):rep(100), ("x"):rep(100), 0 for i = 1, 1000 do local t = a .. "y" if a == b and a <= b then n = n + #t end end return n`
			if _, err := m.RunScript(context.Background(), g1, "short", short, proto.Event{Name: "RunScript"}); err != nil {
				t.Fatalf("the same loop on short strings: %v", err)
			}
		})
	}
}
