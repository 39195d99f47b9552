package storetest

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/store"
)

var kvTests = []test{
	{"KVGetSetDelete", testKVGetSetDelete},
	{"KVFindOrder", testKVFindOrder},
	{"KVFindPrefixLiteral", testKVFindPrefixLiteral},
	{"KVFindPrefixBoundaries", testKVFindPrefixBoundaries},
	{"KVUnicodeRoundTrip", testKVUnicode},
	{"KVFindBounded", testKVFindBounded},
}

var limitTests = []test{
	{"KVKeyLimits", testKVKeyLimits},
	{"KVValueLimits", testKVValueLimits},
}

func testKVGetSetDelete(t *testing.T, open Opener) {
	s := open(t, store.Quota{})
	c := ctx(t)
	if v := get(t, s, guild, "k"); v != "" {
		t.Fatalf("missing key = %s", v)
	}
	set(t, s, guild, "k", `{"a":1}`)
	if v := get(t, s, guild, "k"); v != `{"a":1}` {
		t.Fatalf("k = %s, want {\"a\":1}", v)
	}
	set(t, s, guild, "k", `null`) // JSON null is a value, not a deletion
	if v, ok, err := s.KvGet(c, guild, "k"); err != nil || !ok || string(v) != "null" {
		t.Fatalf("KvGet after setting null = %s, %v, %v; want null, true, nil", v, ok, err)
	}
	set(t, s, guild, "k2", `[1,2]`)
	must(t, s.KvDelete(c, guild, "k"))
	if v := get(t, s, guild, "k"); v != "" {
		t.Fatalf("deleted key = %s", v)
	}
	must(t, s.KvDelete(c, guild, "k"))       // deleting twice is fine
	must(t, s.KvDelete(c, guild, "missing")) // as is deleting what never was
	items, err := s.KvFind(c, guild, "")
	must(t, err)
	if len(items) != 1 || items[0].Key != "k2" || string(items[0].Value) != `[1,2]` {
		t.Fatalf("KvFind = %+v, want k2=[1,2]", items)
	}
}

func testKVFindOrder(t *testing.T, open Opener) {
	s := open(t, store.Quota{})
	ks := []string{"b", "B", "a", "A", "aa", "a b", "a\x7f", "é", "e", "E", "z", "Z", "ä", "😀", "日本", "\u0080", "~", "0", "10", "9", "_", "%"}
	for i, k := range ks {
		set(t, s, guild, k, strconv.Itoa(i))
	}
	want := slices.Clone(ks)
	slices.Sort(want) // Go compares strings byte by byte
	equal(t, "keys", keys(t, s, guild, ""), want)
	items, err := s.KvFind(ctx(t), guild, "")
	must(t, err)
	for _, it := range items {
		if string(it.Value) != strconv.Itoa(slices.Index(ks, it.Key)) {
			t.Errorf("value of %q = %s, want %d", it.Key, it.Value, slices.Index(ks, it.Key))
		}
	}
}

