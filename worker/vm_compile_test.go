package worker

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
)

// Compiling is charged and bounded (issue 14 item 2): a huge chunk ends
// with the call's limit error, never a blocked worker or unbounded memory.
func TestCompileIsBounded(t *testing.T) {
	big := `return load(("a.b.c.d.e=1 "):rep(1e6))`
	for _, c := range []struct {
		name     string
		limits   func(*Limits)
		code     string
		wantCode string
		wantMsg  string
	}{
		{"instruction budget", func(l *Limits) { l.MaxInstructions = 1_000_000 }, big, proto.CodeCPULimit, "1000000 instructions"},
		{"deadline", func(l *Limits) { l.MaxInstructions = 0; l.Timeout = 200 * time.Millisecond }, big, proto.CodeTimeout, "200ms"},
		{"memory", func(l *Limits) { l.MaxInstructions = 0; l.MaxMemory = 24 << 20 }, big, proto.CodeMemoryLimit, "25165824 bytes"},
		{"source length", func(l *Limits) { l.MaxSource = 1 << 20 }, `return load(("x=1 "):rep(300000))`, proto.CodeMemoryLimit, "source length limit exceeded (1048576 bytes)"},
		{"source length, script", func(l *Limits) { l.MaxSource = 1 << 10 }, `return 1` + strings.Repeat(" ", 2000), proto.CodeMemoryLimit, "source length limit exceeded (1024 bytes)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			lim := Limits{MaxInstructions: 1 << 40, Timeout: 10 * time.Minute, MaxMemory: 64 << 20, MaxString: 16 << 20, MaxCallDepth: 200}
			c.limits(&lim)
			s := newMemStore()
			neighbour := proto.GuildID(2 << 22)
			s.put(neighbour, "ok", `return "fine"`, "Ping")
			m := NewManager(0, 1, s, lim, zerolog.Nop())
			_, err := m.RunScript(context.Background(), proto.GuildID(1<<22), "hostile", c.code, ev("x", ""))
			if pe := proto.AsError(err); err == nil || pe.Code != c.wantCode || !strings.Contains(pe.Message, c.wantMsg) {
				t.Fatalf("got %.300v; want %s containing %q", err, c.wantCode, c.wantMsg)
			}
			v, err := m.Dispatch(context.Background(), neighbour, ev("Ping", "{}"))
			if err != nil || string(v) != `{"ok":"fine"}` {
				t.Fatalf("neighbour: %s %v", v, err)
			}
		})
	}
}

// A stored template is compiled within the budget of the call that needs
// it.
func TestTemplateCompileIsCharged(t *testing.T) {
	s := newMemStore()
	victim := proto.GuildID(1 << 22)
	s.put(victim, "big", strings.Repeat("a.b.c.d.e=1 ", 200_000)+"return 1", "Ping")
	lim := hostileLimits
	lim.MaxInstructions = 1_000_000
	lim.MaxSource = 4 << 20
	m := NewManager(0, 1, s, lim, zerolog.Nop())
	_, err := m.Dispatch(context.Background(), victim, ev("Ping", "{}"))
	if pe := proto.AsError(err); pe == nil || pe.Code != proto.CodeCPULimit {
		t.Fatalf("got %v; want %s", err, proto.CodeCPULimit)
	}
}
