package luastd

import (
	lua "github.com/Shopify/go-lua"
)

// Limits bounds the work and output of the functions this package installs.
type Limits struct {
	// MaxString is the longest string any function here may build
	// (string.rep, string.format, string.gsub, table.concat, string.char...);
	// 0 = unlimited. Exceeding it raises a Lua error via OnLimit if set,
	// else lua.Errorf with a message like
	// "string length exceeds limit (16777216 bytes)".
	MaxString int
	// Charge is called by long-running Go loops (the pattern matcher, gsub,
	// sort, rep, concat, format, byte, unpack, reverse, lower, upper, insert,
	// remove) every so often, or before the work, with the number of abstract steps
	// done since the last call. It may raise a Lua error (it then does not
	// return: go-lua errors are panics). nil = no budget.
	Charge func(l *lua.State, steps int)
	// OnLimit is called just before a MaxString violation raises its error,
	// with the kind "string" and the limit; the host uses it to mark the call
	// as aborted. May be nil.
	OnLimit func(l *lua.State, kind string, limit int)
}

// chargeEvery is how many steps a budget accumulates before it reports
// them to Limits.Charge.
const chargeEvery = 1000

// budget batches steps for Limits.Charge. The zero value of a budget
// with a nil charge function only counts.
type budget struct {
	l       *lua.State
	charge  func(l *lua.State, steps int)
	pending int
}

func (lim *Limits) budget(l *lua.State) budget {
	return budget{l: l, charge: lim.Charge}
}

// step records n steps, reporting them when a batch is full.
func (b *budget) step(n int) {
	b.pending += n
	if b.pending >= chargeEvery {
		b.flush()
	}
}

// flush reports the steps not yet reported.
func (b *budget) flush() {
	if b.pending == 0 {
		return
	}
	n := b.pending
	b.pending = 0
	if b.charge != nil {
		b.charge(b.l, n)
	}
}

// checkLen raises the MaxString error when a string of n bytes would
// exceed the limit.
func (lim *Limits) checkLen(l *lua.State, n int) {
	if lim.MaxString <= 0 || n <= lim.MaxString {
		return
	}
	lim.tooLong(l)
}

// tooLong raises the MaxString error unconditionally.
func (lim *Limits) tooLong(l *lua.State) {
	if lim.OnLimit != nil {
		lim.OnLimit(l, "string", lim.MaxString)
	}
	lua.Errorf(l, "string length exceeds limit (%d bytes)", lim.MaxString)
}

// fits reports whether a string of n bytes is allowed (n < 0 means an
// overflowed computation and never fits).
func (lim *Limits) fits(n int) bool {
	return n >= 0 && (lim.MaxString <= 0 || n <= lim.MaxString)
}
