package luastd

import (
	"errors"
	"runtime"
	"testing"

	lua "github.com/Shopify/go-lua"
)

// fuzzBudget is the step budget of one fuzz input.
const fuzzBudget = 200_000

// FuzzMatch runs find, match, gmatch and gsub on arbitrary subjects and
// patterns. A Lua error (malformed pattern, budget exceeded...) is fine;
// a Go runtime panic (go-lua turns those into errors too) is not, and
// every input must end within the budget.
func FuzzMatch(f *testing.F) {
	for _, seed := range [][2]string{
		{"hello world", "(%w+) (%w+)"},
		{"aaaaaaaaaaaaaaaaaaaaaaaab", "a*a*a*a*a*b"},
		{"f(a(b)c)", "%b()"},
		{"THE (quick) fox", "%f[%a]%a+"},
		{"abcabc", "(a)(b)(c)%3%2%1"},
		{"x", "[%"},
		{"x", "[^]"},
		{"x", "%"},
		{"x", "(()"},
		{"x", "%f"},
		{"\x00\xff", "[\x00-\xff]+$"},
		{"aaa", "^(a-)%1$"},
		{"a]b", "[]]"},
		{"", "^$"},
		{"abc", "()%1"},
		{"xyz", "%bxy%b"},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, src, pat string) {
		if len(src) > 4096 || len(pat) > 256 {
			return
		}
		for _, fn := range []string{"find", "match", "gsub", "gmatch"} {
			used := 0
			lim := Limits{MaxString: 1 << 20, Charge: func(l *lua.State, steps int) {
				used += steps
				if used > fuzzBudget {
					lua.Errorf(l, "budget exceeded")
				}
			}}
			l := newState(lim)
			code := `local f, s, p = ... `
			switch fn {
			case "gsub":
				code += `return string.gsub(s, p, "<%0>")`
			case "gmatch":
				code += `local n = 0 for a in string.gmatch(s, p) do n = n + 1 end return n`
			default:
				code += `return string.` + fn + `(s, p)`
			}
			if err := lua.LoadString(l, code); err != nil {
				t.Fatal(err)
			}
			l.PushString(fn)
			l.PushString(src)
			l.PushString(pat)
			err := l.ProtectedCall(3, lua.MultipleReturns, 0)
			var rt runtime.Error
			if errors.As(err, &rt) {
				t.Fatalf("%s(%q, %q): Go runtime panic: %v", fn, src, pat, err)
			}
			if used > fuzzBudget+2*chargeEvery {
				t.Fatalf("%s(%q, %q): ran %d steps past the budget", fn, src, pat, used)
			}
		}
	})
}
