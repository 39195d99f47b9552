package proto

import "fmt"

// MaxJSONDepth is how deeply JSON a tenant's Lua sees may nest: a value
// inside more than MaxJSONDepth arrays or objects is refused, the same
// when the worker decodes an event's data as when the master accepts it.
const MaxJSONDepth = 200

// CheckJSONDepth returns an error naming MaxJSONDepth when valid JSON text
// b has a value inside more than MaxJSONDepth arrays or objects (an empty
// array or object counts as a value of its own level): the check the
// master makes of a nowait event's data before it answers 202, since the
// worker would refuse it at every delivery.
func CheckJSONDepth(b []byte) error {
	level := 0
	inString, escaped := false, false
	for _, c := range b {
		if inString {
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		}
		switch c {
		case ' ', '\t', '\n', '\r', ':', ',':
			continue
		case ']', '}':
			level--
			continue
		}
		// A value starts here (or goes on: a scalar's further bytes are
		// at its own level too).
		if level > MaxJSONDepth {
			return fmt.Errorf("JSON nested deeper than %d levels", MaxJSONDepth)
		}
		switch c {
		case '"':
			inString = true
		case '[', '{':
			level++
		}
	}
	return nil
}
