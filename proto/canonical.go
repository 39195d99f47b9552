package proto

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

// Fast paths for the hot messages. ParseCanonicalEvent and
// IsCanonicalValue accept exactly the spelling json.Marshal writes for
// plain content — keys in order, no whitespace, strings without escapes —
// and report false for anything else, which the caller then decodes with
// encoding/json. Whatever they accept, encoding/json decodes to the same
// Event or Value.

// ParseCanonicalEvent parses {"name":"N","author":null|"A","data":D} and
// {"name":"N","author":null|"A","data":D,"id":"DIGITS"}.
func ParseCanonicalEvent(b []byte) (Event, bool) {
	var ev Event
	rest, ok := bytes.CutPrefix(b, []byte(`{"name":`))
	if !ok {
		return Event{}, false
	}
	if ev.Name, rest, ok = cutPlainString(rest); !ok {
		return Event{}, false
	}
	if rest, ok = bytes.CutPrefix(rest, []byte(`,"author":`)); !ok {
		return Event{}, false
	}
	if after, isNull := bytes.CutPrefix(rest, []byte("null")); isNull {
		rest = after
	} else {
		var author string
		if author, rest, ok = cutPlainString(rest); !ok {
			return Event{}, false
		}
		ev.Author = &author
	}
	if rest, ok = bytes.CutPrefix(rest, []byte(`,"data":`)); !ok {
		return Event{}, false
	}
	data, ok := bytes.CutSuffix(rest, []byte("}"))
	if !ok {
		return Event{}, false
	}
	if d, id, ok := cutEventID(data); ok && IsCanonicalValue(d) {
		ev.Data, ev.ID = bytes.Clone(d), id
		return ev, true
	}
	if !IsCanonicalValue(data) {
		return Event{}, false
	}
	ev.Data = bytes.Clone(data)
	return ev, true
}

// cutEventID splits D,"id":"DIGITS" into D and DIGITS.
func cutEventID(b []byte) ([]byte, string, bool) {
	b, ok := bytes.CutSuffix(b, []byte(`"`))
	if !ok {
		return nil, "", false
	}
	i := len(b)
	for i > 0 && b[i-1] >= '0' && b[i-1] <= '9' {
		i--
	}
	if i == len(b) {
		return nil, "", false
	}
	d, ok := bytes.CutSuffix(b[:i], []byte(`,"id":"`))
	if !ok {
		return nil, "", false
	}
	return d, string(b[i:]), true
}

// IsCanonicalValue reports whether b is one JSON value with no whitespace
// around it (encoding/json would hand a Value the trimmed text).
func IsCanonicalValue(b []byte) bool {
	if len(b) == 0 || isSpace(b[0]) || isSpace(b[len(b)-1]) {
		return false
	}
	return json.Valid(b)
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

// cutPlainString parses a JSON string at the start of b that needs no
// unescaping (valid UTF-8, no backslash, no control character) and returns
// the rest.
func cutPlainString(b []byte) (string, []byte, bool) {
	if len(b) == 0 || b[0] != '"' {
		return "", nil, false
	}
	for i := 1; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			s := b[1:i]
			if !utf8.Valid(s) {
				return "", nil, false
			}
			return string(s), b[i+1:], true
		case c == '\\' || c < 0x20:
			return "", nil, false
		}
	}
	return "", nil, false
}
