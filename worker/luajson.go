package worker

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"

	lua "github.com/Shopify/go-lua"

	"github.com/templateworker/templateworker/proto"
)

// Lua ↔ JSON conversion, used for event data, template results, KV values
// and the json library:
//
//   - JSON null at the top level is nil; nested null (in arrays and objects)
//     is the sentinel json.null so that positions and keys survive.
//   - arrays ↔ sequences (keys 1..n); objects ↔ tables with string keys;
//     an empty table encodes as {} unless marked with json.array.
//   - numbers are float64 (Lua 5.2): integers above 2^53 lose precision and
//     must travel as strings. NaN and ±Inf cannot be encoded.
//   - cycles, functions, userdata and threads are encoding errors; nesting is
//     bounded by maxJSONDepth. Keys other than strings and numbers are
//     errors naming their type, and two keys that become the same object
//     key (1 and "1") are an error naming both: never a duplicate key.
//   - the work is charged to the call (see jsonmeter.go): encoding and
//     decoding end with the call's cpu_limit or timeout like Lua code.

// maxJSONDepth bounds nesting in both directions, so hostile input cannot
// exhaust the Go stack.
const maxJSONDepth = proto.MaxJSONDepth

// jsonNull is the light userdata behind json.null.
type jsonNullType struct{}

var jsonNull = &jsonNullType{}

// arrayMarkerKey is the registry key of the metatable json.array sets.
const arrayMarkerKey = "templateworker.json.array"

// markArray sets the array marker metatable on the table on top of the
// stack, creating the metatable on the VM's first use (most VMs never
// need it).
func markArray(l *lua.State) {
	lua.NewMetaTable(l, arrayMarkerKey)
	l.SetMetaTable(-2)
}

// encoder turns Lua values into JSON.
type encoder struct {
	l        *lua.State
	buf      []byte
	visiting map[any]bool
	maxLen   int // 0 = unlimited
	m        jsonMeter
}

// errTooLong is returned when the encoding passes maxLen.
var errTooLong = errors.New("JSON text exceeds the string limit")

// encodeJSON encodes the Lua value at index. maxLen bounds the output size
// (0 = unlimited); charge, if not nil, is told the steps of work done and
// ends the encoding with its error.
func encodeJSON(l *lua.State, index int, maxLen int, charge func(steps int) error) ([]byte, error) {
	e := encoder{l: l, maxLen: maxLen, m: jsonMeter{charge: charge}}
	if err := e.encode(l.AbsIndex(index), 0); err != nil {
		return nil, err
	}
	if err := e.m.flush(); err != nil {
		return nil, err
	}
	return e.buf, nil
}

func (e *encoder) encode(idx, depth int) error {
	l := e.l
	if e.maxLen > 0 && len(e.buf) > e.maxLen {
		return errTooLong
	}
	if err := e.m.step(stepsPerValue); err != nil {
		return err
	}
	switch l.TypeOf(idx) {
	case lua.TypeNil, lua.TypeNone:
		e.buf = append(e.buf, "null"...)
	case lua.TypeBoolean:
		e.buf = strconv.AppendBool(e.buf, l.ToBoolean(idx))
	case lua.TypeNumber:
		f, _ := l.ToNumber(idx)
		return e.number(f)
	case lua.TypeString:
		s, _ := l.ToString(idx)
		return e.str(s)
	case lua.TypeLightUserData:
		if l.ToUserData(idx) == jsonNull {
			e.buf = append(e.buf, "null"...)
			return nil
		}
		return errors.New("cannot encode a userdata value as JSON")
	case lua.TypeTable:
		return e.table(idx, depth)
	default:
		return fmt.Errorf("cannot encode a %s value as JSON", lua.TypeNameOf(l, idx))
	}
	return nil
}

func (e *encoder) number(f float64) error {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return fmt.Errorf("cannot encode %v as JSON", f)
	}
	if f == math.Trunc(f) && math.Abs(f) < 1e21 {
		// Integers print without exponent, like JavaScript does.
		e.buf = strconv.AppendFloat(e.buf, f, 'f', -1, 64)
		return nil
	}
	e.buf = strconv.AppendFloat(e.buf, f, 'g', -1, 64)
	return nil
}

// str appends s as a JSON string, charging its length before the work.
func (e *encoder) str(s string) error {
	if err := e.m.step(len(s) / bytesPerStep); err != nil {
		return err
	}
	if utf8.ValidString(s) && !needsEscape(s) {
		e.buf = append(e.buf, '"')
		e.buf = append(e.buf, s...)
		e.buf = append(e.buf, '"')
		return nil
	}
	if err := e.m.step(len(s) / escapedBytesPerStep); err != nil {
		return err
	}
	b, _ := json.Marshal(s) // replaces invalid UTF-8 with U+FFFD
	e.buf = append(e.buf, b...)
	return nil
}

func needsEscape(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' || c >= 0x80 {
			return true
		}
	}
	return false
}

func (e *encoder) table(idx, depth int) error {
	l := e.l
	if depth >= maxJSONDepth {
		return fmt.Errorf("cannot encode a table nested deeper than %d levels", maxJSONDepth)
	}
	ptr := l.ToValue(idx)
	if e.visiting == nil {
		e.visiting = make(map[any]bool)
	}
	if e.visiting[ptr] {
		return errors.New("cannot encode a cyclic table as JSON")
	}
	e.visiting[ptr] = true
	defer delete(e.visiting, ptr)
	if !l.CheckStack(4) {
		return errors.New("table too deep for the Lua stack")
	}
	keys, n, err := e.keys(idx)
	if err != nil {
		return err
	}
	if len(keys) == 0 {
		if isMarkedArray(l, idx) {
			e.buf = append(e.buf, "[]"...)
		} else {
			e.buf = append(e.buf, "{}"...)
		}
		return nil
	}
	if n == len(keys) {
		e.buf = append(e.buf, '[')
		for i := 1; i <= n; i++ {
			if i > 1 {
				e.buf = append(e.buf, ',')
			}
			l.RawGetInt(idx, i)
			err := e.encode(l.AbsIndex(-1), depth+1)
			l.Pop(1)
			if err != nil {
				return err
			}
		}
		e.buf = append(e.buf, ']')
		return nil
	}
	return e.object(idx, depth, keys)
}

func isMarkedArray(l *lua.State, idx int) bool {
	if !l.MetaTable(idx) {
		return false
	}
	lua.MetaTableNamed(l, arrayMarkerKey)
	same := l.RawEqual(-1, -2)
	l.Pop(2)
	return same
}
