package worker

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	lua "github.com/Shopify/go-lua"
)

// Tables as JSON objects: their keys are collected in one traversal (one
// lua.Next per key; values are read back with RawGet), sorted so that the
// output is deterministic, and checked for keys that would collide once
// turned into JSON object keys.

// The steps charged for JSON work, calibrated with BenchmarkJSONCost so
// that a step costs about what one VM instruction does (see the README's
// Limits section for the figures).
const (
	// stepsPerValue is charged for every value encoded or decoded.
	stepsPerValue = 3
	// stepsPerKey is charged for every key of a table, for the traversal
	// that collects it and the RawGet that reads its value back.
	stepsPerKey = 4
	// stepsPerCompare is charged for every key comparison while sorting.
	stepsPerCompare = 2
	// bytesPerStep: plain string bytes copied per step.
	bytesPerStep = 16
	// escapedBytesPerStep: bytes per step of strings that need escaping
	// (or decoding from escapes).
	escapedBytesPerStep = 4
	// validateBytesPerStep: bytes of JSON text checked per step before it
	// is decoded.
	validateBytesPerStep = 16
)

// jsonChargeEvery is how many steps the JSON code accumulates before it
// reports them. It is small because the charge also checks the deadline:
// a traversal step of a huge table can be slow (see PATCHES.md on next).
const jsonChargeEvery = 64

// jsonMeter batches the steps of JSON work for the call's charge function.
type jsonMeter struct {
	charge  func(steps int) error // nil: nothing is charged
	pending int
}

// step records n steps and reports them when a batch is full; the error
// ends the encoding or decoding (the call is over its budget).
func (m *jsonMeter) step(n int) error {
	m.pending += n
	if m.pending < jsonChargeEvery {
		return nil
	}
	return m.flush()
}

// flush reports the steps not yet reported.
func (m *jsonMeter) flush() error {
	n := m.pending
	m.pending = 0
	if n == 0 || m.charge == nil {
		return nil
	}
	return m.charge(n)
}

// objectKey is one key of a table being encoded.
type objectKey struct {
	name  string // the JSON object key (a number key's decimal text)
	num   float64
	isNum bool
}

// describe renders the Lua key for an error message.
func (k objectKey) describe() string {
	if k.isNum {
		return "number " + strconv.FormatFloat(k.num, 'g', -1, 64)
	}
	return "string " + strconv.Quote(truncateKey(k.name))
}

func truncateKey(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// keys collects the keys of the table at idx in one traversal and returns
// them with n, the count of keys that are the integers 1..n if the table
// is a sequence (n == len(keys)), or -1.
func (e *encoder) keys(idx int) ([]objectKey, int, error) {
	l := e.l
	var keys []objectKey
	ints, maxInt := 0, 0
	l.PushNil()
	for l.Next(idx) {
		l.Pop(1) // the value: read back with RawGet
		var k objectKey
		switch l.TypeOf(-1) {
		case lua.TypeNumber:
			f, _ := l.ToNumber(-1)
			k = objectKey{num: f, isNum: true}
			if f >= 1 && f == math.Trunc(f) && f <= math.MaxInt32 {
				ints++
				maxInt = max(maxInt, int(f))
			}
		case lua.TypeString:
			s, _ := l.ToString(-1)
			k = objectKey{name: s}
		default:
			kind := lua.TypeNameOf(l, -1)
			l.Pop(1)
			return nil, 0, fmt.Errorf("cannot encode a table with %s keys as JSON", kind)
		}
		keys = append(keys, k)
		if err := e.m.step(stepsPerKey); err != nil {
			l.Pop(1)
			return nil, 0, err
		}
	}
	if ints == len(keys) && maxInt == ints {
		return keys, ints, nil
	}
	return keys, -1, nil
}

// object encodes the table at idx, whose keys are keys, as a JSON object.
func (e *encoder) object(idx, depth int, keys []objectKey) error {
	l := e.l
	for i := range keys {
		if keys[i].isNum {
			if math.IsInf(keys[i].num, 0) || math.IsNaN(keys[i].num) {
				return fmt.Errorf("cannot encode a table with the key %v as JSON", keys[i].num)
			}
			keys[i].name = fmt.Sprintf("%.14g", keys[i].num) // as Lua's tostring
		}
	}
	if err := e.sortKeys(keys); err != nil {
		return err
	}
	for i := 1; i < len(keys); i++ {
		if keys[i].name == keys[i-1].name {
			return fmt.Errorf("cannot encode a table as JSON: the keys %s and %s both become the object key %q",
				keys[i-1].describe(), keys[i].describe(), truncateKey(keys[i].name))
		}
	}
	e.buf = append(e.buf, '{')
	for i, k := range keys {
		if i > 0 {
			e.buf = append(e.buf, ',')
		}
		if err := e.str(k.name); err != nil {
			return err
		}
		e.buf = append(e.buf, ':')
		if k.isNum {
			l.PushNumber(k.num)
		} else {
			l.PushString(k.name)
		}
		l.RawGet(idx)
		err := e.encode(l.AbsIndex(-1), depth+1)
		l.Pop(1)
		if err != nil {
			return err
		}
	}
	e.buf = append(e.buf, '}')
	return nil
}

// sortAbort carries a charge error out of the sort's comparison function.
type sortAbort struct{ err error }

// sortKeys sorts keys by name (number keys sort before string keys of the
// same name, so that a collision is reported in a fixed order), charging
// every comparison: a sort of many keys ends with the call's limit.
func (e *encoder) sortKeys(keys []objectKey) (err error) {
	defer func() {
		if r := recover(); r != nil {
			a, ok := r.(sortAbort)
			if !ok {
				panic(r)
			}
			err = a.err
		}
	}()
	slices.SortFunc(keys, func(a, b objectKey) int {
		if err := e.m.step(stepsPerCompare); err != nil {
			panic(sortAbort{err})
		}
		if c := strings.Compare(a.name, b.name); c != 0 {
			return c
		}
		switch {
		case a.isNum == b.isNum:
			return 0
		case a.isNum:
			return -1
		}
		return 1
	})
	return nil
}
