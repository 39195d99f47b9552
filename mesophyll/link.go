package mesophyll

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/coder/websocket"

	"github.com/templateworker/templateworker/proto"
)

// DefaultMaxFrame is the default limit of one frame, in bytes.
const DefaultMaxFrame = 4 << 20

// maxReason is the longest close reason sent: a close frame's payload is at
// most 125 bytes, two of which are the status code.
const maxReason = 120

// response is what a waited call receives.
type response struct {
	result proto.Value
	err    *proto.Error
}

// link is what both ends of a connection share: serialised writes, the
// table of calls waiting for a response, and the connection's end.
type link struct {
	ws *websocket.Conn
	// w serialises writes and combines the frames queued meanwhile
	// into Batch frames (writer.go).
	w writer
	// lost is the code calls fail with when the connection ends.
	lost string
	// peer names the other end in errors, e.g. "worker 3".
	peer string

	next atomic.Uint64 // last req_id used

	mu      sync.Mutex
	pending map[uint64]chan response
	closed  bool
	cause   error // why the link ended; nil for a normal closure

	done chan struct{}
}

func newLink(ws *websocket.Conn, lost, peer string) *link {
	return &link{
		ws:      ws,
		w:       writer{flushed: make(chan struct{}), frameMax: DefaultMaxFrame},
		lost:    lost,
		peer:    peer,
		pending: make(map[uint64]chan response),
		done:    make(chan struct{}),
	}
}

// reqID returns a fresh request id, never 0.
func (l *link) reqID() uint64 { return l.next.Add(1) }

// sendMsg encodes m and sends it.
func (l *link) sendMsg(ctx context.Context, m *proto.Message) error {
	b, err := marshal(m)
	if err != nil {
		return proto.Errorf(proto.CodeBadRequest, "encode frame for %s: %v", l.peer, err)
	}
	return l.send(ctx, b)
}

// marshal encodes v as JSON without HTML escaping: a '<' in a template
// or a value stays one byte on the wire, not six.
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// call sends frame, which carries request id, and waits for its response.
func (l *link) call(ctx context.Context, id uint64, frame []byte) (proto.Value, error) {
	ch, err := l.register(id)
	if err != nil {
		return nil, err
	}
	if err := l.send(ctx, frame); err != nil {
		l.forget(id)
		return nil, err
	}
	select {
	case r := <-ch:
		return received(ch, r)
	case <-ctx.Done():
		l.forget(id)
		// The response may have arrived meanwhile; prefer it.
		select {
		case r := <-ch:
			return received(ch, r)
		default:
		}
		return nil, proto.Errorf(proto.CodeTimeout, "%s did not answer in time: %v", l.peer, ctx.Err())
	}
}

// respChans recycles the one-slot channels of waited calls (two
// allocations a call otherwise). A channel goes back only once its one
// response has been received from it: the channel of a call that gave up
// may still get its response later, and is left to the collector.
var respChans = sync.Pool{New: func() any { return make(chan response, 1) }}

// received returns the response r just received from ch and recycles ch.
func received(ch chan response, r response) (proto.Value, error) {
	respChans.Put(ch)
	return r.value()
}

// register makes ch wait for the response to request id.
func (l *link) register(id uint64) (chan response, error) {
	ch := respChans.Get().(chan response)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		respChans.Put(ch)
		return nil, l.lostErrorLocked()
	}
	l.pending[id] = ch
	return ch, nil
}

// value returns the result or error of a response.
func (r response) value() (proto.Value, error) {
	if r.err != nil {
		return nil, r.err
	}
	return r.result, nil
}

// forget removes a pending call.
func (l *link) forget(id uint64) {
	l.mu.Lock()
	delete(l.pending, id)
	l.mu.Unlock()
}

// resolve delivers the response of call id; it reports false when no call
// waits for it (it timed out, or the peer made the id up).
func (l *link) resolve(id uint64, r response) bool {
	l.mu.Lock()
	ch, ok := l.pending[id]
	delete(l.pending, id)
	l.mu.Unlock()
	if ok {
		ch <- r // buffered, and each channel gets one send
	}
	return ok
}

// inFlight returns the number of calls waiting for a response.
func (l *link) inFlight() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.pending)
}

// lostError is the error of calls on an ended link.
func (l *link) lostError() *proto.Error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lostErrorLocked()
}

// lostErrorLocked is lostError with l.mu held.
func (l *link) lostErrorLocked() *proto.Error {
	cause := l.cause
	if cause == nil {
		return proto.Errorf(l.lost, "connection to %s closed", l.peer)
	}
	return proto.Errorf(l.lost, "connection to %s lost: %v", l.peer, cause)
}

// shut ends the link once: it records cause, fails every waiting call,
// closes done and starts the WebSocket close handshake with code and
// reason. It reports whether this call ended the link.
func (l *link) shut(code websocket.StatusCode, reason string, cause error) bool {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return false
	}
	l.closed = true
	l.cause = cause
	waiting := l.pending
	l.pending = nil
	err := l.lostErrorLocked()
	l.mu.Unlock()

	for _, ch := range waiting {
		ch <- response{err: err}
	}
	close(l.done)
	if len(reason) > maxReason {
		reason = strings.ToValidUTF8(reason[:maxReason], "")
	}
	// The handshake waits for the peer for up to 10 s: never make the
	// caller wait for it.
	go l.ws.Close(code, reason)
	return true
}

