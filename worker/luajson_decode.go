package worker

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"

	lua "github.com/Shopify/go-lua"
)

// JSON → Lua. The text is checked with json.Valid first (its length
// charged before), then walked once,
// pushing Lua values as it goes: no intermediate Go values, so decoding
// event data (done on every dispatch) costs a few allocations, not one per
// JSON value. Strings with escapes or invalid UTF-8 are decoded by
// encoding/json, so both paths give the same strings.

// pushJSON decodes b and pushes it on the Lua stack (nil for empty input or
// a top-level null). charge, if not nil, is told the steps of work done and
// ends the decoding with its error. On error nothing is left on the stack.
func pushJSON(l *lua.State, b []byte, charge func(steps int) error) error {
	d := jsonDecoder{l: l, b: b, m: jsonMeter{charge: charge}}
	d.space()
	if d.i == len(b) {
		l.PushNil()
		return nil
	}
	if err := d.m.step(len(b) / validateBytesPerStep); err != nil {
		return err
	}
	if err := d.m.flush(); err != nil {
		return err
	}
	if !json.Valid(b) {
		var v any
		err := json.Unmarshal(b, &v)
		if err == nil { // cannot happen: Valid and Unmarshal agree
			err = errors.New("malformed JSON")
		}
		return fmt.Errorf("invalid JSON: %w", err)
	}
	top := l.Top()
	if d.b[d.i] == 'n' {
		l.PushNil()
		return nil
	}
	if err := d.value(0); err != nil {
		l.SetTop(top)
		return err
	}
	if err := d.m.flush(); err != nil {
		l.SetTop(top)
		return err
	}
	return nil
}

// jsonDecoder walks valid JSON text.
type jsonDecoder struct {
	l *lua.State
	b []byte
	i int
	m jsonMeter
}

func (d *jsonDecoder) space() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// value pushes the value at d.i; nested null is json.null.
func (d *jsonDecoder) value(depth int) error {
	if depth > maxJSONDepth {
		return fmt.Errorf("JSON nested deeper than %d levels", maxJSONDepth)
	}
	l := d.l
	if !l.CheckStack(3) {
		return errors.New("JSON too deep for the Lua stack")
	}
	if err := d.m.step(stepsPerValue); err != nil {
		return err
	}
	d.space()
	switch c := d.b[d.i]; c {
	case '{':
		return d.object(depth)
	case '[':
		return d.array(depth)
	case '"':
		s, err := d.str()
		if err != nil {
			return err
		}
		l.PushString(s)
	case 't':
		d.i += len("true")
		l.PushBoolean(true)
	case 'f':
		d.i += len("false")
		l.PushBoolean(false)
	case 'n':
		d.i += len("null")
		l.PushLightUserData(jsonNull)
	default:
		start := d.i
		for d.i < len(d.b) {
			c := d.b[d.i]
			if (c < '0' || c > '9') && c != '-' && c != '+' && c != '.' && c != 'e' && c != 'E' {
				break
			}
			d.i++
		}
		f, err := strconv.ParseFloat(string(d.b[start:d.i]), 64)
		if err != nil && !errors.Is(err, strconv.ErrRange) {
			return fmt.Errorf("invalid JSON number %s", d.b[start:d.i])
		}
		l.PushNumber(f)
	}
	return nil
}

func (d *jsonDecoder) array(depth int) error {
	l := d.l
	d.i++ // [
	l.NewTable()
	n := 0
	for {
		d.space()
		if d.b[d.i] == ']' {
			d.i++
			break
		}
		if d.b[d.i] == ',' {
			d.i++
		}
		if err := d.value(depth + 1); err != nil {
			return err
		}
		n++
		l.RawSetInt(-2, n)
	}
	if n == 0 {
		markArray(l)
	}
	return nil
}

func (d *jsonDecoder) object(depth int) error {
	l := d.l
	d.i++ // {
	l.NewTable()
	for {
		d.space()
		switch d.b[d.i] {
		case '}':
			d.i++
			return nil
		case ',':
			d.i++
			d.space()
		}
		k, err := d.str()
		if err != nil {
			return err
		}
		if err := d.m.step(stepsPerKey); err != nil {
			return err
		}
		l.PushString(k)
		d.space()
		d.i++ // :
		if err := d.value(depth + 1); err != nil {
			return err
		}
		l.RawSet(-3)
	}
}

// str returns the string whose opening quote is at d.i.
func (d *jsonDecoder) str() (string, error) {
	start := d.i
	d.i++
	plain := true
	for d.b[d.i] != '"' {
		if d.b[d.i] == '\\' {
			plain = false
			d.i++
		}
		d.i++
	}
	d.i++
	raw := d.b[start+1 : d.i-1]
	if plain && utf8.Valid(raw) {
		return string(raw), d.m.step(len(raw) / bytesPerStep)
	}
	if err := d.m.step(len(raw) / escapedBytesPerStep); err != nil {
		return "", err
	}
	// Escapes and invalid UTF-8 (replaced by U+FFFD) as encoding/json does.
	var s string
	if err := json.Unmarshal(d.b[start:d.i], &s); err != nil {
		return "", fmt.Errorf("invalid JSON string: %w", err)
	}
	return s, nil
}
