package proto

import (
	"bytes"
	"encoding/json"
	"math/rand"
	"testing"
	"time"
)

// encodeNoHTML encodes v as Mesophyll does.
func encodeNoHTML(t *testing.T, v any) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

func TestSizeBoundsHoldForAnyText(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	alphabet := []string{"a", "<", ">", "&", "\"", "\\", "\n", "\x01", "\x00", "\xff", "\u2028", "é", "😀"}
	text := func() string {
		var b bytes.Buffer
		for n := r.Intn(200); n > 0; n-- {
			b.WriteString(alphabet[r.Intn(len(alphabet))])
		}
		return b.String()
	}
	for i := 0; i < 500; i++ {
		s := text()
		if got, bound := len(encodeNoHTML(t, s)), JSONStringBound(s); got > bound {
			t.Fatalf("%q: encoded %d bytes, bound %d", s, got, bound)
		}
		tpls := []Template{{Name: "n" + s[:min(len(s), 3)], Code: s, Events: []string{text()}, UpdatedAt: time.Now()}, {Name: "x", Code: text()}}
		if got, bound := len(encodeNoHTML(t, tpls)), TemplatesBound(tpls); got > bound {
			t.Fatalf("templates: encoded %d bytes, bound %d", got, bound)
		}
		val, _ := json.Marshal(s)
		items := []KVItem{{Key: s, Value: val}, {Key: "k", Value: json.RawMessage(`{"a": [1, 2]}`)}}
		if got, bound := len(encodeNoHTML(t, items)), KVItemsBound(items); got > bound {
			t.Fatalf("kv items: encoded %d bytes, bound %d", got, bound)
		}
	}
	if ValueBudget(4<<20) != 4<<20-FrameReserve || ValueBudget(10) != 0 {
		t.Fatal("ValueBudget")
	}
}
