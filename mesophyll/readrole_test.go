package mesophyll

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/templateworker/templateworker/proto"
)

// readState returns who reads c's connection and how many turns calls
// have taken.
func readState(c *Conn) (int, uint64) {
	c.role.mu.Lock()
	defer c.role.mu.Unlock()
	return c.role.state, c.role.calls
}

// TestLoneCallReadsItsOwnResponse checks that a call with nobody else
// reading reads the connection itself (no hand-off from a reader
// goroutine) and leaves nobody reading once nothing is expected.
func TestLoneCallReadsItsOwnResponse(t *testing.T) {
	h := newHarness(t, ServerOptions{})
	_, c, _ := h.worker(0, newFakeHandler())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := 0; i < 20; i++ {
		if _, err := c.DispatchEvent(ctx, proto.GuildID(1), proto.Event{Name: "Ping"}); err != nil {
			t.Fatal(err)
		}
	}
	// serve's goroutine may hold the role for a frame of the worker's
	// (its first heartbeat) or after the lazy-read timer; of 20 calls
	// most find nobody reading.
	if _, calls := readState(c); calls == 0 {
		t.Fatal("no call read the connection itself: every response was handed over by serve's goroutine")
	}
}

// TestWorkerRequestsAreReadWhileNoCallWaits checks that what the worker
// sends on its own while the master expects nothing — store requests, a
// run of them, and heartbeats — is read and answered: the moment without
// a reader after a call is bounded by the lazy-read timer.
func TestWorkerRequestsAreReadWhileNoCallWaits(t *testing.T) {
	h := newHarness(t, ServerOptions{HeartbeatInterval: 200 * time.Millisecond}) // 3 missed beats close the connection: not too short for a busy machine
	cl, c, _ := h.worker(0, newFakeHandler())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	g := proto.GuildID(1)
	for round := 0; round < 5; round++ {
		if _, err := c.DispatchEvent(ctx, g, proto.Event{Name: "Ping"}); err != nil {
			t.Fatal(err)
		}
		if err := cl.KvSet(ctx, g, "k", json.RawMessage(`1`)); err != nil {
			t.Fatalf("round %d: the worker's own KvSet after a call: %v", round, err)
		}
		for i := 0; i < 3; i++ {
			if _, found, err := cl.KvGet(ctx, g, "k"); err != nil || !found {
				t.Fatalf("round %d: KvGet %d: %v %v", round, i, found, err)
			}
		}
	}
	// Heartbeats keep arriving after the last call.
	for len(h.heartbeats) > 0 {
		<-h.heartbeats
	}
	for i := 0; i < 3; i++ {
		select {
		case <-h.heartbeats:
		case <-ctx.Done():
			t.Fatal("heartbeats stopped being read after the calls ended")
		}
	}
}

// TestCallWithDoneCtxWhileReadingReturns checks that a call reading the
// connection for itself returns its timeout once its ctx is done, though
// its response never comes: the next frame (a heartbeat) frees it.
func TestCallWithDoneCtxWhileReadingReturns(t *testing.T) {
	h := newHarness(t, ServerOptions{HeartbeatInterval: 100 * time.Millisecond})
	hd := newFakeHandler()
	_, c, _ := h.worker(0, hd)
	defer close(hd.release)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	g := proto.GuildID(1)
	if _, err := c.DispatchEvent(ctx, g, proto.Event{Name: "Ping"}); err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := c.DispatchEvent(short, g, proto.Event{Name: "slow"})
		done <- err
	}()
	// Wait until the call is registered (it then reads, or is about to).
	for c.link.inFlight() == 0 {
		time.Sleep(time.Millisecond)
	}
	cancelShort()
	select {
	case err := <-done:
		wantCode(t, err, proto.CodeTimeout)
	case <-ctx.Done():
		t.Fatal("a call whose ctx ended stayed stuck reading")
	}
	if _, err := c.DispatchEvent(ctx, g, proto.Event{Name: "Ping"}); err != nil {
		t.Fatalf("connection broken after the timed-out call: %v", err)
	}
}

