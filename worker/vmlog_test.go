package worker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"github.com/templateworker/templateworker/internal/syncbuf"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
)

// logLines returns the JSON log lines written to s so far, decoded, and
// empties s.
func logLines(t *testing.T, s *syncbuf.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(s.Take()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// TestLogVolumeBounded: one message is cut at maxLogMessage with a marker
// giving its length; a call's messages total at most maxLogPerCall, the
// rest are dropped and one line says how many; the next call logs again.
func TestLogVolumeBounded(t *testing.T) {
	sink := &syncbuf.Buffer{}
	vm, err := newVM(proto.GuildID(1), newMemStore(), DefaultLimits, zerolog.New(sink))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	code := `local e, ctx = ...
		local big = ("x"):rep(1100000) .. "é"
		ctx.log.info(big)
		print(big, big)
		for i = 1, 300 do ctx.log.warn(("y"):rep(1000)) end
		print("not logged")
		return 1`
	if _, err := vm.runCode(ctx, "log", code, proto.Event{Name: "E"}); err != nil {
		t.Fatal(err)
	}
	lines := logLines(t, sink)
	total, dropped := 0, 0
	for i, l := range lines {
		msg, _ := l["message"].(string)
		if len(msg) > maxLogMessage+100 {
			t.Fatalf("line %d: a message of %d bytes", i, len(msg))
		}
		if l["dropped_messages"] != nil {
			dropped++
			if l["dropped_messages"].(float64) < 200 || !strings.Contains(msg, "dropped: a call may log 65536 bytes") {
				t.Errorf("the dropped line: %v", l)
			}
			continue
		}
		if l["tenant"] != proto.GuildID(1).String() || l["source"] != "template" {
			t.Errorf("line %d has no tenant/source: %v", i, l)
		}
		total += len(msg)
	}
	if !strings.Contains(lines[0]["message"].(string), "(message cut: 1100002 bytes, the limit is 8192)") {
		t.Errorf("first line: %.200s", lines[0]["message"])
	}
	if !strings.Contains(lines[1]["message"].(string), "(message cut: 2200005 bytes") {
		t.Errorf("print line: %.200s", lines[1]["message"])
	}
	if total > maxLogPerCall+200 || total < maxLogPerCall-2000 {
		t.Errorf("the call logged %d bytes, the bound is %d", total, maxLogPerCall)
	}
	if dropped != 1 || lines[len(lines)-1]["dropped_messages"] == nil {
		t.Errorf("%d dropped lines, want one, last", dropped)
	}
	// The bound is per call.
	if _, err := vm.runCode(ctx, "log", `print("again") return 1`, proto.Event{Name: "E"}); err != nil {
		t.Fatal(err)
	}
	if l := logLines(t, sink); len(l) != 1 || l[0]["message"] != "again" {
		t.Fatalf("next call: %v", l)
	}
}

// TestLogCutKeepsUTF8: a cut in the middle of a character drops the
// partial character.
func TestLogCutKeepsUTF8(t *testing.T) {
	var m messageBuilder
	m.WriteString(strings.Repeat("a", maxLogMessage-1) + "é and more")
	s := m.String()
	if !strings.HasPrefix(s, strings.Repeat("a", maxLogMessage-1)+"... (message cut:") {
		t.Fatalf("cut message ends %q", s[maxLogMessage-10:])
	}
}

// TestPrintBuildsNoHugeMessage: print of many huge arguments neither
// builds the whole message nor escapes the call's budget.
func TestPrintBuildsNoHugeMessage(t *testing.T) {
	sink := &syncbuf.Buffer{}
	lim := DefaultLimits
	lim.MaxInstructions = 100_000
	vm, err := newVM(proto.GuildID(1), newMemStore(), lim, zerolog.New(sink))
	if err != nil {
		t.Fatal(err)
	}
	// 5000 arguments of 1 MiB: 5 GiB if it were joined.
	code := `local s = ("x"):rep(1024):rep(1024) local t = {} for i = 1, 5000 do t[i] = s end print(unpack(t)) return 1`
	if _, err := vm.runCode(context.Background(), "p", code, proto.Event{Name: "E"}); err != nil {
		t.Fatal(err)
	}
	// Logging forever ends with the budget.
	_, err = vm.runCode(context.Background(), "p", `while true do print(("z"):rep(100)) end`, proto.Event{Name: "E"})
	if proto.CodeOf(err) != proto.CodeCPULimit {
		t.Fatalf("logging loop: %v", err)
	}
}

// TestLogVolumeCountsLines: empty and one-byte messages count against a
// call's log volume too (each as at least logLineBytes, the size of its
// log line without the message): 100,000 empty ctx.log.info calls write a
// bounded number of lines, not 100,000 lines of ~100 bytes (10 MB) past
// the 64 KiB bound.
func TestLogVolumeCountsLines(t *testing.T) {
	sink := &syncbuf.Buffer{}
	vm, err := newVM(proto.GuildID(1), newMemStore(), DefaultLimits, zerolog.New(sink))
	if err != nil {
		t.Fatal(err)
	}
	code := `local e, ctx = ... for i = 1, 100000 do ctx.log.info("") print() ctx.log.warn("x") end return 1`
	if _, err := vm.runCode(context.Background(), "log", code, proto.Event{Name: "E"}); err != nil {
		t.Fatal(err)
	}
	out := sink.Take()
	lines := bytes.Count(out, []byte("\n"))
	if len(out) > 2*maxLogPerCall || lines > maxLogPerCall/logLineBytes+1 {
		t.Fatalf("300,000 tiny messages wrote %d lines, %d bytes; want at most %d lines (%d bytes a call, each line counted as at least %d)",
			lines, len(out), maxLogPerCall/logLineBytes+1, maxLogPerCall, logLineBytes)
	}
	if !bytes.Contains(out, []byte(`"dropped_messages":`)) {
		t.Fatalf("no line says how many were dropped: %.300s", out[len(out)-min(len(out), 300):])
	}
}

// TestLogBucket: the bucket starts full at logBurstBytes, refills at
// logRateBytes a second up to the burst, and refuses what it does not hold.
func TestLogBucket(t *testing.T) {
	var b logBucket
	t0 := time.Unix(1000, 0)
	if !b.take(t0, logBurstBytes) {
		t.Fatal("a new bucket does not hold its burst")
	}
	if b.take(t0, 1) {
		t.Fatal("an empty bucket gave a byte")
	}
	if !b.take(t0.Add(time.Second), logRateBytes) || b.take(t0.Add(time.Second), 1) {
		t.Fatal("a second refills exactly logRateBytes")
	}
	if b.take(t0, 1) { // a clock that goes back refills nothing
		t.Fatal("time going back refilled the bucket")
	}
	if !b.take(t0.Add(time.Hour), logBurstBytes) || b.take(t0.Add(time.Hour), 1) {
		t.Fatal("an hour refills the burst and no more")
	}
}

// TestLogRatePerTenant: a tenant's calls, each within a call's log
// volume, log at most logBurstBytes and then logRateBytes a second
// together (on the Manager's clock), however many calls it makes, also
// across a VM rebuilt after a limit error; the lines that say messages
// were dropped come at most once a second and carry the counts of the
// calls in between; another tenant logs from its own full bucket.
func TestLogRatePerTenant(t *testing.T) {
	sink := &syncbuf.Buffer{}
	s := newMemStore()
	lim := DefaultLimits
	lim.MaxInstructions = 2_000_000 // the spin below ends soon
	m := NewManager(0, 1, s, lim, zerolog.New(sink))
	now := time.Unix(1000, 0)
	m.now = func() time.Time { return now }
	hostile, other := proto.GuildID(1), proto.GuildID(2)
	// Each call logs 60 KiB: within a call's 64 KiB.
	const logging = `local e, ctx = ... for i = 1, 60 do ctx.log.info(("x"):rep(1024)) end return 1`
	run := func(id proto.Id, code string) error {
		_, err := m.RunScript(context.Background(), id, "log", code, proto.Event{Name: "E"})
		return err
	}
	count := func() (logged, droppedLines, droppedMsgs int) {
		for _, l := range logLines(t, sink) {
			if n, ok := l["dropped_messages"].(float64); ok {
				droppedLines++
				droppedMsgs += int(n)
				if !strings.Contains(l["message"].(string), "a tenant 65536 bytes a second") {
					t.Errorf("the dropped line does not name the rate: %v", l["message"])
				}
			} else if l["source"] == "template" {
				logged += len(l["message"].(string))
			}
		}
		return
	}
	for i := 0; i < 40; i++ { // 2.4 MiB asked for, at one instant
		if err := run(hostile, logging); err != nil {
			t.Fatal(err)
		}
	}
	// A limit error rebuilds the VM: the bucket stays empty.
	if err := run(hostile, `while true do end`); proto.CodeOf(err) != proto.CodeCPULimit {
		t.Fatalf("spin: %v", err)
	}
	if err := run(hostile, logging); err != nil {
		t.Fatal(err)
	}
	logged, lines, msgs := count()
	if logged > logBurstBytes || logged < logBurstBytes-64<<10 {
		t.Fatalf("41 calls at one instant logged %d bytes, want the burst of %d", logged, logBurstBytes)
	}
	if lines != 1 {
		t.Fatalf("%d dropped-messages lines at one instant, want 1", lines)
	}
	// A second later: logRateBytes more, and one line with the counts of
	// every call that dropped since the first line.
	now = now.Add(time.Second)
	for range 2 {
		if err := run(hostile, logging); err != nil {
			t.Fatal(err)
		}
	}
	logged, lines, msgs2 := count()
	if logged != logRateBytes {
		t.Fatalf("a second later the tenant logged %d bytes, want its rate of %d", logged, logRateBytes)
	}
	if lines != 1 || msgs+msgs2 != 43*60-(logBurstBytes+logRateBytes)/1024 {
		t.Fatalf("dropped lines %d, messages %d+%d, want one line and every message past the burst and the rate counted",
			lines, msgs, msgs2)
	}
	if err := run(other, logging); err != nil {
		t.Fatal(err)
	}
	if logged, lines, _ := count(); logged != 60*1024 || lines != 0 {
		t.Fatalf("the other tenant logged %d bytes with %d dropped lines, want all 61440 and none", logged, lines)
	}
}
