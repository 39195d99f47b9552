package worker

import (
	"strings"
	"time"
	"unicode/utf8"

	lua "github.com/Shopify/go-lua"
	"github.com/rs/zerolog"
)

// Log volume a template can produce (ctx.log.info/warn/error and print),
// documented in the README's Limits section: one message is cut at
// maxLogMessage bytes, with a marker saying how long it was; a call's
// messages may total maxLogPerCall bytes, after which further messages are
// dropped and one line at the end of the call says how many. Logging is
// charged to the call's instruction budget.
const (
	maxLogMessage = 8 << 10
	maxLogPerCall = 64 << 10
	// logLineBytes is the least a message counts against maxLogPerCall:
	// about what its log line takes besides the message (level, time,
	// tenant, source, and the worker's fields when the master re-logs
	// it), so that a loop of empty messages writes at most
	// maxLogPerCall/logLineBytes lines, not millions.
	logLineBytes = 128
	// logRateBytes and logBurstBytes bound what one tenant logs over
	// time, whatever its calls (logBucket): calls back to back, or the
	// events a template schedules, each within maxLogPerCall, would
	// otherwise log without end.
	logRateBytes  = 64 << 10 // a second
	logBurstBytes = 1 << 20
	// logDropLineEvery is how often a tenant's calls that dropped messages
	// may say so (the counts of those that may not are carried to the
	// next line), so that the lines saying so are bounded too.
	logDropLineEvery = time.Second
)

// logBucket is a tenant's log volume over time: a token bucket of
// logBurstBytes refilled at logRateBytes a second. It belongs to the
// tenant on its worker (Manager), not to its VM, so that a VM rebuilt
// after a call's limit error does not start full again.
type logBucket struct {
	tokens float64
	at     time.Time // when tokens was last refilled; zero: full
	// warnedAt is when the tenant's last dropped-messages line was
	// written; dropped and droppedBytes are the messages dropped since.
	warnedAt              time.Time
	dropped, droppedBytes int
}

// take takes n bytes from the bucket at now, reporting whether they were
// there.
func (b *logBucket) take(now time.Time, n int) bool {
	if b.at.IsZero() {
		b.tokens = logBurstBytes
	} else if d := now.Sub(b.at); d > 0 {
		b.tokens = min(logBurstBytes, b.tokens+d.Seconds()*logRateBytes)
	}
	b.at = now
	if b.tokens < float64(n) {
		return false
	}
	b.tokens -= float64(n)
	return true
}

// logState is a call's log accounting (part of callState).
type logState struct {
	bytes        int // bytes of the messages logged so far
	dropped      int // messages dropped past maxLogPerCall
	droppedBytes int
}

// messageBuilder collects a log message, keeping at most maxLogMessage
// bytes of it (whatever the script passes, nothing larger is built) and
// its full length.
type messageBuilder struct {
	b     strings.Builder
	total int
}

func (m *messageBuilder) WriteString(s string) {
	m.total += len(s)
	if room := maxLogMessage - m.b.Len(); room > 0 {
		if len(s) > room {
			s = s[:room]
		}
		m.b.WriteString(s)
	}
}

// String returns the message, cut and marked if it was longer than
// maxLogMessage.
func (m *messageBuilder) String() string {
	s := m.b.String()
	if m.total <= maxLogMessage {
		return s
	}
	// Cut on a character boundary: drop a character cut in the middle.
	for i := 0; i < utf8.UTFMax-1 && len(s) > 0; i++ {
		if r, size := utf8.DecodeLastRuneInString(s); r != utf8.RuneError || size != 1 {
			break
		}
		s = s[:len(s)-1]
	}
	return s + "... (message cut: " + itoa(m.total) + " bytes, the limit is " + itoa(maxLogMessage) + ")"
}

// emitLog logs a template's message at level, charging it to the call
// and applying the log bounds. It may raise the call's limit error.
func (vm *VM) emitLog(l *lua.State, level zerolog.Level, m *messageBuilder) {
	vm.charge(l, 1+m.b.Len()/64)
	c := &vm.call.log
	msg := m.String()
	n := max(len(msg), logLineBytes)
	if c.bytes+n > maxLogPerCall || (vm.logs != nil && !vm.logs.take(vm.logNow(), n)) {
		c.dropped++
		c.droppedBytes += m.total
		return
	}
	c.bytes += n
	vm.log.WithLevel(level).Str("tenant", vm.tenant.String()).Str("source", "template").Msg(msg)
}

// endLog writes the one line saying how many messages a call dropped; for
// a tenant's VM (logs set), at most one every logDropLineEvery, with the
// counts of the calls since the last.
func (vm *VM) endLog() {
	c := &vm.call.log
	if c.dropped == 0 {
		return
	}
	dropped, droppedBytes := c.dropped, c.droppedBytes
	if b := vm.logs; b != nil {
		b.dropped += dropped
		b.droppedBytes += droppedBytes
		now := vm.logNow()
		if !b.warnedAt.IsZero() && now.Sub(b.warnedAt) < logDropLineEvery {
			return
		}
		b.warnedAt = now
		dropped, droppedBytes = b.dropped, b.droppedBytes
		b.dropped, b.droppedBytes = 0, 0
	}
	vm.log.Warn().Str("tenant", vm.tenant.String()).Str("source", "template").
		Int("dropped_messages", dropped).Int("dropped_bytes", droppedBytes).
		Msgf("%d log messages (%d bytes) dropped: a call may log %d bytes, a tenant %d bytes a second (in bursts of up to %d)",
			dropped, droppedBytes, maxLogPerCall, logRateBytes, logBurstBytes)
}