// err returns why the link ended, nil while it is up or after a normal
// closure.
func (l *link) err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cause
}

// frameError is a frame the reader refuses; the link closes with code.
type frameError struct {
	code   websocket.StatusCode
	reason string
}

func (e *frameError) Error() string { return e.reason }

// readFrame reads the next frame into buf and decodes it into m, which
// holds exactly one message on success. Errors are *frameError for frames
// that violate the protocol, other errors for the connection itself.
func (l *link) readFrame(buf *bytes.Buffer, m *proto.Message) error {
	typ, r, err := l.ws.Reader(context.Background())
	if err != nil {
		return err
	}
	if buf.Cap() > 1<<20 {
		*buf = bytes.Buffer{} // do not keep a large frame's buffer
	}
	buf.Reset()
	if _, err := buf.ReadFrom(r); err != nil {
		if errors.Is(err, websocket.ErrMessageTooBig) {
			return &frameError{websocket.StatusMessageTooBig, "frame too large: " + err.Error()}
		}
		return err
	}
	if typ != websocket.MessageText {
		return &frameError{websocket.StatusUnsupportedData, "binary frames are not supported"}
	}
	if decodeFast(buf.Bytes(), m) {
		return nil
	}
	*m = proto.Message{}
	if err := json.Unmarshal(buf.Bytes(), m); err != nil {
		return &frameError{websocket.StatusInvalidFramePayloadData, "invalid frame: " + err.Error()}
	}
	if err := checkOne(m, -1); err != nil {
		return err
	}
	if m.Batch == nil {
		return nil
	}
	if len(m.Batch) == 0 {
		return &frameError{websocket.StatusPolicyViolation, "empty Batch"}
	}
	for i := range m.Batch {
		if err := checkOne(&m.Batch[i], i); err != nil {
			return err
		}
		if m.Batch[i].Batch != nil {
			return &frameError{websocket.StatusPolicyViolation, fmt.Sprintf("Batch element %d is a Batch", i)}
		}
	}
	return nil
}

// checkOne checks that m, the frame (elem < 0) or element elem of its
// Batch, holds exactly one message.
func checkOne(m *proto.Message, elem int) error {
	name, n := messageName(m)
	if n == 1 {
		return nil
	}
	what := "frame"
	if elem >= 0 {
		what = fmt.Sprintf("Batch element %d", elem)
	}
	switch n {
	case 0:
		return &frameError{websocket.StatusPolicyViolation, what + " holds no known message"}
	}
	return &frameError{websocket.StatusPolicyViolation, fmt.Sprintf("%s holds %d messages (%s, ...), want one", what, n, name)}
}

// eachMessage calls fn with the message of a frame read by readFrame, or
// with each message of its Batch in order, until fn fails.
func eachMessage(m *proto.Message, fn func(*proto.Message) error) error {
	if m.Batch == nil {
		return fn(m)
	}
	for i := range m.Batch {
		if err := fn(&m.Batch[i]); err != nil {
			return err
		}
	}
	return nil
}

// messageName returns the name of the first message m holds and how many
// it holds.
func messageName(m *proto.Message) (string, int) {
	name, n := "", 0
	see := func(set bool, s string) {
		if set {
			if n == 0 {
				name = s
			}
			n++
		}
	}
	see(m.Hello != nil, "Hello")
	see(m.DispatchEvent != nil, "DispatchEvent")
	see(m.RunScript != nil, "RunScript")
	see(m.DropTenant != nil, "DropTenant")
	see(m.DropAll != nil, "DropAll")
	see(m.Shutdown != nil, "Shutdown")
	see(m.StoreResponse != nil, "StoreResponse")
	see(m.DispatchResponse != nil, "DispatchResponse")
	see(m.Ack != nil, "Ack")
	see(m.Heartbeat != nil, "Heartbeat")
	see(m.TemplatesFor != nil, "TemplatesFor")
	see(m.TenantsFor != nil, "TenantsFor")
	see(m.KvGet != nil, "KvGet")
	see(m.KvSet != nil, "KvSet")
	see(m.KvDelete != nil, "KvDelete")
	see(m.KvFind != nil, "KvFind")
	see(m.Batch != nil, "Batch")
	see(m.ScheduleEvent != nil, "ScheduleEvent")
	see(m.CancelEvent != nil, "CancelEvent")
	see(m.ScheduledEvents != nil, "ScheduledEvents")
	return name, n
}

// closeCause turns a read error into the link's end: the close code to
// answer with and the cause (nil for a normal closure by the peer).
func closeCause(err error) (websocket.StatusCode, string, error) {
	var fe *frameError
	if errors.As(err, &fe) {
		return fe.code, fe.reason, err
	}
	switch websocket.CloseStatus(err) {
	case websocket.StatusNormalClosure, websocket.StatusGoingAway:
		return websocket.StatusNormalClosure, "", nil
	case -1:
		return websocket.StatusInternalError, "read failed", fmt.Errorf("read frame: %w", err)
	}
	return websocket.StatusNormalClosure, "", fmt.Errorf("peer closed the connection: %w", err)
}
