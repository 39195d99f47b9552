package luastd

import (
	"os"
	"testing"
	"time"
	_ "time/tzdata" // a fixed local zone for the os.date/os.time cases

	lua "github.com/Shopify/go-lua"
)

// testZone is the local time zone of the test process, and the TZ given
// to the reference interpreter in the differential test.
const testZone = "America/New_York"

func TestMain(m *testing.M) {
	loc, err := time.LoadLocation(testZone)
	if err != nil {
		panic(err)
	}
	time.Local = loc
	os.Exit(m.Run())
}

// luaCase is a Lua chunk and the rendering of what it returns (see
// driver): values joined by ", ", strings in double quotes, or
// "error: <message>".
type luaCase struct {
	code string
	want string
	// goOnly marks cases where this package deliberately differs from the
	// reference interpreter (the differential test skips them).
	goOnly bool
}

// driver loads and runs a case and renders its results; it is the same
// for go-lua and the reference interpreter.
const driver = `
local function render(ok, ...)
  if not ok then return "error: " .. tostring((...)) end
  local s = ""
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    local t = type(v)
    local piece
    if t == "string" then piece = '"' .. v .. '"'
    elseif t == "table" or t == "function" then piece = t
    else piece = tostring(v) end
    if i > 1 then s = s .. ", " end
    s = s .. piece
  end
  return s
end
local function run(code)
  local f, err = load(code, "=case")
  if not f then return "load error: " .. err end
  return render(pcall(f))
end
`

// newState returns a state opened like the host opens tenant states,
// with Open applied.
func newState(lim Limits) *lua.State {
	l := lua.NewState()
	for _, lib := range []lua.RegistryFunction{
		{Name: "_G", Function: lua.BaseOpen},
		{Name: "string", Function: lua.StringOpen},
		{Name: "table", Function: lua.TableOpen},
		{Name: "math", Function: lua.MathOpen},
		{Name: "bit32", Function: lua.Bit32Open},
		{Name: "os", Function: lua.OSOpen},
	} {
		lua.Require(l, lib.Name, lib.Function, true)
		l.Pop(1)
	}
	Open(l, lim)
	return l
}

// runCode runs code in l through the driver.
func runCode(t testing.TB, l *lua.State, code string) string {
	t.Helper()
	if err := lua.LoadString(l, driver+"\nreturn run(...)"); err != nil {
		t.Fatalf("driver: %v", err)
	}
	l.PushString(code)
	if err := l.ProtectedCall(1, 1, 0); err != nil {
		return "driver error: " + err.Error()
	}
	s, _ := l.ToString(-1)
	l.Pop(1)
	return s
}

// runCases runs each case in a fresh state and compares.
func runCases(t *testing.T, cases []luaCase) {
	t.Helper()
	for _, c := range cases {
		got := runCode(t, newState(Limits{}), c.code)
		if got != c.want {
			t.Errorf("%s\n got: %q\nwant: %q", c.code, got, c.want)
		}
	}
}
