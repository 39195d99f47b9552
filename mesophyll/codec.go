package mesophyll

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/templateworker/templateworker/proto"
)

// The hot messages — DispatchEvent one way, DispatchResponse the other —
// are encoded by hand and decoded by a fast path that accepts exactly the
// spelling the encoder writes; any other frame (another message, other
// whitespace or key order, an escaped string) goes through encoding/json.
// Either way the message is the same (FuzzDecodeFast checks it).

// encodeDispatchEvent encodes a DispatchEvent frame, as json.Marshal of
// proto.Message would (up to HTML escaping, which JSON does not need).
func encodeDispatchEvent(q *proto.DispatchEvent) ([]byte, error) {
	data := q.Event.Data
	if len(data) == 0 {
		data = proto.Value("null")
	} else if !json.Valid(data) {
		return nil, fmt.Errorf("event data is not valid JSON")
	}
	b := make([]byte, 0, 160+len(q.Event.Name)+len(data))
	b = append(b, `{"DispatchEvent":{"id":`...)
	b = q.ID.AppendJSON(b)
	b = append(b, `,"event":{"name":`...)
	b = appendString(b, q.Event.Name)
	b = append(b, `,"author":`...)
	if q.Event.Author == nil {
		b = append(b, "null"...)
	} else {
		b = appendString(b, *q.Event.Author)
	}
	b = append(b, `,"data":`...)
	b = append(b, data...)
	if q.Event.ID != "" {
		b = append(b, `,"id":`...)
		b = appendString(b, q.Event.ID)
	}
	b = append(b, '}')
	if q.ReqID != 0 {
		b = append(b, `,"req_id":`...)
		b = strconv.AppendUint(b, q.ReqID, 10)
	}
	if q.Seq != 0 {
		b = append(b, `,"seq":`...)
		b = strconv.AppendUint(b, q.Seq, 10)
	}
	if q.Window != 0 {
		b = append(b, `,"window":`...)
		b = strconv.AppendUint(b, q.Window, 10)
	}
	if q.Last {
		b = append(b, `,"last":true`...)
	}
	return append(b, "}}"...), nil
}

// appendString appends s as a JSON string, escaped as encoding/json does
// (invalid UTF-8 becomes U+FFFD) except that <, > and & stay as they are.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// encodeResponse encodes the DispatchResponse of a successful call with
// result res; ok is false when res is not valid JSON (responseFrame then
// reports that).
func encodeResponse(req uint64, res proto.Value) ([]byte, bool) {
	if len(res) == 0 {
		res = proto.Value("null")
	} else if !json.Valid(res) {
		return nil, false
	}
	b := make([]byte, 0, 48+len(res))
	b = append(b, `{"DispatchResponse":{"req_id":`...)
	b = strconv.AppendUint(b, req, 10)
	b = append(b, `,"result":`...)
	b = append(b, res...)
	return append(b, "}}"...), true
}

// decodeFast decodes frame into m if it is a DispatchEvent or a successful
// DispatchResponse spelled as the encoders above spell them, or a Batch of
// such messages as the writer joins them, and reports whether it did.
func decodeFast(frame []byte, m *proto.Message) bool {
	if rest, ok := bytes.CutPrefix(frame, []byte(`{"Batch":[`)); ok {
		return decodeBatchFast(rest, m)
	}
	return decodeOneFast(frame, m)
}

// decodeBatchFast decodes the elements of a Batch frame, rest being what
// follows its opening `{"Batch":[`, if every element is one decodeOneFast
// takes.
func decodeBatchFast(rest []byte, m *proto.Message) bool {
	var batch []proto.Message
	for {
		n := objectEnd(rest)
		if n < 0 {
			return false
		}
		batch = append(batch, proto.Message{})
		if !decodeOneFast(rest[:n], &batch[len(batch)-1]) {
			return false
		}
		switch rest = rest[n:]; {
		case bytes.Equal(rest, []byte("]}")):
			*m = proto.Message{Batch: batch}
			return true
		case len(rest) > 0 && rest[0] == ',':
			rest = rest[1:]
		default:
			return false
		}
	}
}

// objectEnd returns the length of the JSON object at the start of b, or
// -1 if b does not start with one that ends. It only matches braces and
// brackets outside strings; the caller checks what it delimits.
func objectEnd(b []byte) int {
	if len(b) == 0 || b[0] != '{' {
		return -1
	}
	depth, inString := 0, false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if inString {
			switch c {
			case '\\':
				i++
			case '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return i + 1
			}
		}
	}
	return -1
}