// TestMixedTrafficWithReaderTurns mixes what makes the reader change
// hands: lone and concurrent calls, calls whose ctx is cancelled while
// they wait or read, nowait events, store calls from within events and
// the worker's own store calls. Every
// call must get its own answer or its timeout, every nowait event its Ack,
// and nothing may stay in flight.
func TestMixedTrafficWithReaderTurns(t *testing.T) {
	h := newHarness(t, ServerOptions{Workers: 1, HeartbeatInterval: 100 * time.Millisecond})
	hd := &inlineHandler{fakeHandler: newFakeHandler()}
	cl, c, _ := h.worker(0, hd)
	hd.cl.Store(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	g := proto.GuildID(1)
	var wg sync.WaitGroup
	var bad atomic.Int64
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 40 {
				n := w*1000 + i
				switch i % 5 {
				case 0, 1:
					res, err := c.DispatchEvent(ctx, g, proto.Event{Name: "echo", Data: proto.Value(strconv.Itoa(n))})
					if err != nil || string(res) != strconv.Itoa(n) {
						bad.Add(1)
					}
				case 2:
					// Cancelled before or while it waits or reads: a
					// timeout, or its answer if that came first.
					cctx, ccancel := context.WithCancel(ctx)
					if n%3 == 0 {
						ccancel()
					} else {
						go ccancel()
					}
					res, err := c.DispatchEvent(cctx, g, proto.Event{Name: "echo", Data: proto.Value(strconv.Itoa(n))})
					ccancel()
					if err != nil && proto.CodeOf(err) != proto.CodeTimeout || err == nil && string(res) != strconv.Itoa(n) {
						bad.Add(1)
					}
				case 3:
					if _, _, err := cl.KvGet(ctx, g, "k"); err != nil {
						bad.Add(1)
					}
				case 4: // a store call from within the event
					if _, err := c.DispatchEvent(ctx, g, proto.Event{Name: "kv", Data: proto.Value(`"k"`)}); err != nil {
						bad.Add(1)
					}
				}
			}
		}()
	}
	const nowaits = 40
	for i := range nowaits {
		if err := c.DispatchEventNoWait(g, proto.Event{Name: "Ping"}, uint64(i+1)); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d calls failed or got another call's answer", bad.Load())
	}
	for range nowaits {
		select {
		case <-h.acks:
		case <-ctx.Done():
			t.Fatal("a nowait event was never acknowledged")
		}
	}
	for c.InFlight() != 0 {
		select {
		case <-ctx.Done():
			t.Fatalf("%d still in flight after everything was answered", c.InFlight())
		case <-time.After(time.Millisecond):
		}
	}
	if _, err := c.DispatchEvent(ctx, g, proto.Event{Name: "Ping"}); err != nil {
		t.Fatalf("connection broken: %v", err)
	}
}

// TestServeReadsOnAfterWorkersOwnFrame checks that once serve's goroutine
// has read a request of the worker's own it stays the reader (the
// worker's next request is read at once, not after the lazy-read timer),
// and that it hands the connection back to the calls after the next
// answer it reads.
func TestServeReadsOnAfterWorkersOwnFrame(t *testing.T) {
	// Only the first heartbeat: a later one would rightly keep serve's
	// goroutine reading too.
	h := newHarness(t, ServerOptions{HeartbeatInterval: time.Hour})
	cl, c, _ := h.worker(0, newFakeHandler())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	select { // the worker's first heartbeat is read before the rounds start
	case <-h.heartbeats:
	case <-ctx.Done():
		t.Fatal("no first heartbeat")
	}
	g := proto.GuildID(1)
	for round := 0; round < 3; round++ {
		if _, err := c.DispatchEvent(ctx, g, proto.Event{Name: "Ping"}); err != nil {
			t.Fatal(err)
		}
		if err := cl.KvSet(ctx, g, "k", json.RawMessage(`1`)); err != nil {
			t.Fatalf("round %d: the worker's own KvSet: %v", round, err)
		}
		if state, _ := readState(c); state != readServe {
			t.Fatalf("round %d: after the worker's own KvSet the reader is %d, want serve's goroutine (%d)", round, state, readServe)
		}
		// serve's goroutine reads the next answers, and gives the role up
		// after one once the KvSet's store slot is free again: then a
		// call reads for itself.
		handedBack := false
		for i := 0; i < 1000 && !handedBack; i++ {
			if _, err := c.DispatchEvent(ctx, g, proto.Event{Name: "Ping"}); err != nil {
				t.Fatal(err)
			}
			state, _ := readState(c)
			handedBack = state != readServe
		}
		if !handedBack {
			t.Fatalf("round %d: serve's goroutine kept the reader's role over 1000 calls", round)
		}
	}
}
