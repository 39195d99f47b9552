package store

import (
	"encoding/json"
	"testing"

	"github.com/templateworker/templateworker/proto"
)

// TestEncodeEventIsMarshal holds encodeEvent's hand-written spelling to
// what json.Marshal writes, on plain events and on every kind it must
// leave to json.Marshal (escapes, whitespace, non-ASCII).
func TestEncodeEventIsMarshal(t *testing.T) {
	str := func(s string) *string { return &s }
	for _, ev := range []proto.Event{
		{Name: "Ping", Data: proto.Value(`{"who":"ops"}`)},
		{Name: "Ping", Author: str("123"), Data: proto.Value(`[1,2,{"a":null}]`)},
		{Name: "Member Join", Author: str(""), Data: proto.Value(`"x"`)},
		{Name: "Ping", Data: proto.Value(`{"who": "a b"}`)},
		{Name: "Ping", Data: proto.Value("{\"a\":\n1}")},
		{Name: "P<i>ng&", Data: proto.Value(`1`)},
		{Name: "Ping", Data: proto.Value(`"<b>&amp;"`)},
		{Name: `Pi"ng\`, Author: str(`a"b`), Data: proto.Value(`true`)},
		{Name: "Pïng", Author: str("é"), Data: proto.Value(`"é\u2028"`)},
		{Name: "Ping", Data: proto.Value("\"\u2028\"")},
		{Name: "Ping\x01", Data: proto.Value(`{}`)},
		{Name: "Ping", Data: nil},
		{Name: "Ping", Data: proto.Value(`null`), ID: "42"},
	} {
		got, err := encodeEvent(ev)
		if err != nil {
			t.Fatalf("%+v: %v", ev, err)
		}
		ev.ID = ""
		want, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		if got != string(want) {
			t.Errorf("encodeEvent(%+v) = %s, json.Marshal %s", ev, got, want)
		}
		back, err := decodeEvent(got)
		if err != nil || back.Name != ev.Name {
			t.Errorf("decodeEvent(%s) = %+v, %v", got, back, err)
		}
	}
}
