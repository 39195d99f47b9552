package mesophyll

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/coder/websocket"

	"github.com/templateworker/templateworker/proto"
)

// Writes are combined. A sender that finds the connection idle writes its
// frame itself, with no hand-off to another goroutine, so a lone call pays
// nothing for combining. Frames sent while a write is in progress are
// queued, and the goroutine that was writing sends everything queued
// meanwhile as one Batch frame ({"Batch":[m1,m2,...]}) when it is done:
// under load one write system call carries many messages in each
// direction. Order is preserved.

// maxFrameHeader is the upgrade request's header in which a worker
// announces the largest frame it accepts; the master sends Batch frames
// only to a worker that did.
const maxFrameHeader = "X-Mesophyll-Max-Frame"

// batchMax is the largest Batch frame written, in bytes; the peer's frame
// limit lowers it. A frame larger than this is written alone.
const batchMax = 64 << 10

// maxQueued bounds the bytes of frames waiting behind a write: a sender
// that finds more waits (respecting its ctx) until the queue is taken.
const maxQueued = 4 << 20

// leaderRounds is how many batches a sender writes for others after its own
// frame before it hands the rest of the queue to a new goroutine and goes
// back to its caller.
const leaderRounds = 4

// writer is a link's write side.
type writer struct {
	mu      sync.Mutex
	writing bool     // a goroutine is writing; others queue
	queue   [][]byte // frames waiting, in order
	spare   [][]byte // an emptied queue, reused
	queued  int      // bytes in queue
	// flushed, when not nil, is closed when the queue is next taken;
	// senders waiting for room made it.
	flushed chan struct{}
	// batchMax is the largest Batch frame the peer accepts; 0 when the
	// peer did not say it takes Batch frames.
	batchMax int
	// frameMax is the largest frame the peer accepts: what it announced,
	// DefaultMaxFrame if it did not. A larger frame is refused before it
	// is sent, never written for the peer to close the connection over.
	frameMax int
	// buf holds the Batch frame being built; only the goroutine writing
	// uses it.
	buf []byte
	// batches counts the Batch frames written (tests and benchmarks).
	batches atomic.Int64
}

// setBatchMax lets the link combine frames into Batch frames of at most
// peerMax bytes (capped at batchMax); peerMax 0 turns combining off.
func (l *link) setBatchMax(peerMax int64) {
	l.w.mu.Lock()
	defer l.w.mu.Unlock()
	l.w.batchMax = int(min(max(peerMax, 0), batchMax))
	if peerMax > 0 {
		l.w.frameMax = int(peerMax)
	}
}

// maxFrame returns the largest frame the peer accepts.
func (l *link) maxFrame() int {
	l.w.mu.Lock()
	defer l.w.mu.Unlock()
	return l.w.frameMax
}

// tooLarge is the error of a frame over the peer's limit: nothing was
// sent and the connection is unharmed.
func (l *link) tooLarge(size, limit int) *proto.Error {
	return proto.Errorf(proto.CodeTooLarge, "message of %d bytes is over the %d-byte frame limit of %s (--mesophyll-max-frame)", size, limit, l.peer)
}

// send writes one encoded frame, or queues it behind the write in
// progress; queued frames are written by that writer, so send returns
// without waiting for them. Only waiting for room in a full queue respects
// ctx: a frame cut short would break the connection for every other call.
// An error means the frame will not be sent; a queued frame that fails to
// be written ends the link, which fails every waiting call.
func (l *link) send(ctx context.Context, frame []byte) error { return l.sendFrames(ctx, frame) }

