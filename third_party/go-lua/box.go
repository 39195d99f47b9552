package lua

import "math"

// Boxed small integers (box patch). A number in a Lua register or table is
// a float64 in an interface, and Go allocates 8 bytes for every float64 it
// boxes (its runtime caches only small integers' bit patterns, which a
// float64's never are): a 100-iteration numeric loop allocated 300 times.
// box returns a preallocated interface for the integral values most loops
// and counters take, and boxes any other value as before.
const (
	boxMin = -1024
	boxMax = 16383
)

var boxed = func() (b [boxMax - boxMin + 1]value) {
	for i := range b {
		b[i] = float64(i + boxMin)
	}
	return b
}()

// box returns f as a value, without allocating when f is an integer in
// [boxMin, boxMax] (negative zero is boxed as itself: Lua prints it "-0").
func box(f float64) value {
	if f >= boxMin && f <= boxMax {
		if i := int(f); float64(i) == f && (i != 0 || !math.Signbit(f)) {
			return boxed[i-boxMin]
		}
	}
	return f
}
