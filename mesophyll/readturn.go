package mesophyll

import (
	"context"

	"github.com/templateworker/templateworker/proto"
)

// The worker's reading of the connection moves between goroutines. One
// goroutine at a time is the reader: it reads frames and handles their
// messages in order (Serve's goroutine at first). An event it runs inline
// (Inliner) keeps the reading to itself while it runs, and its store calls
// read the connection themselves (pumpCall), which saves hand-offs. A
// tenant must not hold up the others that way: once an inline event has
// run long (the worker decides: InlineHandoff), a new goroutine becomes
// the reader and goes on from the next message, and the inline event
// finishes as if it had been dispatched on a goroutine of its own (its
// store calls wait for their answers like any other call; its answer is
// sent directly). No timer is armed per call: a timer earlier than the
// netpoller's next wake-up costs a thread wake-up on every call.

// readerTurn identifies one reader: the goroutine running loop with it.
// (Not zero-sized: distinct zero-sized values may share one address.)
type readerTurn struct{ _ byte }

// inlineRunKey is the ctx key of an inline event's run: its value is the
// *inlineRun.
type inlineRunKey struct{}

// inlineRun is the state of one event run inline. It is also the event's
// ctx (the Client's inlineCtx carrying the run under inlineRunKey), so
// that an inline event costs no context.WithValue of its own.
type inlineRun struct {
	context.Context // the Client's inlineCtx
	c               *Client
	turn            *readerTurn // the reader it ran on
}

// Value returns the run itself for inlineRunKey, else inlineCtx's value.
func (r *inlineRun) Value(key any) any {
	if key == (inlineRunKey{}) {
		return r
	}
	return r.Context.Value(key)
}

// InlineHandoff returns, for the ctx of an event that a Client runs inline
// (the ctx Inliner.TryDispatchEvent gets), the function that hands the
// reading of the connection to another goroutine; nil for any other ctx.
// The worker calls it once its call has run long (from the call's own
// goroutine or one of its coroutines': it is safe for concurrent use, and
// does nothing once the event has ended); a store call that is reading
// for itself at that moment hands off once its answer is in.
func InlineHandoff(ctx context.Context) func() {
	r, ok := ctx.Value(inlineRunKey{}).(*inlineRun)
	if !ok || r == nil {
		return nil
	}
	return func() { r.c.handOff(r) }
}

// startInline records that the reader is about to try an inline event and
// returns its run and the ctx to pass.
func (c *Client) startInline(turn *readerTurn) (*inlineRun, context.Context) {
	r := &inlineRun{Context: c.inlineCtx, c: c, turn: turn}
	c.turnMu.Lock()
	c.armed = r
	c.turnMu.Unlock()
	return r, r
}

// endInline disarms run r and reports whether the reading was handed off
// while it ran.
func (c *Client) endInline(r *inlineRun) (handedOff bool) {
	c.turnMu.Lock()
	defer c.turnMu.Unlock()
	if c.armed == r {
		c.armed = nil
	}
	if c.reader != r.turn {
		c.running.Add(-1) // counted as a request of its own since the hand-off
		return true
	}
	return false
}

// handOff makes a new goroutine the reader if run r still runs inline on
// the reader and is not reading itself (pumpCall); if it is, pumpCall
// hands off once its frame is handled.
func (c *Client) handOff(r *inlineRun) {
	c.turnMu.Lock()
	defer c.turnMu.Unlock()
	if c.armed != r || c.reader != r.turn {
		return
	}
	if c.pumping {
		c.handoffWanted = true
		return
	}
	c.moveReaderLocked()
}

// moveReaderLocked starts a new reader; the inline event running on the
// old one counts as a request served on a goroutine of its own from now
// on, so that no later event overtakes it inline. turnMu is held.
func (c *Client) moveReaderLocked() {
	c.log.Debug().Msg("an inline call runs long: the reading moves to a new goroutine")
	c.armed, c.handoffWanted = nil, false
	c.running.Add(1)
	turn := &readerTurn{}
	c.reader = turn
	go c.loop(turn)
}

// isReader reports whether turn is still the reader.
func (c *Client) isReader(turn *readerTurn) bool {
	c.turnMu.Lock()
	defer c.turnMu.Unlock()
	return c.reader == turn
}

// loop reads frames and handles their messages as reader turn until the
// connection ends (then it closes c.loopEnded) or the reading is handed to
// another goroutine. The frame being handled and the position in it are
// the Client's, so that the next reader goes on where this one stopped.
func (c *Client) loop(turn *readerTurn) {
	for {
		if c.next >= len(c.msgs) {
			c.collecting = false
			c.flushOut()
			if err := c.link.readFrame(&c.buf, &c.frame); err != nil {
				c.readFailed(err)
				close(c.loopEnded)
				return
			}
			c.msgs, c.next = c.msgs[:0], 0
			if c.frame.Batch != nil {
				for i := range c.frame.Batch {
					c.msgs = append(c.msgs, &c.frame.Batch[i])
				}
			} else {
				c.single = c.frame
				c.msgs = append(c.msgs, &c.single)
			}
			c.collecting = c.frame.Batch != nil
		}
		m := c.msgs[c.next]
		c.next++
		if err := c.handle(c.hctx, c.handler, m, turn); err != nil {
			c.readFailed(err)
			close(c.loopEnded)
			return
		}
		if !c.isReader(turn) {
			return
		}
	}
}

// pumpTurn claims the reading for a store call of an inline event on
// reader turn: false if the reading was handed off (the call then waits
// like any other).
func (c *Client) pumpTurn(turn *readerTurn) bool {
	c.turnMu.Lock()
	defer c.turnMu.Unlock()
	if c.reader != turn {
		return false
	}
	c.pumping = true
	return true
}

// pumpDone ends a store call's reading; if a hand-off came due while it
// read, it happens now (handOffNow: the call stops reading and waits).
func (c *Client) pumpDone(handOffNow bool) {
	c.turnMu.Lock()
	defer c.turnMu.Unlock()
	c.pumping = false
	if c.handoffWanted && (handOffNow || c.armed != nil) {
		c.moveReaderLocked()
	}
	c.handoffWanted = false
}

// handoffDue reports whether a hand-off came due while a store call read.
func (c *Client) handoffDue() bool {
	c.turnMu.Lock()
	defer c.turnMu.Unlock()
	return c.handoffWanted
}

// awaitResponse waits for the answer of store call req on ch, as a call
// that does not read.
func awaitResponse(ctx context.Context, c *Client, req uint64, ch chan response) (proto.Value, error) {
	select {
	case r := <-ch:
		return received(ch, r)
	case <-ctx.Done():
		c.link.forget(req)
		select { // the answer may have arrived meanwhile: prefer it
		case r := <-ch:
			return received(ch, r)
		default:
		}
		return nil, proto.Errorf(proto.CodeTimeout, "master did not answer in time: %v", ctx.Err())
	}
}
