package mesophyll

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/templateworker/templateworker/proto"
)

// A windowed DispatchEvent encodes as encoding/json would, and the fast
// decoder reads its window and last flag.
func TestWindowedDispatchEventCodec(t *testing.T) {
	author := "u"
	for _, q := range []proto.DispatchEvent{
		{ID: proto.GuildID(1), Event: proto.Event{Name: "Ping", Data: proto.Value(`{"a":1}`), ID: "41"}, Seq: 5, Window: 2},
		{ID: proto.GuildID(1), Event: proto.Event{Name: "Ping", Author: &author, Data: proto.Value(`{}`)}, Seq: 6, Window: 2, Last: true},
		{ID: proto.GuildID(3), Event: proto.Event{Name: "Ping", Data: proto.Value(`1`)}, Seq: 7},
	} {
		frame, err := encodeDispatchEvent(&q)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(proto.Message{DispatchEvent: &q})
		if string(frame) != string(want) {
			t.Fatalf("encoded %s, encoding/json %s", frame, want)
		}
		var m proto.Message
		if !decodeFast(frame, &m) {
			t.Fatalf("fast decoder refused %s", frame)
		}
		if !reflect.DeepEqual(*m.DispatchEvent, q) {
			t.Fatalf("decoded %+v, want %+v", *m.DispatchEvent, q)
		}
	}
	for _, bad := range []string{
		`{"DispatchEvent":{"id":{"type":"Guild","id":"1"},"event":{"name":"P","author":null,"data":{}},"req_id":3,"last":true}}`,
		`{"DispatchEvent":{"id":{"type":"Guild","id":"1"},"event":{"name":"P","author":null,"data":{}},"window":3}}`,
	} {
		var m proto.Message
		if decodeFast([]byte(bad), &m) {
			t.Fatalf("fast decoder took %s as %+v", bad, m.DispatchEvent)
		}
	}
}

// The worker keeps at most one window per tenant, and none after its
// last frame.
func TestWindowsBounded(t *testing.T) {
	var ws windows
	a, b := proto.GuildID(1), proto.GuildID(2)
	w1 := ws.of(&proto.DispatchEvent{ID: a, Seq: 1, Window: 1})
	if ws.of(&proto.DispatchEvent{ID: a, Seq: 2, Window: 1}) != w1 {
		t.Fatal("a window's second frame got another record")
	}
	w1.stopped.Store(true)
	w2 := ws.of(&proto.DispatchEvent{ID: a, Seq: 3, Window: 2})
	if w2 == w1 || w2.stopped.Load() {
		t.Fatal("a new window kept the failed one's record")
	}
	ws.of(&proto.DispatchEvent{ID: b, Seq: 4, Window: 3, Last: true})
	if ws.of(&proto.DispatchEvent{ID: a, Seq: 5}) != nil {
		t.Fatal("an event without a window got one")
	}
	if len(ws.open) != 1 {
		t.Fatalf("%d windows open, want 1 (a's second)", len(ws.open))
	}
	ws.of(&proto.DispatchEvent{ID: a, Seq: 6, Window: 2, Last: true})
	if len(ws.open) != 0 {
		t.Fatalf("%d windows open after their last frames", len(ws.open))
	}
}
