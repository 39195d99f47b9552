package mesophyll

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/templateworker/templateworker/proto"
)

func strPtr(s string) *string { return &s }

// codecEvents are DispatchEvents with the awkward parts: escapes, invalid
// UTF-8, U+2028, HTML characters, whitespace inside data, big ids.
var codecEvents = []proto.DispatchEvent{
	{ID: proto.GuildID(1), Event: proto.Event{Name: "Ping"}, ReqID: 7},
	{ID: proto.UserID(18446744073709551615), Event: proto.Event{Name: "Ping", Author: strPtr("u1"), Data: proto.Value(`{"a":[1,2,{"b":null}],"c":"}}"}`)}, Seq: 3},
	{ID: proto.GuildID(42), Event: proto.Event{Name: `quote " and \ backslash`, Author: strPtr("tab\there\nnl"), Data: proto.Value(`"x"`)}, ReqID: 1 << 60},
	{ID: proto.GuildID(42), Event: proto.Event{Name: "ctl\x01\x1f <html> & \u2028\u2029 é 日本", Data: proto.Value(` { "spaced" : [ 1 , 2 ] } `)}, ReqID: 9},
	{ID: proto.GuildID(42), Event: proto.Event{Name: "bad\xffutf8\xc3", Author: strPtr("\xed\xa0\x80")}, ReqID: 10},
	{ID: proto.GuildID(5), Event: proto.Event{Name: "Null", Data: proto.Value(`null`)}, ReqID: 11},
	{ID: proto.GuildID(5), Event: proto.Event{Name: "Big", Data: proto.Value(`{"s":"` + strings.Repeat("é\\\"", 500) + `"}`)}, Seq: 12},
}

// viaJSON decodes frame with encoding/json alone.
func viaJSON(t testing.TB, frame []byte) proto.Message {
	t.Helper()
	var m proto.Message
	if err := json.Unmarshal(frame, &m); err != nil {
		t.Fatalf("encoding/json cannot decode %s: %v", frame, err)
	}
	return m
}

