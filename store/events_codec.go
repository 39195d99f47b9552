package store

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/templateworker/templateworker/proto"
)

// encodeEvent is the JSON an event is kept as (without its ID: the row's
// seq is the id).
func encodeEvent(ev proto.Event) (string, error) {
	ev.ID = ""
	if len(ev.Data) > 0 && !json.Valid(ev.Data) {
		return "", proto.Errorf(proto.CodeBadRequest, "event data is not valid JSON")
	}
	if s, ok := appendPlainEvent(ev); ok {
		return s, nil
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return "", fmt.Errorf("encode event: %w", err)
	}
	return string(b), nil
}

// appendPlainEvent writes, without reflection, what json.Marshal writes
// for ev (valid data, no ID) when that is its bytes verbatim: name and
// author of printable ASCII that json.Marshal does not escape, and data
// (non-empty) that its compaction leaves alone (no whitespace, no
// character it escapes). ok is false for anything else.
func appendPlainEvent(ev proto.Event) (string, bool) {
	if len(ev.Data) == 0 || !plainJSON(ev.Name, false) || (ev.Author != nil && !plainJSON(*ev.Author, false)) || !plainJSON(string(ev.Data), true) {
		return "", false
	}
	n := len(`{"name":"","author":null,"data":}`) + len(ev.Name) + len(ev.Data)
	if ev.Author != nil {
		n += len(*ev.Author) + 2
	}
	var b strings.Builder
	b.Grow(n)
	b.WriteString(`{"name":"`)
	b.WriteString(ev.Name)
	b.WriteString(`","author":`)
	if ev.Author == nil {
		b.WriteString("null")
	} else {
		b.WriteByte('"')
		b.WriteString(*ev.Author)
		b.WriteByte('"')
	}
	b.WriteString(`,"data":`)
	b.Write(ev.Data)
	b.WriteByte('}')
	return b.String(), true
}

// plainJSON reports whether s is of printable ASCII that json.Marshal
// keeps as is: no character it escapes in a string (<, >, &, and, when
// not data, the quote and backslash) and, in data (JSON text already),
// no space that its compaction might remove.
func plainJSON(s string, data bool) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < ' ' || c >= 0x7f || c == '<' || c == '>' || c == '&' {
			return false
		}
		if data && c == ' ' || !data && (c == '"' || c == '\\') {
			return false
		}
	}
	return true
}

// decodeEvent parses what encodeEvent wrote.
func decodeEvent(s string) (proto.Event, error) {
	if ev, ok := proto.ParseCanonicalEvent([]byte(s)); ok {
		return ev, nil
	}
	var ev proto.Event
	if err := json.Unmarshal([]byte(s), &ev); err != nil {
		return ev, fmt.Errorf("decode stored event: %w", err)
	}
	return ev, nil
}

// encodeError is the JSON of a delivery error, "" for none.
func encodeError(e *proto.Error) string {
	if e == nil {
		return ""
	}
	b, _ := json.Marshal(proto.Error{Code: e.Code, Message: e.Message})
	return string(b)
}

// decodeError parses what encodeError wrote; nil for "".
func decodeError(s string) *proto.Error {
	if s == "" {
		return nil
	}
	var e proto.Error
	if err := json.Unmarshal([]byte(s), &e); err != nil {
		return &proto.Error{Code: proto.CodeInternal, Message: s}
	}
	return &e
}

// micros converts a time to the microseconds SQLite keeps; zero stays 0.
func micros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

// fromMicros converts back; 0 is the zero time.
func fromMicros(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return time.UnixMicro(us).UTC()
}

// eventRow is what an EventRecord adds to the events table besides its
// times: its tenant's kind and its encoded event, checked before the
// transaction starts.
type eventRow struct {
	kind string
	ev   string
}

// eventRows checks and encodes the records of a commit.
func eventRows(add []EventRecord) ([]eventRow, error) {
	rows := make([]eventRow, len(add))
	for i, r := range add {
		kind, err := kindName(r.Tenant.Kind)
		if err != nil {
			return nil, err
		}
		ev, err := encodeEvent(r.Event)
		if err != nil {
			return nil, err
		}
		rows[i] = eventRow{kind, ev}
	}
	return rows, nil
}
