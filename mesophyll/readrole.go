package mesophyll

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"time"

	"github.com/templateworker/templateworker/proto"
)

// Reading the worker's frames on the master's side.
//
// One goroutine at a time reads the connection. A call that waits for its
// response while nobody reads reads the connection itself: its response
// wakes it straight from the network poller, as a plain WebSocket round
// trip does, instead of waking a reader goroutine that then wakes the
// caller (on a small machine each wake-up is a thread's). Whatever else it
// reads meanwhile it handles as the reader goroutine would: other calls'
// responses, store requests, acknowledgements, heartbeats.
//
// Conn.serve's goroutine reads whenever something is expected from the
// worker that no caller is reading for: responses of calls waiting behind
// another reader, acknowledgements of nowait events, the worker's next
// store request while one is being answered, the worker's close after
// Shutdown. When nothing is expected, nobody reads for a moment: the
// next call reads, and whatever the worker sent meanwhile (a heartbeat, a
// store request of its own) waits for it. That moment is bounded: a timer
// armed when the last reading call stopped (lazyRead) makes serve's
// goroutine read if no call has read since, so a frame of the worker's own
// waits at most 2 × lazyRead. While calls follow each other the timer
// fires once per lazyRead, not once per call, and an idle connection has
// no timer running: serve's goroutine waits in the read. Once serve's
// goroutine has read a frame of the worker's own (a store request, a
// heartbeat), it goes on reading — the worker's next request, as during
// OnStartup, and its next heartbeat are read at once — until it reads
// something the master expected: an answer or an Ack. So only the first
// frame of the worker's own after a call waits for the timer.
//
// Each firing of the timer costs the master a few thread wake-ups (the
// timer, the goroutine it starts, the poller's new deadline); at 1 ms that
// was about 0.2 wake-ups per call at 15,000 sequential calls a second, more
// than the rest of the master's side of a call. lazyRead is therefore long
// enough for the firings to be rare beside calls and short beside the
// heartbeat interval: the master counts a worker silent for 3 intervals as
// hung, and a heartbeat is read at most 2 × lazyRead late, once (tests use
// intervals of 20 ms and more).
//
// A reading call cannot stop mid-frame (a WebSocket read cut short ends
// the connection), so a call whose ctx ends while it reads returns when
// the next frame arrives: at the latest the worker's next heartbeat, or
// the connection's end when the worker is hung.

// Who reads the connection.
const (
	readNone   = iota // nobody: nothing is expected from the worker
	readServe         // Conn.serve's goroutine
	readCaller        // a call waiting for its response
)

// readRole is the right to read a Conn's connection.
type readRole struct {
	mu    sync.Mutex
	state int
	// turn tells serve's goroutine that it reads now (capacity 1).
	turn chan struct{}
	// calls counts the turns calls took as the reader; timer, armed
	// while nobody reads, makes serve's goroutine read if it has not
	// changed since seen.
	calls uint64
	seen  uint64
	armed bool
	timer *time.Timer
	// shutdown is set once Shutdown was sent: the worker's close follows.
	shutdown bool
	// own is set by the reader when it handled a frame of the worker's
	// own (a store request, a heartbeat); serve's goroutine then goes on
	// reading.
	own bool

	// buf and msg are the frame being read; only the reader uses them.
	buf bytes.Buffer
	msg proto.Message
}

// lazyRead is how long a connection on which nothing is expected may go
// unread after a call read it.
const lazyRead = 10 * time.Millisecond

func newReadRole() readRole {
	return readRole{state: readServe, turn: make(chan struct{}, 1)}
}

// needReaderLocked reports whether something is expected from the worker
// that a reader must be there for; c.role.mu is held.
func (c *Conn) needReaderLocked() bool {
	return c.role.shutdown || c.unacked.Load() > 0 || c.link.inFlight() > 0 || len(c.storeSem) > 0
}

// giveServeLocked makes serve's goroutine the reader; c.role.mu is held.
func (c *Conn) giveServeLocked() {
	c.role.state = readServe
	select {
	case c.role.turn <- struct{}{}:
	default: // a turn is signalled already
	}
}

// wantReader makes sure somebody reads the connection.
func (c *Conn) wantReader() {
	c.role.mu.Lock()
	if c.role.state == readNone {
		c.giveServeLocked()
	}
	c.role.mu.Unlock()
}