func testKVFindPrefixLiteral(t *testing.T, open Opener) {
	s := open(t, store.Quota{})
	for _, k := range []string{"a", "ab", "a%b", "a%", "a_b", "axb", `a\b`, `a\\b`, `a\%`, "a*", "a.b", "a[b]", "b%"} {
		set(t, s, guild, k, `true`)
	}
	for _, tt := range []struct {
		prefix string
		want   []string
	}{
		{"a%", []string{"a%", "a%b"}},
		{"a_", []string{"a_b"}},
		{`a\`, []string{`a\%`, `a\\b`, `a\b`}},
		{`a\%`, []string{`a\%`}},
		{"a*", []string{"a*"}},
		{"a.", []string{"a.b"}},
		{"a[", []string{"a[b]"}},
		{"%", []string{}},
		{"_", []string{}},
		{"ab", []string{"ab"}},
		{"abc", []string{}},
		{"b", []string{"b%"}},
		{"", []string{"a", "a%", "a%b", "a*", "a.b", "a[b]", `a\%`, `a\\b`, `a\b`, "a_b", "ab", "axb", "b%"}},
	} {
		equal(t, "KvFind("+strconv.Quote(tt.prefix)+")", keys(t, s, guild, tt.prefix), tt.want)
	}
}

// testKVFindPrefixBoundaries checks prefixes whose last character is at an
// edge of its UTF-8 length class or of Unicode, where a range query built
// carelessly would miss or include keys.
func testKVFindPrefixBoundaries(t *testing.T, open Opener) {
	s := open(t, store.Quota{})
	ks := []string{
		"x\x7f", "x\x7fz", "x\u0080", // last 1-byte character
		"y\u07ff", "y\u07ffz", "y\u0800", // last 2-byte character
		"z\ud7ff", "z\ud7ffz", "z\ue000", // before the surrogates
		"w\uffff", "w\uffffz", "w\U00010000", // last 3-byte character
		"v\U0010ffff", "v\U0010ffff\U0010ffff", "v\U0010ffffz", "w", // last character
		"\U0010ffff", "\U0010ffffa",
	}
	for _, k := range ks {
		set(t, s, guild, k, `0`)
	}
	for _, tt := range []struct {
		prefix string
		want   []string
	}{
		{"x\x7f", []string{"x\x7f", "x\x7fz"}},
		{"y\u07ff", []string{"y\u07ff", "y\u07ffz"}},
		{"z\ud7ff", []string{"z\ud7ff", "z\ud7ffz"}},
		{"w\uffff", []string{"w\uffff", "w\uffffz"}},
		{"v\U0010ffff", []string{"v\U0010ffff", "v\U0010ffffz", "v\U0010ffff\U0010ffff"}},
		{"v", []string{"v\U0010ffff", "v\U0010ffffz", "v\U0010ffff\U0010ffff"}},
		{"\U0010ffff", []string{"\U0010ffff", "\U0010ffffa"}},
		{strings.Repeat("x", proto.MaxKeyBytes+1), []string{}},
	} {
		equal(t, "KvFind("+strconv.Quote(tt.prefix)+")", keys(t, s, guild, tt.prefix), tt.want)
	}
	for _, bad := range []string{"\xff", "a\x00"} {
		_, err := s.KvFind(ctx(t), guild, bad)
		wantCode(t, err, proto.CodeInvalidKV)
	}
}

func testKVUnicode(t *testing.T, open Opener) {
	s := open(t, store.Quota{})
	values := map[string]string{
		"日本語のキー":      `"値 🎉"`,
		"émoji 🎉":     `{ "b" : 1,  "a":[ 1, 2 ], "é": "\u00e9\n" }`, // spacing and key order kept
		"עברית":       `"שלום"`,
		"combining é": `"e\u0301"`,
		"n":           `1.50`, // not normalised to 1.5
		"big":         `123456789012345678901234567890`,
		"esc":         `"\u0000 \ud83d\ude00 \/"`,
	}
	for k, v := range values {
		set(t, s, guild, k, v)
	}
	for k, v := range values {
		if got := get(t, s, guild, k); got != v {
			t.Errorf("KvGet(%q) = %s, want %s byte for byte", k, got, v)
		}
	}
	items, err := s.KvFind(ctx(t), guild, "")
	must(t, err)
	if len(items) != len(values) {
		t.Fatalf("KvFind found %d keys, want %d", len(items), len(values))
	}
	for _, it := range items {
		if string(it.Value) != values[it.Key] {
			t.Errorf("KvFind value of %q = %s, want %s", it.Key, it.Value, values[it.Key])
		}
	}
	equal(t, "KvFind(\"é\")", keys(t, s, guild, "é"), []string{"émoji 🎉"})
	equal(t, "KvFind(\"日本\")", keys(t, s, guild, "日本"), []string{"日本語のキー"})
}

func testKVKeyLimits(t *testing.T, open Opener) {
	s := open(t, store.Quota{})
	c := ctx(t)
	longest := strings.Repeat("k", proto.MaxKeyBytes-3) + "é!" // multi-byte, exactly the limit
	set(t, s, guild, longest, `1`)
	if v := get(t, s, guild, longest); v != "1" {
		t.Fatalf("%d-byte key = %q", len(longest), v)
	}
	for name, key := range map[string]string{
		"empty":            "",
		"one byte over":    strings.Repeat("k", proto.MaxKeyBytes+1),
		"one rune over":    strings.Repeat("k", proto.MaxKeyBytes-1) + "é",
		"invalid UTF-8":    "a\xffb",
		"truncated rune":   "a\xc3",
		"NUL byte":         "a\x00b",
		"surrogate (CESU)": "\xed\xa0\x80",
	} {
		t.Run(name, func(t *testing.T) {
			wantCode(t, s.KvSet(c, guild, key, json.RawMessage(`1`)), proto.CodeInvalidKV)
			_, _, err := s.KvGet(c, guild, key)
			wantCode(t, err, proto.CodeInvalidKV)
			wantCode(t, s.KvDelete(c, guild, key), proto.CodeInvalidKV)
		})
	}
	pe := wantCode(t, s.KvSet(c, guild, strings.Repeat("k", proto.MaxKeyBytes+1), json.RawMessage(`1`)), proto.CodeInvalidKV)
	if !strings.Contains(pe.Message, strconv.Itoa(proto.MaxKeyBytes)) {
		t.Errorf("message %q does not name the limit %d", pe.Message, proto.MaxKeyBytes)
	}
	equal(t, "keys", keys(t, s, guild, ""), []string{longest})
}

func testKVValueLimits(t *testing.T, open Opener) {
	s := open(t, store.Quota{})
	c := ctx(t)
	largest := `"` + strings.Repeat("v", proto.MaxValueBytes-2) + `"`
	set(t, s, guild, "largest", largest)
	if v := get(t, s, guild, "largest"); v != largest {
		t.Fatalf("largest value came back as %d bytes, want %d", len(v), len(largest))
	}
	over := `"` + strings.Repeat("v", proto.MaxValueBytes-1) + `"`
	pe := wantCode(t, s.KvSet(c, guild, "over", json.RawMessage(over)), proto.CodeInvalidKV)
	if !strings.Contains(pe.Message, strconv.Itoa(proto.MaxValueBytes)) {
		t.Errorf("message %q does not name the limit %d", pe.Message, proto.MaxValueBytes)
	}
	for name, v := range map[string]string{
		"empty":                   "",
		"truncated":               `{"a":`,
		"bare word":               `hello`,
		"two values":              `1 2`,
		"trailing comma":          `[1,]`,
		"invalid UTF-8 in string": "\"\xff\"",
		"raw control character":   "\"a\x01\"",
	} {
		t.Run(name, func(t *testing.T) {
			wantCode(t, s.KvSet(c, guild, "bad", json.RawMessage(v)), proto.CodeInvalidKV)
		})
	}
	equal(t, "keys", keys(t, s, guild, ""), []string{"largest"})
}

// testKVFindBounded: a store that is a BoundedFinder stops reading right
// after the item that takes the answer over maxBytes (as
// proto.KVItemsBound counts), and reads everything with 0 or a bound
// that holds.
func testKVFindBounded(t *testing.T, open Opener) {
	s := open(t, store.Quota{})
	bf, ok := s.(store.BoundedFinder)
	if !ok {
		t.Fatalf("%T is not a store.BoundedFinder: the master would read a whole find to refuse it", s)
	}
	c := ctx(t)
	v := `"` + strings.Repeat("v", 1000) + `"`
	for i := 0; i < 10; i++ {
		set(t, s, guild, "k"+strconv.Itoa(i), v)
	}
	set(t, s, user, "k", v) // another tenant's key counts for nothing
	all, err := s.KvFind(c, guild, "k")
	must(t, err)
	budget := proto.KVItemsBound(all[:3])
	items, over, err := bf.KvFindBounded(c, guild, "k", budget)
	must(t, err)
	if !over || len(items) != 4 || items[3].Key != "k3" {
		t.Fatalf("KvFindBounded(%d bytes) = %d items, over %v; want over after the 4th (k3)", budget, len(items), over)
	}
	for _, max := range []int{0, proto.KVItemsBound(all)} {
		items, over, err = bf.KvFindBounded(c, guild, "k", max)
		must(t, err)
		if over || len(items) != 10 {
			t.Fatalf("KvFindBounded(%d bytes) = %d items, over %v; want all 10, not over", max, len(items), over)
		}
	}
	// Every bound around every prefix of the answer, with keys whose JSON
	// takes more than their bytes: the items up to the first that takes
	// the answer over, and over; or all of them.
	set(t, s, guild, `k"\`+strings.Repeat(`"`, 300), `1`)
	set(t, s, guild, "k\x01"+strings.Repeat("\x02", 200), `[2]`)
	all, err = s.KvFind(c, guild, "k")
	must(t, err)
	for j := range all {
		for _, d := range []int{-1, 0, 1} {
			max := proto.KVItemsBound(all[:j]) + d
			if max <= 0 {
				continue
			}
			want := len(all)
			for k := range all {
				if proto.KVItemsBound(all[:k+1]) > max {
					want = k + 1
					break
				}
			}
			items, over, err := bf.KvFindBounded(c, guild, "k", max)
			must(t, err)
			if len(items) != want || over != (want < len(all) || proto.KVItemsBound(all) > max) {
				t.Fatalf("KvFindBounded(%d bytes) = %d items, over %v; want %d", max, len(items), over, want)
			}
		}
	}
}