// sendFrames sends frames in order, as send does.
func (l *link) sendFrames(ctx context.Context, frames ...[]byte) error {
	size := 0
	w := &l.w
	w.mu.Lock()
	for _, f := range frames {
		if len(f) > w.frameMax {
			limit := w.frameMax
			w.mu.Unlock()
			return l.tooLarge(len(f), limit)
		}
		size += len(f)
	}
	for w.writing && w.queued > 0 && w.queued+size > maxQueued {
		if w.flushed == nil {
			w.flushed = make(chan struct{})
		}
		ch := w.flushed
		w.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return proto.Errorf(proto.CodeTimeout, "send to %s: %v", l.peer, ctx.Err())
		case <-l.done:
			return l.lostError()
		}
		w.mu.Lock()
	}
	select {
	case <-l.done:
		w.mu.Unlock()
		return l.lostError()
	default:
	}
	if w.writing {
		w.queue = append(w.queue, frames...)
		w.queued += size
		w.mu.Unlock()
		return nil
	}
	w.writing = true
	limit := w.batchMax
	w.mu.Unlock()

	if limit > 0 && l.busy() {
		// Under load (other calls wait for answers), let the goroutines
		// that are about to send run first: their frames queue meanwhile
		// and join this write as one Batch. A lone call does not yield:
		// on an idle machine that costs a thread wake-up.
		runtime.Gosched()
		if queued, _ := l.takeQueue(); len(queued) > 0 {
			all := make([][]byte, 0, len(frames)+len(queued))
			frames = append(append(all, frames...), queued...)
			l.giveBack(queued)
		}
	}
	if err := l.writeFrames(frames, limit); err != nil {
		l.writeFailed(err)
		return l.lostError()
	}
	l.drain(leaderRounds)
	return nil
}

// takeQueue takes the queued frames, and the batch limit to write them
// with; the caller is the goroutine writing.
func (l *link) takeQueue() ([][]byte, int) {
	w := &l.w
	w.mu.Lock()
	defer w.mu.Unlock()
	frames := w.queue
	if len(frames) == 0 {
		return nil, w.batchMax
	}
	w.queue, w.spare = w.spare, nil
	w.queued = 0
	if w.flushed != nil {
		close(w.flushed)
		w.flushed = nil
	}
	return frames, w.batchMax
}

// giveBack keeps the emptied slice of a taken queue for reuse.
func (l *link) giveBack(frames [][]byte) {
	clear(frames)
	l.w.mu.Lock()
	l.w.spare = frames[:0]
	l.w.mu.Unlock()
}

// drain writes the queued frames until the queue is empty, then marks the
// link idle. After rounds batches (rounds < 0: no limit) it hands the rest
// to a new goroutine.
func (l *link) drain(rounds int) {
	w := &l.w
	for i := 0; ; i++ {
		w.mu.Lock()
		if len(w.queue) == 0 {
			w.writing = false
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
		if i == rounds {
			go l.drain(-1)
			return
		}
		frames, limit := l.takeQueue()
		err := l.writeFrames(frames, limit)
		l.giveBack(frames)
		if err != nil {
			w.mu.Lock()
			w.queue, w.queued = nil, 0
			w.writing = false
			w.mu.Unlock()
			l.writeFailed(err)
			return
		}
	}
}

// writeFrames writes frames in order, combining consecutive ones into
// Batch frames of at most limit bytes. Only the goroutine writing calls
// it.
func (l *link) writeFrames(frames [][]byte, limit int) error {
	w := &l.w
	const open, sep, end = `{"Batch":[`, ",", `]}`
	for len(frames) > 0 {
		n, size := 1, len(open)+len(frames[0])+len(end)
		for n < len(frames) && size+len(sep)+len(frames[n]) <= limit {
			size += len(sep) + len(frames[n])
			n++
		}
		frame := frames[0]
		if n > 1 {
			b := append(w.buf[:0], open...)
			for i, f := range frames[:n] {
				if i > 0 {
					b = append(b, sep...)
				}
				b = append(b, f...)
			}
			frame = append(b, end...)
			w.buf = frame
			w.batches.Add(1)
		}
		if err := l.ws.Write(context.Background(), websocket.MessageText, frame); err != nil {
			return err
		}
		frames = frames[n:]
	}
	return nil
}

// writeFailed ends the link after a failed write.
func (l *link) writeFailed(err error) {
	l.shut(websocket.StatusInternalError, "write failed", fmt.Errorf("write frame: %w", err))
}

// batchesWritten returns the number of Batch frames written so far.
func (l *link) batchesWritten() int64 { return l.w.batches.Load() }

// busy reports whether more than one call waits for an answer.
func (l *link) busy() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.pending) > 1
}
