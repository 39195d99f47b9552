package proto

import "unicode/utf8"

// What travels in one Mesophyll frame is bounded by the frame limit
// (--mesophyll-max-frame). The values a tenant makes — a result, a KV
// batch, a template set — are checked against these bounds before they
// are sent, in both topologies alike, so that an oversized value is an
// error of that call and never a frame the peer refuses.

// FrameReserve is the part of a frame kept for the message around a value
// (its envelope, request id, error text): a value may use the frame limit
// minus FrameReserve.
const FrameReserve = 4 << 10

// MaxTemplateBytes is the longest code of one template.
const MaxTemplateBytes = 512 << 10

// ValueBudget is the most bytes of encoded value one frame of maxFrame
// bytes carries.
func ValueBudget(maxFrame int64) int {
	return int(max(maxFrame-FrameReserve, 0))
}

// JSONStringBound is an upper bound of the length of s encoded as a JSON
// string, quotes included, by encoding/json without HTML escaping (as
// Mesophyll encodes): a control character or an invalid byte may take 6
// bytes, U+2028 and U+2029 take 6.
func JSONStringBound(s string) int {
	n := 2
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c < 0x20:
				n += 6
			case c == '"' || c == '\\':
				n += 2
			default:
				n++
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			n += 6
		case r == '\u2028' || r == '\u2029':
			n += 6
		default:
			n += size
		}
		i += size
	}
	return n
}

// TemplatesBound is an upper bound of the encoded size of a template list
// as a store response carries it.
func TemplatesBound(tpls []Template) int {
	n := 2 // [ ]
	for i := range tpls {
		t := &tpls[i]
		// {"name":,"code":,"events":[],"updated_at":"<RFC 3339 nano>"},
		// is at most 81 bytes besides the strings.
		n += 96 + JSONStringBound(t.Name) + JSONStringBound(t.Code)
		for _, e := range t.Events {
			n += 1 + JSONStringBound(e)
		}
	}
	return n
}

// KVItemsBound is an upper bound of the encoded size of a list of KV items
// as a store response carries it: values are valid JSON, encoded compact,
// so never longer than stored.
func KVItemsBound(items []KVItem) int {
	n := 2
	for i := range items {
		// {"key":,"value":},
		n += 20 + JSONStringBound(items[i].Key) + len(items[i].Value)
	}
	return n
}