// armLocked arms the timer that ends a moment without a reader;
// c.role.mu is held.
func (c *Conn) armLocked() {
	if c.role.armed {
		return
	}
	c.role.armed, c.role.seen = true, c.role.calls
	if c.role.timer == nil {
		c.role.timer = time.AfterFunc(lazyRead, c.lazyReadDue)
		return
	}
	c.role.timer.Reset(lazyRead)
}

// lazyReadDue makes serve's goroutine read when no call has read the
// connection since the timer was armed.
func (c *Conn) lazyReadDue() {
	c.role.mu.Lock()
	defer c.role.mu.Unlock()
	c.role.armed = false
	switch {
	case c.role.state == readServe:
	case c.role.state == readNone && c.role.calls == c.role.seen:
		c.giveServeLocked()
	default: // calls read meanwhile: look again later
		c.armLocked()
	}
}

// readOne reads one frame and handles its messages; only the reader calls
// it.
func (c *Conn) readOne() error {
	err := c.link.readFrame(&c.role.buf, &c.role.msg)
	if err != nil {
		return err
	}
	c.lastSeen.Store(time.Now().UnixNano())
	return eachMessage(&c.role.msg, c.handle)
}

// readFailed ends the connection after reading failed with err.
func (c *Conn) readFailed(err error) {
	code, reason, cause := closeCause(err)
	var fe *frameError
	if errors.As(err, &fe) {
		c.log.Warn().Int("code", int(code)).Str("reason", reason).Msg("closing connection: protocol violation")
	}
	c.closeWith(code, reason, cause)
}

// serve reads the worker's frames whenever it is the reader, until the
// connection ends.
func (c *Conn) serve() {
	defer func() {
		c.role.mu.Lock()
		if c.role.timer != nil {
			c.role.timer.Stop()
		}
		c.role.mu.Unlock()
	}()
	for {
		c.role.mu.Lock()
		mine := c.role.state == readServe
		c.role.mu.Unlock()
		if !mine {
			select {
			case <-c.role.turn:
				continue
			case <-c.link.done:
				return
			}
		}
		c.role.own = false
		if err := c.readOne(); err != nil {
			c.readFailed(err)
			return
		}
		c.role.mu.Lock()
		if c.role.state == readServe && !c.role.own && !c.needReaderLocked() {
			c.role.state = readNone
			c.armLocked()
		}
		c.role.mu.Unlock()
	}
}

// roundTrip sends frame, which carries request id, and waits for its
// response, reading the connection itself when nobody else does.
func (c *Conn) roundTrip(ctx context.Context, id uint64, frame []byte) (proto.Value, error) {
	ch, err := c.link.register(id)
	if err != nil {
		return nil, err
	}
	if err := c.link.send(ctx, frame); err != nil {
		c.link.forget(id)
		return nil, err
	}
	c.role.mu.Lock()
	lead := c.role.state == readNone
	if lead {
		c.role.state = readCaller
		c.role.calls++
	}
	c.role.mu.Unlock()
	if !lead {
		return c.wait(ctx, id, ch)
	}
	defer c.endRead()
	for {
		select {
		case r := <-ch:
			return received(ch, r)
		default:
		}
		if ctx.Err() != nil {
			return c.wait(ctx, id, ch) // ctx is done: it returns at once
		}
		if err := c.readOne(); err != nil {
			c.readFailed(err)
			return received(ch, <-ch) // the end of the link answered every call
		}
	}
}

// endRead ends a call's turn as the reader: serve's goroutine reads next
// if something is expected, otherwise nobody does.
func (c *Conn) endRead() {
	c.role.mu.Lock()
	c.role.state = readNone
	if c.needReaderLocked() {
		c.giveServeLocked()
	} else {
		c.armLocked()
	}
	c.role.mu.Unlock()
}

// wait waits for the response of call id on ch, or for ctx.
func (c *Conn) wait(ctx context.Context, id uint64, ch chan response) (proto.Value, error) {
	select {
	case r := <-ch:
		return received(ch, r)
	case <-ctx.Done():
		c.link.forget(id)
		// The response may have arrived meanwhile; prefer it.
		select {
		case r := <-ch:
			return received(ch, r)
		default:
		}
		return nil, proto.Errorf(proto.CodeTimeout, "%s did not answer in time: %v", c.link.peer, ctx.Err())
	}
}
