package worker

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
)

// The official Lua 5.2.2 test suite (third_party/lua-5.2-tests, vendored
// unmodified) run through newVM, the construction every template VM gets:
// the sandboxed libraries and the limits. Each file runs in a fresh VM as a
// chunk named "=<file>" (as templates are), with the lines listed in
// suiteAside blanked out (line numbers are kept); no assertion is edited.
//
// Lines are left out for one reason only: they need what the sandbox
// leaves out on purpose; every reason is a term of the README's "Not
// available" list (checked by TestLuaSuiteTable).
//
// Globals: _soft, _port and _no32 are set as all.lua sets them for "user
// tests" (no long or memory-hungry tests, nothing non-portable, nothing
// assuming a 32-bit size_t); big.lua runs with _soft false so that its
// body is not skipped at its first line.

// suiteDir is the vendored suite, relative to this package.
const suiteDir = "../third_party/lua-5.2-tests"

// suiteLimits are the limits every part runs under: the sandbox's limits,
// generous enough for the suite on a busy 2-core machine under -race. The
// instruction budget bounds each file's run; the wall-clock limit is far
// beyond any run so that no result depends on the machine's speed.
var suiteLimits = Limits{
	MaxInstructions: 2_000_000_000,
	Timeout:         time.Hour,
	MaxMemory:       1 << 30,
	MaxString:       64 << 20,
	MaxCallDepth:    DefaultLimits.MaxCallDepth,
}

// asideReasons are why lines are set aside: each value is a term that the
// README's "Not available" list states.
var asideReasons = map[string]string{
	"io":        "`io`",
	"debug":     "`debug`",
	"package":   "`package`",
	"binary":    "binary chunks",
	"dump":      "`string.dump`",
	"gc":        "GC control",
	"weak":      "weak tables",
	"dofile":    "`dofile`",
	"setlocale": "`os.setlocale`",
	"osexecute": "`os.execute`",
	"stack":     "catching a stack overflow with `pcall`",
}

// suitePart is lines from..to (1-based, inclusive) of a suite file.
type suitePart struct {
	file     string
	from, to int
	why      string // a key of asideReasons
}

// suiteFile is a file of the suite and the value of _soft it runs with.
type suiteFile struct {
	name string
	soft bool
	note string
}

// suiteDrivers run a file's chunk (passed as the driver's argument) the
// way all.lua does.
var suiteDrivers = map[string]string{
	// all.lua: local f = coroutine.wrap(assert(loadfile('big.lua')))
	// assert(f() == 'b') assert(f() == 'a')
	"big.lua": `local chunk = ... local f = coroutine.wrap(chunk) assert(f() == 'b') assert(f() == 'a')`,
}

// suiteFiles lists every .lua file of the suite (TestLuaSuiteTable checks
// that none is missing).
var suiteFiles = []suiteFile{
	{"all.lua", true, "the driver: dofile()s the others, uses io, os.exit, debug"},
	{"api.lua", true, "returns at once without T, the C test library"},
	{"attrib.lua", true, "its require/package tests are under `if not _port`"},
	{"big.lua", false, "runs in a coroutine that yields 'b' then 'a', as all.lua runs it (suiteDrivers)"},
	{"bitwise.lua", true, ""},
	{"calls.lua", true, ""},
	{"checktable.lua", true, "helper functions for T only"},
	{"closure.lua", true, ""},
	{"code.lua", true, "returns at once without T, the C test library"},
	{"constructs.lua", true, ""},
	{"coroutine.lua", true, "without T (the C test library) lines 260-416 take their \"testC not active\" branch and the file returns at 543"},
	{"db.lua", true, ""},
	{"errors.lua", true, ""},
	{"events.lua", true, ""},
	{"files.lua", true, ""},
	{"gc.lua", true, ""},
	{"goto.lua", true, ""},
	{"literals.lua", true, ""},
	{"locals.lua", true, ""},
	{"main.lua", true, "runs the stand-alone interpreter"},
	{"math.lua", true, ""},
	{"nextvar.lua", true, ""},
	{"pm.lua", true, ""},
	{"sort.lua", true, ""},
	{"strings.lua", true, "its locale tests are under `if not _port`"},
	{"vararg.lua", true, ""},
	{"verybig.lua", true, "the >64k program is written to a temporary file and dofile()d"},
}

