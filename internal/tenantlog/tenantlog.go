// Package tenantlog bounds the log lines the system writes about one
// tenant's failures: "nowait event failed", "discarding tenant VM after an
// aborted call", "event delivery failed; retrying". Each is one line per
// failed call, and a tenant decides how often its calls fail and what its
// error says (up to 4 KiB of text): without a bound, a tenant whose events
// fail cheaply filled the worker's log, and the master that re-logs it,
// at the rate of its events. A Limiter gives each tenant a token bucket of
// lines; a line past it is left out and counted, and the tenant's next
// line carries the count ("suppressed"). Error texts in those lines are
// cut to MaxErrorText bytes (the caller, the dead-letter table and the
// metrics keep the whole error).
package tenantlog

import (
	"strconv"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
)

// Default bounds: a tenant's failures log a burst of DefaultBurst lines,
// then one every 1/DefaultPerSecond seconds.
const (
	DefaultPerSecond = 1
	DefaultBurst     = 10
)

// MaxErrorText is the longest error text a bounded line carries.
const MaxErrorText = 512

// maxTenants is how many tenants a Limiter tracks before it forgets the
// ones whose buckets have refilled (and, past that, all of them: a burst
// of lines for each tenant once, not unbounded memory).
const maxTenants = 4096

// Limiter rations the lines about each tenant. The zero value is not
// ready: use New. A nil *Limiter lets every line through. It is safe for
// concurrent use.
type Limiter struct {
	perSecond float64
	burst     float64

	// Now is the Limiter's clock (a test sets a fake one); nil: time.Now.
	Now func() time.Time

	mu      sync.Mutex
	tenants map[proto.Id]*bucket
}

type bucket struct {
	tokens     float64
	last       time.Time
	suppressed int
}

// New returns a Limiter of perSecond lines a second per tenant with
// bursts of up to burst lines.
func New(perSecond float64, burst int) *Limiter {
	return &Limiter{perSecond: perSecond, burst: float64(max(burst, 1)), tenants: make(map[proto.Id]*bucket)}
}

// Allow takes one line from tenant's bucket. It reports whether the line
// may be written and, if so, how many of the tenant's lines were left out
// since its last written one.
func (l *Limiter) Allow(tenant proto.Id) (ok bool, suppressed int) {
	if l == nil {
		return true, 0
	}
	now := time.Now
	if l.Now != nil {
		now = l.Now
	}
	t := now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.tenants[tenant]
	if b == nil {
		if len(l.tenants) >= maxTenants {
			l.sweep(t)
		}
		b = &bucket{tokens: l.burst, last: t}
		l.tenants[tenant] = b
	}
	if d := t.Sub(b.last); d > 0 {
		b.tokens = min(l.burst, b.tokens+d.Seconds()*l.perSecond)
		b.last = t
	}
	if b.tokens < 1 {
		b.suppressed++
		return false, 0
	}
	b.tokens--
	suppressed, b.suppressed = b.suppressed, 0
	return true, suppressed
}

// sweep forgets the tenants whose buckets are full by now and who have no
// left-out lines to report; if that frees less than half the map, it
// forgets every tenant. Called with mu held.
func (l *Limiter) sweep(t time.Time) {
	full := time.Duration(l.burst / l.perSecond * float64(time.Second))
	for id, b := range l.tenants {
		if b.suppressed == 0 && t.Sub(b.last) >= full {
			delete(l.tenants, id)
		}
	}
	if len(l.tenants) > maxTenants/2 {
		clear(l.tenants)
	}
}

// Event starts a line at level about tenant on log, with the tenant and,
// after left-out lines, their count (suppressed); nil when the tenant's
// bucket is empty (zerolog's methods on a nil *Event do nothing, so the
// caller writes the line as usual).
func (l *Limiter) Event(log *zerolog.Logger, level zerolog.Level, tenant proto.Id) *zerolog.Event {
	ok, n := l.Allow(tenant)
	if !ok {
		return nil
	}
	e := log.WithLevel(level).Str("tenant", tenant.String())
	if n > 0 {
		e = e.Int("suppressed", n)
	}
	return e
}

// ErrorText is err's text cut to MaxErrorText bytes (at a rune boundary,
// marked with the whole length), for the "error" field of a bounded line.
func ErrorText(err error) string {
	if err == nil {
		return ""
	}
	s := err.Error()
	if len(s) <= MaxErrorText {
		return s
	}
	cut := MaxErrorText
	for cut > 0 && s[cut]&0xC0 == 0x80 { // not inside a UTF-8 sequence
		cut--
	}
	return s[:cut] + "... (" + strconv.Itoa(len(s)) + " bytes)"
}
