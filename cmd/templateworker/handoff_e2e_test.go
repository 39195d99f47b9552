package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/templateworker/templateworker/proto"
)

// TestSuperLongInlineCallHoldsUpNoNeighbour: a warm, so far quick tenant
// whose next call spins runs on the worker's reading goroutine (the worker
// is idle); after a millisecond the reading moves to another goroutine, so
// a neighbour on the same worker — cold, its templates fetched over
// Mesophyll meanwhile — is answered while the spinner still runs.
func TestSuperLongInlineCallHoldsUpNoNeighbour(t *testing.T) {
	m := startMaster(t, "", "--process-workers", "1", "--log-level", "debug",
		"--lua-timeout", "60s", "--lua-max-instructions", "100000000000", "--dispatch-timeout", "60s")
	ctx := context.Background()
	spinner, neighbour := proto.GuildID(41<<22|1), proto.GuildID(42<<22|1)
	spin := `local event = ...
if event.data == "spin" then local t = os.clock() while os.clock() - t < 3 do end return "spun" end
return "quick"`
	if err := m.api.PutTemplate(ctx, spinner, "spin", spin, []string{"Ping"}); err != nil {
		t.Fatal(err)
	}
	if err := m.api.PutTemplate(ctx, neighbour, "quick", `return "neighbour"`, []string{"Ping"}); err != nil {
		t.Fatal(err)
	}
	m.waitReady(t)
	// The spinner's call must run on the reading goroutine for the test
	// to prove anything: its tenant warm and none of its runs slow (over
	// 1 ms with 10,000 steps of work: the warm-up's quick runs never are,
	// however long a busy machine makes them take). Should it not run
	// there anyway, a drop gives it a fresh record.
	const handoffLog = "the reading moves to a new goroutine"
	for attempt := 1; ; attempt++ {
		for range 2 {
			if v, err := m.api.Dispatch(ctx, spinner, proto.Event{Name: "Ping"}); err != nil || !strings.Contains(string(v), "quick") {
				t.Fatalf("warm-up: %s %v", v, err)
			}
		}
		before := strings.Count(m.out.String(), handoffLog)
		spun := make(chan error, 1)
		go func() {
			_, err := m.api.Dispatch(ctx, spinner, proto.Event{Name: "Ping", Data: proto.Value(`"spin"`)})
			spun <- err
		}()
		waitFor(t, time.Minute, func() bool { return len(m.superWorkers(t)[0].RunningCalls) == 1 })
		v, err := m.api.Dispatch(ctx, neighbour, proto.Event{Name: "Ping"})
		if err != nil || !strings.Contains(string(v), "neighbour") {
			t.Fatalf("neighbour: %s %v", v, err)
		}
		select {
		case err := <-spun:
			t.Fatalf("the neighbour was answered only after the spinner's call ended (%v)", err)
		default:
		}
		if err := <-spun; err != nil {
			t.Fatal(err)
		}
		if strings.Count(m.out.String(), handoffLog) > before {
			return // it ran on the reading goroutine, and handed the reading off
		}
		if attempt == 4 {
			t.Fatal("the spinner's call never ran on the reading goroutine (no hand-off logged): the test proves nothing")
		}
		t.Logf("attempt %d: the spinner's call did not run on the reading goroutine; again with a fresh VM", attempt)
		if err := m.api.DropTenant(ctx, spinner); err != nil {
			t.Fatal(err)
		}
		if err := m.api.DropTenant(ctx, neighbour); err != nil {
			t.Fatal(err)
		}
	}
}
