package luastd

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// allCases is the whole corpus, for the differential test.
func allCases() [][]luaCase {
	return [][]luaCase{patternCases, findCases, gsubCases, formatCases,
		stringCases, tableCases, timeCases}
}

// longBracket returns a long-bracket level whose closing bracket does not
// occur in s.
func longBracket(s string) string {
	eq := ""
	for strings.Contains(s, "]"+eq+"]") {
		eq += "="
	}
	return eq
}

// TestDifferential runs the corpus through the reference interpreter
// (lua5.2 on PATH) and requires it to produce the expected renderings
// too. It is skipped when lua5.2 is absent, except under CI=true.
func TestDifferential(t *testing.T) {
	bin, err := exec.LookPath("lua5.2")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("lua5.2 is not on PATH; CI must install it (Debian package lua5.2)")
		}
		t.Skip("lua5.2 not on PATH; skipping the differential test")
	}
	var cases []luaCase
	for _, group := range allCases() {
		for _, c := range group {
			if !c.goOnly {
				cases = append(cases, c)
			}
		}
	}
	var script strings.Builder
	script.WriteString(driver)
	for _, c := range cases {
		eq := longBracket(c.code)
		script.WriteString("do local r = run([" + eq + "[\n" + c.code + "\n]" + eq + "]) io.write(#r, \"\\n\", r) end\n")
	}
	cmd := exec.Command(bin, "-")
	cmd.Stdin = strings.NewReader(script.String())
	cmd.Env = append(os.Environ(), "TZ="+testZone, "LC_ALL=C")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("lua5.2: %v: %s", err, stderr.String())
	}
	r := bufio.NewReader(bytes.NewReader(out))
	for _, c := range cases {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading lua5.2 output: %v", err)
		}
		n, err := strconv.Atoi(strings.TrimSpace(line))
		if err != nil {
			t.Fatalf("reading lua5.2 output: %v", err)
		}
		buf := make([]byte, n)
		if _, err := io.ReadFull(r, buf); err != nil {
			t.Fatalf("reading lua5.2 output: %v", err)
		}
		if got := string(buf); got != c.want {
			t.Errorf("lua5.2 disagrees on %s\nlua5.2: %q\n  want: %q", c.code, got, c.want)
		}
	}
	t.Logf("%d cases compared with %s", len(cases), bin)
}
