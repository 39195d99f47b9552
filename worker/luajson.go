package worker

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"unicode/utf8"

	lua "github.com/Shopify/go-lua"
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
//     bounded by maxJSONDepth.

// maxJSONDepth bounds nesting in both directions, so hostile input cannot
// exhaust the Go stack.
const maxJSONDepth = 200

// jsonNull is the light userdata behind json.null.
type jsonNullType struct{}

var jsonNull = &jsonNullType{}

// arrayMarkerKey is the registry key of the metatable json.array sets.
const arrayMarkerKey = "templateworker.json.array"

// encoder turns Lua values into JSON.
type encoder struct {
	l        *lua.State
	buf      []byte
	visiting map[any]bool
	maxLen   int // 0 = unlimited
}

// errTooLong is returned when the encoding passes maxLen.
var errTooLong = errors.New("JSON text exceeds the string limit")

// encodeJSON encodes the Lua value at index. maxLen bounds the output size
// (0 = unlimited).
func encodeJSON(l *lua.State, index int, maxLen int) ([]byte, error) {
	e := encoder{l: l, maxLen: maxLen}
	if err := e.encode(l.AbsIndex(index), 0); err != nil {
		return nil, err
	}
	return e.buf, nil
}

func (e *encoder) encode(idx, depth int) error {
	l := e.l
	if e.maxLen > 0 && len(e.buf) > e.maxLen {
		return errTooLong
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
		e.str(s)
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

func (e *encoder) str(s string) {
	if utf8.ValidString(s) && !needsEscape(s) {
		e.buf = append(e.buf, '"')
		e.buf = append(e.buf, s...)
		e.buf = append(e.buf, '"')
		return
	}
	b, _ := json.Marshal(s) // replaces invalid UTF-8 with U+FFFD
	e.buf = append(e.buf, b...)
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

	// Classify: count keys, detect a sequence 1..n.
	n, count, stringKeys := 0, 0, true
	l.PushNil()
	for l.Next(idx) {
		count++
		switch l.TypeOf(-2) {
		case lua.TypeNumber:
			stringKeys = false
			if k, _ := l.ToNumber(-2); k >= 1 && k == math.Trunc(k) && int(k) > n {
				n = int(k)
			}
		case lua.TypeString:
		default:
			l.Pop(2)
			return fmt.Errorf("cannot encode a table with %s keys as JSON", lua.TypeNameOf(l, -2))
		}
		l.Pop(1)
	}
	if count == 0 {
		if isMarkedArray(l, idx) {
			e.buf = append(e.buf, "[]"...)
		} else {
			e.buf = append(e.buf, "{}"...)
		}
		return nil
	}
	if n == count {
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
	// An object: keys sorted so that the output is deterministic. Number
	// keys become their decimal strings.
	keys := make([]string, 0, count)
	l.PushNil()
	for l.Next(idx) {
		l.Pop(1)
		l.PushValue(-1)
		k, _ := l.ToString(-1) // converts numbers on the copy only
		l.Pop(1)
		keys = append(keys, k)
	}
	_ = stringKeys
	sort.Strings(keys)
	e.buf = append(e.buf, '{')
	for i, k := range keys {
		if i > 0 {
			e.buf = append(e.buf, ',')
		}
		e.str(k)
		e.buf = append(e.buf, ':')
		l.PushString(k)
		l.RawGet(idx)
		if l.IsNil(-1) { // a number key: look it up as a number
			l.Pop(1)
			f, _ := strconv.ParseFloat(k, 64)
			l.PushNumber(f)
			l.RawGet(idx)
		}
		err := e.encode(l.AbsIndex(-1), depth+1)
		l.Pop(1)
		if err != nil {
			return err
		}
	}
	e.buf = append(e.buf, '}')
	return nil
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