// decodeOneFast is decodeFast for a frame holding one message; it also
// takes a plain Ack ({"Ack":{"seq":N}}), which answers nowait events.
func decodeOneFast(frame []byte, m *proto.Message) bool {
	if rest, ok := bytes.CutPrefix(frame, []byte(`{"Ack":{"seq":`)); ok {
		seq, rest, ok := cutUint(rest)
		if !ok || !bytes.Equal(rest, []byte("}}")) {
			return false
		}
		*m = proto.Message{Ack: &proto.Ack{Seq: seq}}
		return true
	}
	if rest, ok := bytes.CutPrefix(frame, []byte(`{"DispatchResponse":{"req_id":`)); ok {
		req, rest, ok := cutUint(rest)
		if !ok {
			return false
		}
		rest, ok = bytes.CutPrefix(rest, []byte(`,"result":`))
		if !ok {
			return false
		}
		res, ok := bytes.CutSuffix(rest, []byte("}}"))
		if !ok || !proto.IsCanonicalValue(res) {
			return false
		}
		// The previous frame's DispatchResponse is reused: its reader
		// (Conn.handle) copied its fields out and keeps no pointer to it.
		dr := m.DispatchResponse
		if dr == nil {
			dr = new(proto.DispatchResponse)
		}
		*dr = proto.DispatchResponse{ReqID: req, Result: bytes.Clone(res)}
		*m = proto.Message{DispatchResponse: dr}
		return true
	}
	rest, ok := bytes.CutPrefix(frame, []byte(`{"DispatchEvent":{"id":`))
	if !ok {
		return false
	}
	end := bytes.IndexByte(rest, '}')
	if end < 0 {
		return false
	}
	var q proto.DispatchEvent
	if err := q.ID.UnmarshalJSON(rest[:end+1]); err != nil {
		return false
	}
	rest, ok = bytes.CutPrefix(rest[end+1:], []byte(`,"event":`))
	if !ok {
		return false
	}
	// rest is EVENT,"req_id":N}} or EVENT,"seq":N[,"window":W[,"last":true]]}}:
	// read it from the end.
	rest, ok = bytes.CutSuffix(rest, []byte("}}"))
	if !ok {
		return false
	}
	if r, ok := bytes.CutSuffix(rest, []byte(`,"last":true`)); ok {
		rest, q.Last = r, true
	}
	event, n, ok := cutTrailingUint(rest)
	if !ok {
		return false
	}
	if e, ok := bytes.CutSuffix(event, []byte(`,"window":`)); ok {
		q.Window = n
		if event, n, ok = cutTrailingUint(e); !ok {
			return false
		}
		if event, ok = bytes.CutSuffix(event, []byte(`,"seq":`)); !ok {
			return false
		}
		q.Seq = n
	} else if q.Last {
		return false
	} else if e, ok := bytes.CutSuffix(event, []byte(`,"req_id":`)); ok {
		event, q.ReqID = e, n
	} else if e, ok := bytes.CutSuffix(event, []byte(`,"seq":`)); ok {
		event, q.Seq = e, n
	} else {
		return false
	}
	if q.Event, ok = proto.ParseCanonicalEvent(event); !ok {
		return false
	}
	*m = proto.Message{DispatchEvent: &q}
	return true
}

// cutTrailingUint splits b into what precedes the unsigned number at its
// end and that number, which must be above 0.
func cutTrailingUint(b []byte) ([]byte, uint64, bool) {
	i := len(b)
	for i > 0 && b[i-1] >= '0' && b[i-1] <= '9' {
		i--
	}
	n, _, ok := cutUint(b[i:])
	if !ok || n == 0 {
		return nil, 0, false
	}
	return b[:i], n, true
}

// cutUint parses the decimal digits at the start of b (no sign, no
// leading zero, fits in 64 bits) and returns the rest.
func cutUint(b []byte) (uint64, []byte, bool) {
	i := 0
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	if i == 0 || i > 20 || (b[0] == '0' && i > 1) {
		return 0, nil, false
	}
	n, err := strconv.ParseUint(string(b[:i]), 10, 64)
	if err != nil {
		return 0, nil, false
	}
	return n, b[i:], true
}