func TestEncodeDispatchEventMatchesEncodingJSON(t *testing.T) {
	for _, q := range codecEvents {
		fast, err := encodeDispatchEvent(&q)
		if err != nil {
			t.Fatal(err)
		}
		slow, err := json.Marshal(proto.Message{DispatchEvent: &q})
		if err != nil {
			t.Fatal(err)
		}
		a, b := viaJSON(t, fast), viaJSON(t, slow)
		if !reflect.DeepEqual(normalize(a), normalize(b)) {
			t.Errorf("hand-encoded %s\ndecodes unlike encoding/json's %s", fast, slow)
		}
		// Without HTML characters and with compact data, the bytes match.
		if !strings.ContainsAny(q.Event.Name, "<>&") && json.Valid(q.Event.Data) && !strings.Contains(string(q.Event.Data), " ") &&
			utf8.ValidString(q.Event.Name) && !strings.ContainsAny(q.Event.Name, "\u2028\u2029") {
			if string(fast) != string(slow) {
				t.Errorf("hand-encoded %s\nencoding/json  %s", fast, slow)
			}
		}
		// Strings that need escaping take encoding/json's way back.
		plain := !strings.Contains(string(appendString(nil, q.Event.Name)), `\`) &&
			(q.Event.Author == nil || !strings.Contains(string(appendString(nil, *q.Event.Author)), `\`)) &&
			(len(q.Event.Data) == 0 || proto.IsCanonicalValue(q.Event.Data))
		var m proto.Message
		if ok := decodeFast(fast, &m); ok != plain {
			t.Errorf("decodeFast took (%v) the encoder's own frame %s", ok, fast)
		} else if ok && !reflect.DeepEqual(m, viaJSON(t, fast)) {
			t.Errorf("decodeFast(%s) = %+v, encoding/json says %+v", fast, m.DispatchEvent, viaJSON(t, fast).DispatchEvent)
		}
	}
	if _, err := encodeDispatchEvent(&proto.DispatchEvent{ID: proto.GuildID(1), Event: proto.Event{Name: "x", Data: proto.Value(`{"a":`)}}); err == nil {
		t.Error("invalid event data encoded")
	}
}

// normalize compacts the raw JSON of m so that whitespace does not count.
func normalize(m proto.Message) proto.Message {
	if q := m.DispatchEvent; q != nil {
		c := *q
		var buf strings.Builder
		_ = json.NewEncoder(&buf).Encode(json.RawMessage(c.Event.Data))
		c.Event.Data = proto.Value(strings.TrimSpace(buf.String()))
		m.DispatchEvent = &c
	}
	return m
}

// TestAckFrames: the hand-made Ack is encoding/json's, and the fast
// decoder takes it.
func TestAckFrames(t *testing.T) {
	c := &Client{}
	for _, seq := range []uint64{1, 42, 1<<64 - 1} {
		frame := c.ackFrame(&proto.DispatchEvent{Seq: seq}, nil)
		want, _ := json.Marshal(proto.Message{Ack: &proto.Ack{Seq: seq}})
		if string(frame) != string(want) {
			t.Errorf("ackFrame(%d) = %s, encoding/json writes %s", seq, frame, want)
		}
		var m proto.Message
		if !decodeFast(frame, &m) || m.Ack == nil || m.Ack.Seq != seq {
			t.Errorf("decodeFast(%s) = %+v", frame, m)
		}
	}
}

func TestResponseFrames(t *testing.T) {
	for _, res := range []string{`{"greet":"hi"}`, `null`, `[1,"}}",{"a":{}}]`, `"é\u2028"`, ``} {
		frame := responseFrame(77, proto.Value(res), nil)
		want := viaJSON(t, frame)
		if want.DispatchResponse == nil || want.DispatchResponse.ReqID != 77 {
			t.Fatalf("responseFrame: %s", frame)
		}
		var m proto.Message
		if !decodeFast(frame, &m) || !reflect.DeepEqual(m, want) {
			t.Errorf("decodeFast(%s) = %+v, encoding/json says %+v", frame, m.DispatchResponse, want.DispatchResponse)
		}
	}
	// An invalid result and an error take encoding/json's way.
	frame := responseFrame(5, proto.Value(`{"a":`), nil)
	if m := viaJSON(t, frame); m.DispatchResponse.Error == nil || m.DispatchResponse.Error.Code != proto.CodeInternal {
		t.Errorf("invalid result: %s", frame)
	}
	frame = responseFrame(6, nil, proto.Errorf(proto.CodeScriptError, "boom"))
	var m proto.Message
	if decodeFast(frame, &m) {
		t.Errorf("decodeFast took an error response: %s", frame)
	}
}

func TestDecodeFastLeavesOtherSpellingsToEncodingJSON(t *testing.T) {
	for _, frame := range []string{
		`{"DispatchEvent":{"id":{"type":"Guild","id":"1"},"event":{"name":"P","author":null,"data":1},"req_id":1,"seq":2}}`,
		`{"DispatchEvent":{"id":{"type":"Guild","id":"1"},"event":{"name":"P","author":null,"data":1},"req_id":0}}`,
		`{"DispatchEvent":{"id":{"type":"Guild","id":"1"},"event":{"name":"P","author":null,"data":1},"req_id":01}}`,
		`{"DispatchEvent":{"id":{"type":"Guild","id":"1"},"event":{"name":"P\u0041","author":null,"data":1},"req_id":1}}`,
		`{"DispatchEvent":{"id":{"type":"Guild","id":"1"},"event":{"name":"P","author":null,"data":1,"data":2},"req_id":1}}`,
		`{"DispatchEvent":{"id":{"type":"Guild","id":"1"},"event":{"name":"P","author":null,"data":1},"req_id":1},"Ack":{"seq":1}}`,
		`{"DispatchEvent":{"id":{"type":"Guild","id":"1"},"event":{"name":"P","author":null,"data":1}, "req_id":1}}`,
		`{"DispatchResponse":{"req_id":1,"result":1},"Ack":{"seq":2}}`,
		`{"DispatchResponse":{"req_id":1,"result":1,"error":{"code":"x","message":"y"}}}`,
		`{"DispatchResponse":{"req_id":1,"result":{"a":1}}} `,
		`{"Ack":{"seq":01}}`,
		`{"Ack":{"seq":1,"code":"cpu_limit"}}`,
		`{"Batch":[]}`,
		`{"Batch":[{"Ack":{"seq":1}},{"Heartbeat":{"tenants":1}}]}`,
		`{"Batch":[{"Ack":{"seq":1}}{"Ack":{"seq":2}}]}`,
		`{"Batch":[{"Ack":{"seq":1}},]}`,
		`{"Batch":[{"Ack":{"seq":1}}]} `,
		`{"Batch":[{"Batch":[{"Ack":{"seq":1}}]}]}`,
	} {
		var m proto.Message
		if decodeFast([]byte(frame), &m) {
			t.Errorf("decodeFast took %s", frame)
		}
	}
}

// FuzzDecodeFast checks that whatever decodeFast accepts, encoding/json
// accepts too, with the same message.
func FuzzDecodeFast(f *testing.F) {
	for _, q := range codecEvents {
		b, _ := encodeDispatchEvent(&q)
		f.Add(b)
	}
	f.Add(responseFrame(1, proto.Value(`{"a":[1,2]}`), nil))
	f.Add([]byte(`{"DispatchResponse":{"req_id":1,"result":null}}`))
	f.Add([]byte(`{"Ack":{"seq":3}}`))
	f.Add([]byte(`{"Batch":[{"DispatchResponse":{"req_id":1,"result":{"a":"}]"}}},{"Ack":{"seq":2}},{"DispatchResponse":{"req_id":3,"result":[1]}}]}`))
	f.Add([]byte(`{"Batch":[{"DispatchEvent":{"id":{"type":"Guild","id":"1"},"event":{"name":"P","author":null,"data":{"x":"\"{"}},"req_id":1}}]}`))
	f.Fuzz(func(t *testing.T, frame []byte) {
		var m proto.Message
		if !decodeFast(frame, &m) {
			return
		}
		var want proto.Message
		if err := json.Unmarshal(frame, &want); err != nil {
			t.Fatalf("decodeFast took %q, which encoding/json refuses: %v", frame, err)
		}
		if !reflect.DeepEqual(m, want) {
			t.Fatalf("decodeFast(%q) = %+v / %+v, encoding/json says %+v / %+v", frame, m.DispatchEvent, m.DispatchResponse, want.DispatchEvent, want.DispatchResponse)
		}
	})
}

// BenchmarkCodec compares the hand-written codec of the hot messages with
// encoding/json on a dispatch-sized frame.
func BenchmarkCodec(b *testing.B) {
	q := &proto.DispatchEvent{ID: proto.GuildID(268435456), Event: benchEvent, ReqID: 12345}
	event, _ := encodeDispatchEvent(q)
	resp := responseFrame(12345, proto.Value(`{"echo":{"hello":"ops"}}`), nil)
	for _, tc := range []struct {
		name string
		fn   func() error
	}{
		{"encode-event/hand", func() error { _, err := encodeDispatchEvent(q); return err }},
		{"encode-event/json", func() error { _, err := json.Marshal(proto.Message{DispatchEvent: q}); return err }},
		{"decode-event/fast", func() error { var m proto.Message; decodeFast(event, &m); return nil }},
		{"decode-event/json", func() error { var m proto.Message; return json.Unmarshal(event, &m) }},
		{"decode-response/fast", func() error { var m proto.Message; decodeFast(resp, &m); return nil }},
		{"decode-response/json", func() error { var m proto.Message; return json.Unmarshal(resp, &m) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := tc.fn(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestDecodeFastBatches(t *testing.T) {
	r1 := responseFrame(1, proto.Value(`{"a":"}]"}`), nil)
	r3 := responseFrame(3, proto.Value(`[1,{"b":"\\\"{"}]`), nil)
	frame := []byte(`{"Batch":[` + string(r1) + `,{"Ack":{"seq":2}},` + string(r3) + `]}`)
	var m proto.Message
	if !decodeFast(frame, &m) {
		t.Fatalf("decodeFast refused %s", frame)
	}
	if want := viaJSON(t, frame); !reflect.DeepEqual(m, want) {
		t.Fatalf("decodeFast(%s) = %s, encoding/json says %s", frame, mustJSON(m), mustJSON(want))
	}
}