// suiteAside is the one list of the lines set aside: they need what the
// sandbox leaves out on purpose, named by a key of asideReasons.
var suiteAside = []suitePart{
	{"all.lua", 1, 259, "dofile"},
	{"big.lua", 7, 7, "package"},
	{"big.lua", 47, 49, "debug"},
	{"calls.lua", 3, 3, "package"},
	{"calls.lua", 207, 207, "gc"},
	{"calls.lua", 219, 219, "debug"},
	{"calls.lua", 220, 222, "binary"},
	{"calls.lua", 235, 237, "binary"},
	{"calls.lua", 240, 246, "dump"},
	{"calls.lua", 256, 266, "dump"},
	{"calls.lua", 286, 301, "dump"},
	{"closure.lua", 13, 13, "gc"},
	{"closure.lua", 17, 17, "gc"},
	{"closure.lua", 22, 39, "weak"},
	{"closure.lua", 204, 242, "debug"},
	{"constructs.lua", 3, 3, "package"},
	{"constructs.lua", 201, 201, "debug"},
	{"coroutine.lua", 3, 3, "package"},
	{"coroutine.lua", 151, 171, "debug"},
	{"coroutine.lua", 192, 210, "weak"},
	{"coroutine.lua", 241, 243, "stack"},
	{"coroutine.lua", 513, 521, "debug"},
	{"db.lua", 1, 631, "debug"},
	{"errors.lua", 3, 3, "package"},
	{"errors.lua", 94, 101, "debug"},
	{"errors.lua", 105, 105, "io"},
	{"errors.lua", 153, 153, "io"},
	{"errors.lua", 175, 180, "stack"},
	{"events.lua", 7, 7, "gc"},
	{"events.lua", 47, 47, "gc"},
	{"events.lua", 154, 154, "io"},
	{"events.lua", 160, 160, "gc"},
	{"events.lua", 335, 363, "debug"},
	{"files.lua", 1, 615, "io"},
	{"gc.lua", 1, 575, "gc"},
	{"literals.lua", 3, 3, "package"},
	{"literals.lua", 30, 43, "debug"},
	{"literals.lua", 169, 188, "debug"},
	{"literals.lua", 229, 244, "setlocale"},
	{"locals.lua", 3, 3, "package"},
	{"locals.lua", 68, 72, "debug"},
	{"locals.lua", 75, 75, "debug"},
	{"locals.lua", 77, 77, "debug"},
	{"locals.lua", 139, 139, "debug"},
	{"main.lua", 1, 260, "osexecute"},
	{"nextvar.lua", 229, 239, "package"},
	{"nextvar.lua", 300, 300, "gc"},
	{"nextvar.lua", 396, 396, "gc"},
	{"sort.lua", 155, 155, "gc"},
	{"verybig.lua", 48, 144, "io"},
}

// partsOf returns the parts of parts that belong to file.
func partsOf(parts []suitePart, file string) []suitePart {
	var out []suitePart
	for _, p := range parts {
		if p.file == file {
			out = append(out, p)
		}
	}
	return out
}

// TestLuaSuite runs every file of the suite, without its set-aside and
// lines, in a fresh sandboxed VM, and requires it to finish without error.
func TestLuaSuite(t *testing.T) {
	for _, f := range suiteFiles {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			lines := readSuiteFile(t, f.name)
			left := partsOf(suiteAside, f.name)
			code := blankLines(lines, left)
			if strings.TrimSpace(code) == "" {
				var why []string
				for _, p := range left {
					why = append(why, p.why)
				}
				t.Skipf("every line is set aside (%s) %s", strings.Join(why, ", "), f.note)
			}
			if err := runSuiteChunk(f.name, code, f.soft, suiteDrivers[f.name]); err != nil {
				t.Fatalf("%s: %v", f.name, err)
			}
		})
	}
}

