package tenantlog

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/internal/syncbuf"
	"github.com/templateworker/templateworker/proto"
)

// TestLimiterBurstThenRate: a tenant gets its burst of lines, then one a
// second; the first line after left-out ones carries their count; another
// tenant's bucket is its own.
func TestLimiterBurstThenRate(t *testing.T) {
	now := time.Unix(1000, 0)
	l := New(1, 3)
	l.Now = func() time.Time { return now }
	a, b := proto.GuildID(1), proto.GuildID(2)
	for i := range 3 {
		if ok, n := l.Allow(a); !ok || n != 0 {
			t.Fatalf("line %d of the burst: %v, %d", i, ok, n)
		}
	}
	for i := range 5 {
		if ok, _ := l.Allow(a); ok {
			t.Fatalf("line %d past the burst was let through", i)
		}
	}
	if ok, n := l.Allow(b); !ok || n != 0 {
		t.Fatalf("another tenant's first line: %v, %d", ok, n)
	}
	now = now.Add(500 * time.Millisecond)
	if ok, _ := l.Allow(a); ok {
		t.Fatal("half a token made a line")
	}
	now = now.Add(500 * time.Millisecond)
	if ok, n := l.Allow(a); !ok || n != 6 {
		t.Fatalf("the line a second later: %v, suppressed %d, want true, 6", ok, n)
	}
	now = now.Add(time.Hour) // refills to the burst, not beyond
	for i := range 3 {
		if ok, n := l.Allow(a); !ok || n != 0 {
			t.Fatalf("line %d after an hour: %v, %d", i, ok, n)
		}
	}
	if ok, _ := l.Allow(a); ok {
		t.Fatal("an hour's wait gave more than the burst")
	}
	var nilLimiter *Limiter
	if ok, _ := nilLimiter.Allow(a); !ok {
		t.Fatal("a nil Limiter refused a line")
	}
}

// TestLimiterBoundedMemory: a Limiter tracks at most maxTenants tenants,
// however many log lines.
func TestLimiterBoundedMemory(t *testing.T) {
	now := time.Unix(1000, 0)
	l := New(1, 10)
	l.Now = func() time.Time { return now }
	for i := range 5 * maxTenants {
		l.Allow(proto.GuildID(uint64(i)))
		if len(l.tenants) > maxTenants {
			t.Fatalf("%d tenants tracked after %d, want at most %d", len(l.tenants), i+1, maxTenants)
		}
		if i%1000 == 0 {
			now = now.Add(time.Second)
		}
	}
}

// TestEventWritesBoundedLines: Event's lines carry the tenant and the count
// of left-out lines; a left-out line writes nothing.
func TestEventWritesBoundedLines(t *testing.T) {
	now := time.Unix(1000, 0)
	l := New(1, 2)
	l.Now = func() time.Time { return now }
	var sink syncbuf.Buffer
	log := zerolog.New(&sink)
	id := proto.GuildID(7 << 22)
	for range 10 {
		l.Event(&log, zerolog.WarnLevel, id).Str("k", "v").Msg("failed")
	}
	now = now.Add(time.Second)
	l.Event(&log, zerolog.WarnLevel, id).Msg("failed")
	lines := strings.Split(strings.TrimSpace(sink.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines, want 3:\n%s", len(lines), sink.String())
	}
	if !strings.Contains(lines[0], `"tenant":"`+id.String()+`"`) || !strings.Contains(lines[2], `"suppressed":8`) {
		t.Fatalf("lines lack the tenant or the count:\n%s", sink.String())
	}
}

// TestErrorText: a long error text is cut to MaxErrorText bytes at a rune
// boundary, with its length; a short one is whole.
func TestErrorText(t *testing.T) {
	if got := ErrorText(errors.New("short")); got != "short" {
		t.Fatalf("short: %q", got)
	}
	long := strings.Repeat("é", 3000) // 6,000 bytes
	got := ErrorText(errors.New(long))
	head, _, ok := strings.Cut(got, "... (6000 bytes)")
	if !ok || len(head) > MaxErrorText || !strings.HasPrefix(long, head) || len(head) < MaxErrorText-1 {
		t.Fatalf("cut: %d bytes %q", len(got), got[len(got)-30:])
	}
	if ErrorText(nil) != "" {
		t.Fatal("nil error")
	}
}
