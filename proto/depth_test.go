package proto

import (
	"strings"
	"testing"
)

// TestCheckJSONDepth: the bound is the worker's (a value inside more than
// 200 containers), for arrays, objects, mixes, and brackets in strings.
func TestCheckJSONDepth(t *testing.T) {
	arrays := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	objects := func(n int) string { return strings.Repeat(`{"a":`, n) + "1" + strings.Repeat("}", n) }
	mixed := func(n int) string { return strings.Repeat(`[{"k":`, n/2) + "null" + strings.Repeat("}]", n/2) }
	for _, c := range []struct {
		json string
		ok   bool
	}{
		{`1`, true}, {`"[[["`, true}, {`{}`, true},
		{arrays(201), true}, {arrays(202), false},
		{objects(200), true}, {objects(201), false},
		{mixed(200), true}, {mixed(202), false},
		{`[` + strings.Repeat(`"]\"[",`, 300) + `1]`, true},
		{`{"a":` + arrays(200) + `}`, true}, {`{"a":` + arrays(201) + `}`, false},
		{`[1,` + objects(200) + `]`, false},
	} {
		err := CheckJSONDepth([]byte(c.json))
		if (err == nil) != c.ok {
			t.Errorf("%.40s… (%d bytes): %v, want ok=%v", c.json, len(c.json), err, c.ok)
		}
		if err != nil && err.Error() != "JSON nested deeper than 200 levels" {
			t.Errorf("message %q", err)
		}
	}
}
