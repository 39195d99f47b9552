package proto

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

func TestParseCanonicalEvent(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{`{"name":"Ping","author":null,"data":{"who":"ops"}}`, true},
		{`{"name":"Ping","author":"42","data":[1,"}"]}`, true},
		{`{"name":"Ping","author":null,"data":null}`, true},
		{`{"name":"é日本","author":null,"data":"x"}`, true},
		{`{"name":"Ping","data":{},"author":null}`, false},              // other order
		{`{"name":"Ping","author":null,"data": {}}`, false},             // whitespace
		{`{"name":"P\"ing","author":null,"data":{}}`, false},            // escape
		{`{"name":"Ping","author":null,"data":{},"x":1}`, false},        // unknown field
		{`{"name":"Ping","author":null,"data":{}}{}`, false},            // trailing data
		{`{"name":"Ping","author":null,"data":{"a":}}`, false},          // invalid
		{`{"name":"Ping","author":null}`, false},                        // no data
		{`{"name":"Pi` + "\xff" + `ng","author":null,"data":1}`, false}, // invalid UTF-8
	} {
		ev, ok := ParseCanonicalEvent([]byte(tc.in))
		if ok != tc.ok {
			t.Errorf("%s: ok %v, want %v", tc.in, ok, tc.ok)
			continue
		}
		if ok {
			var want Event
			if err := json.Unmarshal([]byte(tc.in), &want); err != nil || !reflect.DeepEqual(ev, want) {
				t.Errorf("%s: %+v, encoding/json says %+v (%v)", tc.in, ev, want, err)
			}
		}
	}
}

// FuzzParseCanonicalEvent checks that whatever ParseCanonicalEvent takes,
// a strict decoder (unknown fields refused, nothing after the object)
// takes too, with the same Event.
func FuzzParseCanonicalEvent(f *testing.F) {
	f.Add([]byte(`{"name":"Ping","author":null,"data":{"who":"ops"}}`))
	f.Add([]byte(`{"name":"Ping","author":"1","data":[1,2,{"a":"b"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, ok := ParseCanonicalEvent(b)
		if !ok {
			return
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		var want Event
		if err := dec.Decode(&want); err != nil {
			t.Fatalf("took %q, which a strict decoder refuses: %v", b, err)
		}
		if _, err := dec.Token(); err == nil {
			t.Fatalf("took %q, which has data after the object", b)
		}
		if !reflect.DeepEqual(ev, want) {
			t.Fatalf("%q: %+v, encoding/json says %+v", b, ev, want)
		}
	})
}

// TestParseCanonicalEventID: the queue's event id after the data is read
// by the fast path, and never confused with an "id" inside the data.
func TestParseCanonicalEventID(t *testing.T) {
	for _, c := range []struct {
		in       string
		id, data string
	}{
		{`{"name":"N","author":null,"data":{},"id":"12"}`, "12", `{}`},
		{`{"name":"N","author":"a","data":{"a":1,"id":"5"},"id":"7"}`, "7", `{"a":1,"id":"5"}`},
		{`{"name":"N","author":null,"data":{"a":1,"id":"5"}}`, "", `{"a":1,"id":"5"}`},
		{`{"name":"N","author":null,"data":"x,\"id\":\"5"}`, "", `"x,\"id\":\"5"`},
	} {
		ev, ok := ParseCanonicalEvent([]byte(c.in))
		if !ok || ev.ID != c.id || string(ev.Data) != c.data {
			t.Errorf("%s: %+v %v, want id %q data %s", c.in, ev, ok, c.id, c.data)
		}
		var want Event
		if err := json.Unmarshal([]byte(c.in), &want); err != nil || want.ID != ev.ID || string(want.Data) != string(ev.Data) {
			t.Errorf("%s: encoding/json reads %+v (%v), the fast path %+v", c.in, want, err, ev)
		}
	}
}