// runSuiteChunk runs code as the chunk "=name" in a new sandboxed VM,
// through driver (a chunk given the file's chunk) when set.
func runSuiteChunk(name, code string, soft bool, driver string) error {
	vm, err := newVM(proto.GuildID(1<<22), newMemStore(), suiteLimits, zerolog.Nop())
	if err != nil {
		return err
	}
	vm.l.PushBoolean(soft)
	vm.l.SetGlobal("_soft")
	for _, g := range []string{"_port", "_no32"} {
		vm.l.PushBoolean(true)
		vm.l.SetGlobal(g)
	}
	nargs := 0
	if driver != "" {
		if err := vm.load("all.lua", driver); err != nil {
			return err
		}
		nargs = 1
	}
	if err := vm.load(name, code); err != nil {
		return err
	}
	vm.begin(context.Background())
	defer vm.end()
	return vm.invoke(nargs)
}

func readSuiteFile(t *testing.T, name string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(suiteDir, name))
	if err != nil {
		t.Fatalf("read the vendored suite: %v", err)
	}
	return strings.Split(string(b), "\n")
}

// blankLines returns lines joined with the lines of ranges emptied.
func blankLines(lines []string, ranges []suitePart) string {
	out := append([]string(nil), lines...)
	for _, r := range ranges {
		for i := r.from; i <= r.to && i <= len(out); i++ {
			out[i-1] = ""
		}
	}
	return strings.Join(out, "\n")
}

// TestLuaSuiteTable checks suiteFiles itself: every .lua file of the suite
// is listed, ranges are inside their file and do not overlap, every aside
// reason is a term of the README's "Not available" list.
func TestLuaSuiteTable(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	notAvailable := notAvailableText(t, string(readme))
	listed := map[string]bool{}
	for _, f := range suiteFiles {
		listed[f.name] = true
	}
	for _, p := range suiteAside {
		if !listed[p.file] {
			t.Errorf("%s %d-%d: not a file of suiteFiles", p.file, p.from, p.to)
		}
	}
	for _, f := range suiteFiles {
		n := len(readSuiteFile(t, f.name))
		var all []suitePart
		for _, r := range partsOf(suiteAside, f.name) {
			term, ok := asideReasons[r.why]
			if !ok {
				t.Errorf("%s %d-%d: %q is not a set-aside reason", f.name, r.from, r.to, r.why)
			} else if !strings.Contains(notAvailable, term) {
				t.Errorf("%s %d-%d: the README's \"Not available\" list does not state %s", f.name, r.from, r.to, term)
			}
			all = append(all, r)
		}
		sort.Slice(all, func(i, j int) bool { return all[i].from < all[j].from })
		for i, r := range all {
			if r.from < 1 || r.to < r.from || r.to > n {
				t.Errorf("%s: range %d-%d outside the file's %d lines", f.name, r.from, r.to, n)
			}
			if i > 0 && r.from <= all[i-1].to {
				t.Errorf("%s: ranges %d-%d and %d-%d overlap", f.name, all[i-1].from, all[i-1].to, r.from, r.to)
			}
		}
	}
	entries, err := os.ReadDir(suiteDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".lua") && !listed[e.Name()] {
			t.Errorf("%s is not listed in suiteFiles", e.Name())
		}
	}
}

// notAvailableText is the README's "Not available" list: from "Not
// available:" to the next section, whitespace collapsed.
func notAvailableText(t *testing.T, readme string) string {
	t.Helper()
	i := strings.Index(readme, "Not available:")
	if i < 0 {
		t.Fatal(`README.md has no "Not available:" list`)
	}
	rest := readme[i:]
	if j := strings.Index(rest, "\n#"); j >= 0 {
		rest = rest[:j]
	}
	return regexp.MustCompile(`\s+`).ReplaceAllString(rest, " ")
}

// The harness must be able to fail: a chunk with a failing assertion, and
// a set-aside library, are errors with the template's name and line.
func TestLuaSuiteHarnessFails(t *testing.T) {
	err := runSuiteChunk("fails.lua", "\nassert(1 == 2)", true, "")
	if err == nil || !strings.Contains(err.Error(), "fails.lua:2: assertion failed!") {
		t.Fatalf("got %v", err)
	}
	err = runSuiteChunk("io.lua", "io.write('x')", true, "")
	if err == nil || !strings.Contains(err.Error(), "io.lua:1: attempt to index global 'io' (a nil value)") {
		t.Fatalf("got %v", err)
	}
}
