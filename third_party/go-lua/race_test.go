//go:build race

package lua

// The race detector slows the VM about tenfold; the bomb tests use smaller
// limits under it to stay fast.
const raceEnabled = true
