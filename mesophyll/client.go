package mesophyll

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/internal/tenantlog"
	"github.com/templateworker/templateworker/proto"
)

// Handler serves the master's requests in a worker. Its methods are called
// concurrently, one goroutine per request, and must return once their ctx
// is done; the worker serialises execution itself. Errors that are
// *proto.Error reach the master with their code, others as internal.
//
// Nowait events need no method of their own: Serve runs them with
// DispatchEvent, logs a failure, and then acknowledges them.
type Handler interface {
	// DispatchEvent runs ev for tenant id and returns the result. Nowait
	// events are run with it too, their result discarded.
	DispatchEvent(ctx context.Context, id proto.Id, ev proto.Event) (proto.Value, error)
	// RunScript runs code as a template named name in tenant id's VM.
	RunScript(ctx context.Context, id proto.Id, name, code string, ev proto.Event) (proto.Value, error)
	// DropTenant discards tenant id's VM and cached templates.
	DropTenant(ctx context.Context, id proto.Id) error
	// DropAll discards every tenant's VM and cached templates.
	DropAll(ctx context.Context) error
	// Tenants returns the number of tenant VMs loaded, for heartbeats.
	Tenants() int
}

// HeartbeatReporter is an optional interface of a Handler that reports
// more than Tenants in every heartbeat.
type HeartbeatReporter interface {
	// Heartbeat returns the figures of the next heartbeat.
	Heartbeat() proto.Heartbeat
}

// Inliner is an optional interface of a Handler. A worker that is idle —
// nothing running and nothing queued — can run an event on the goroutine
// that read it from the connection, which saves the hand-offs to and from
// another goroutine (on a small machine each is a thread wake-up).
// TryDispatchEvent runs ev like DispatchEvent if the worker is idle and
// reports whether it did; otherwise the Client falls back to
// DispatchEvent on a goroutine of its own. Store calls made while an event
// runs inline are answered: the Client reads the connection from within
// them, recognising them by the ctx it passed.
type Inliner interface {
	TryDispatchEvent(ctx context.Context, id proto.Id, ev proto.Event) (v proto.Value, ran bool, err error)
}

// Queuer is an optional interface of a Handler. QueueDispatchEvent queues
// nowait event ev in the worker's own queue without waiting for it to run,
// and later calls done with its outcome (on any goroutine); an error
// means it was refused at once and done is not called. The Client calls it
// on the goroutine that read the event, so the events of one tenant reach
// the worker in the order the master sent them; without it each nowait
// event goes to DispatchEvent on a goroutine of its own, in no set order.
type Queuer interface {
	QueueDispatchEvent(ctx context.Context, id proto.Id, ev proto.Event, done func(error)) error
}

// ClientOptions configure a Client.
type ClientOptions struct {
	// MaxFrame is the largest frame accepted, in bytes. Default 4 MiB.
	MaxFrame int64
	// Logger receives errors of nowait events and of the connection.
	Logger zerolog.Logger
}

// Client is a worker's end of Mesophyll. Besides serving the master's
// requests (Serve), it is the worker's store: its Templates, TenantsFor and
// Kv* methods ask the master. They are safe for concurrent use, and are
// answered once Serve runs; when the connection ends they fail with
// store_unavailable.
type Client struct {
	workerID  int
	link      *link
	log       zerolog.Logger
	lines     *tenantlog.Limiter // the lines about a tenant's failed events
	heartbeat time.Duration
	buf       bytes.Buffer // read buffer, kept from Dial to Serve

	// inlineCtx is the ctx of events run inline by Serve's goroutine;
	// store calls made under it read the connection themselves.
	inlineCtx context.Context
	hctx      context.Context // the ctx of requests, cancelled when Serve stops
	windows   windows         // the open windows of pipelined events, by tenant
	handler   Handler
	pumpBuf   bytes.Buffer  // read buffer of those store calls
	pumpMsg   proto.Message // the frame they read

	// The reader's state (readturn.go): the frame being handled, its
	// messages and the next one, kept here so that a new reader goes on
	// where the last one stopped.
	frame     proto.Message
	single    proto.Message
	msgs      []*proto.Message
	next      int
	loopEnded chan struct{} // closed when reading has ended

	turnMu        sync.Mutex
	reader        *readerTurn // the goroutine that reads now
	armed         *inlineRun  // the inline event the reader runs, if any
	pumping       bool        // the reader is in a store call's reading
	handoffWanted bool        // a hand-off came due during that reading

	// Answers collected while Serve handles a Batch frame (emit); only
	// Serve's goroutine uses them.
	collecting  bool
	collectTime time.Duration // collectTime, or longer in tests
	out         [][]byte
	outBytes    int
	outSince    time.Time

	served       atomic.Bool
	shuttingDown atomic.Bool // Shutdown received: refuse new requests
	shutDown     atomic.Bool // Shutdown completed
	handlers     sync.WaitGroup
	running      atomic.Int64 // requests served on goroutines of their own
}

// Dial connects worker workerID to the master's Mesophyll endpoint url
// (ws://127.0.0.1:7000/ws, or unix:PATH for a Unix socket: see
// Listener.URL), authenticating with token, and waits for Hello. ctx bounds
// the whole handshake.
func Dial(ctx context.Context, url string, workerID int, token string, opts ClientOptions) (*Client, error) {
	if opts.MaxFrame <= 0 {
		opts.MaxFrame = DefaultMaxFrame
	}
	hdr := http.Header{}
	hdr.Set("Authorization", "Bearer "+token)
	hdr.Set("X-Worker-Id", strconv.Itoa(workerID))
	hdr.Set(maxFrameHeader, strconv.FormatInt(opts.MaxFrame, 10))
	target, hc := dialTarget(url)
	ws, resp, err := websocket.Dial(ctx, target, &websocket.DialOptions{
		HTTPClient:      hc,
		HTTPHeader:      hdr,
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return nil, fmt.Errorf("mesophyll: dial %s as worker %d: refused with HTTP %s", url, workerID, resp.Status)
		}
		return nil, fmt.Errorf("mesophyll: dial %s as worker %d: %w", url, workerID, err)
	}
	ws.SetReadLimit(opts.MaxFrame)
	c := &Client{
		collectTime: collectTime,
		workerID:    workerID,
		link:        newLink(ws, proto.CodeStoreUnavailable, "master"),
		log:         opts.Logger.With().Str("component", "mesophyll").Int("worker", workerID).Logger(),
		lines:       tenantlog.New(tenantlog.DefaultPerSecond, tenantlog.DefaultBurst),
	}

	stop := context.AfterFunc(ctx, func() { ws.CloseNow() })
	var m proto.Message
	err = c.link.readFrame(&c.buf, &m)
	stopped := stop()
	switch {
	case err != nil && !stopped:
		err = fmt.Errorf("wait for Hello: %w", ctx.Err())
	case err != nil:
		err = fmt.Errorf("wait for Hello: %w", err)
	case m.Hello == nil || m.Batch != nil:
		name, _ := messageName(&m)
		err = fmt.Errorf("got %s before Hello", name)
		c.link.shut(websocket.StatusPolicyViolation, "expected Hello", err)
	}
	if err != nil {
		ws.CloseNow()
		return nil, fmt.Errorf("mesophyll: dial %s as worker %d: %w", url, workerID, err)
	}
	c.link.setBatchMax(m.Hello.MaxFrame)
	c.heartbeat = time.Duration(m.Hello.HeartbeatIntervalMS) * time.Millisecond
	if c.heartbeat <= 0 {
		c.heartbeat = time.Second
	}
	return c, nil
}

// MaxFrame returns the largest frame the master accepts, as its Hello
// said (DefaultMaxFrame if it did not): a response over it is refused
// before it is sent.
func (c *Client) MaxFrame() int { return c.link.maxFrame() }

// HeartbeatInterval returns the interval the master asked for in Hello.
func (c *Client) HeartbeatInterval() time.Duration { return c.heartbeat }

// Close closes the connection; a running Serve returns an error.
func (c *Client) Close() error {
	c.link.shut(websocket.StatusGoingAway, "worker closing", errors.New("closed by worker"))
	return nil
}

// Serve serves the master's requests with h and sends heartbeats until the
// connection ends. It returns nil once the master's Shutdown was received
// and every request in flight has finished; an error if the connection is
// lost or ctx is done first. The ctx passed to h is cancelled when Serve
// stops, and Serve waits for h's calls to return. Serve may be called once.
func (c *Client) Serve(ctx context.Context, h Handler) error {
	if c.served.Swap(true) {
		return errors.New("mesophyll: Serve called twice")
	}
	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c.hctx, c.handler = hctx, h
	c.inlineCtx = hctx
	stop := context.AfterFunc(ctx, func() {
		c.link.shut(websocket.StatusGoingAway, "worker stopping", fmt.Errorf("worker stopping: %w", context.Cause(ctx)))
	})
	defer stop()
	go c.sendHeartbeats(h)

	c.loopEnded = make(chan struct{})
	turn := &readerTurn{}
	c.turnMu.Lock()
	c.reader = turn
	c.turnMu.Unlock()
	c.loop(turn)
	<-c.loopEnded // the reading may have moved to other goroutines
	cancel()
	c.handlers.Wait()
	if c.shutDown.Load() {
		return nil
	}
	if err := c.link.err(); err != nil {
		return fmt.Errorf("mesophyll: %w", err)
	}
	return errors.New("mesophyll: master closed the connection")
}

// readFailed ends the link after reading failed with err.
func (c *Client) readFailed(err error) {
	code, reason, cause := closeCause(err)
	var fe *frameError
	if errors.As(err, &fe) {
		c.log.Error().Int("code", int(code)).Str("reason", reason).Msg("closing connection: protocol violation")
	}
	c.link.shut(code, reason, cause)
}

// handle acts on one message of the master.
func (c *Client) handle(ctx context.Context, h Handler, m *proto.Message, turn *readerTurn) error {
	switch {
	case m.StoreResponse != nil:
		r := m.StoreResponse
		if !c.link.resolve(r.ReqID, response{result: r.Result, err: r.Error}) {
			c.log.Debug().Uint64("req_id", r.ReqID).Msg("store response to no waiting call")
		}
	case m.DispatchEvent != nil:
		q := m.DispatchEvent
		win := c.windows.of(q)
		if win != nil && win.stopped.Load() {
			c.ack(q, notRun())
			return nil
		}
		if c.inline(h, q, turn, win) {
			return nil
		}
		if q.ReqID == 0 && c.queue(withWindow(ctx, win), h, q) {
			return nil
		}
		if q.ReqID == 0 {
			c.run(func() {
				_, err := h.DispatchEvent(ctx, q.ID, q.Event)
				c.ack(q, err)
			}, func() {
				c.log.Warn().Str("tenant", q.ID.String()).Uint64("seq", q.Seq).Msg("nowait event refused: shutting down")
			})
			return nil
		}
		c.respond(q.ReqID, func() (proto.Value, error) { return h.DispatchEvent(ctx, q.ID, q.Event) })
	case m.RunScript != nil:
		q := m.RunScript
		c.respond(q.ReqID, func() (proto.Value, error) { return h.RunScript(ctx, q.ID, q.Name, q.Code, q.Event) })
	case m.DropTenant != nil:
		q := m.DropTenant
		c.respond(q.ReqID, func() (proto.Value, error) { return nil, h.DropTenant(ctx, q.ID) })
	case m.DropAll != nil:
		c.respond(m.DropAll.ReqID, func() (proto.Value, error) { return nil, h.DropAll(ctx) })
	case m.Shutdown != nil:
		if !c.shuttingDown.Swap(true) {
			c.log.Info().Msg("shutdown requested: finishing requests in flight")
			go func() {
				c.handlers.Wait()
				c.shutDown.Store(true)
				c.link.shut(websocket.StatusNormalClosure, "shutdown complete", nil)
			}()
		}
	default:
		name, _ := messageName(m)
		return &frameError{websocket.StatusPolicyViolation, "unexpected " + name + " from master"}
	}
	return nil
}

// inline runs q on this goroutine, the reader turn, if h is an Inliner
// with nothing else to do and no request read earlier is still being
// served, sends its response or Ack, and reports whether it did. If the
// event runs long, the reading moves to another goroutine meanwhile
// (readturn.go).
func (c *Client) inline(h Handler, q *proto.DispatchEvent, turn *readerTurn, win *window) bool {
	in, ok := h.(Inliner)
	// While requests read earlier run (or wait to) on goroutines of their
	// own, this one must not overtake them.
	if !ok || c.shuttingDown.Load() || c.running.Load() != 0 {
		return false
	}
	c.handlers.Add(1) // a Shutdown read meanwhile waits for it
	defer c.handlers.Done()
	run, ctx := c.startInline(turn)
	res, ran, err := in.TryDispatchEvent(withWindow(ctx, win), q.ID, q.Event)
	handedOff := c.endInline(run)
	if !ran {
		if handedOff {
			// The hand-off was called for an event that did not run:
			// a broken Inliner. Later messages may now overtake q.
			c.log.Error().Str("tenant", q.ID.String()).Msg("inline event reported not run after it started")
		}
		return false
	}
	var frame []byte
	if q.ReqID != 0 {
		frame = c.responseFrame(q.ReqID, res, err)
	} else {
		frame = c.ackFrame(q, err)
	}
	if handedOff {
		// The new reader owns the collected answers: send this one alone.
		if err := c.link.send(context.Background(), frame); err != nil {
			c.log.Debug().Err(err).Msg("send answer")
		}
		return true
	}
	c.emit(frame)
	return true
}

// queue hands nowait event q to h's own queue if h is a Queuer, and
// reports whether it did; its Ack is sent when it has run (or at once when
// refused).
func (c *Client) queue(ctx context.Context, h Handler, q *proto.DispatchEvent) bool {
	qu, ok := h.(Queuer)
	if !ok || c.shuttingDown.Load() {
		return false
	}
	c.handlers.Add(1) // Shutdown waits for it
	if err := qu.QueueDispatchEvent(ctx, q.ID, q.Event, func(err error) {
		defer c.handlers.Done()
		c.ack(q, err)
	}); err != nil {
		c.handlers.Done()
		WindowRan(ctx, err) // refused: the window's later events must not overtake it
		c.ack(q, err)
	}
	return true
}

// ack acknowledges nowait event q, which ended with err.
func (c *Client) ack(q *proto.DispatchEvent, err error) {
	if err := c.link.send(context.Background(), c.ackFrame(q, err)); err != nil {
		c.log.Debug().Err(err).Uint64("seq", q.Seq).Msg("send Ack")
	}
}

// ackFrame logs a failure of nowait event q and encodes its Ack.
func (c *Client) ackFrame(q *proto.DispatchEvent, err error) []byte {
	if err == nil {
		// {"Ack":{"seq":N}}, as encoding/json writes it, without it.
		b := make([]byte, 0, 40)
		b = append(b, `{"Ack":{"seq":`...)
		b = strconv.AppendUint(b, q.Seq, 10)
		return append(b, "}}"...)
	}
	ack := &proto.Ack{Seq: q.Seq}
	if err != nil {
		if ack.Code = proto.CodeOf(err); ack.Code != proto.CodeNotRun {
			ack.Message = proto.AsError(err).Message
			c.lines.Event(&c.log, zerolog.WarnLevel, q.ID).Str("event", q.Event.Name).Uint64("seq", q.Seq).
				Str("error", tenantlog.ErrorText(err)).Msg("nowait event failed")
		}
	}
	frame, _ := json.Marshal(proto.Message{Ack: ack}) // a number and strings: cannot fail
	return frame
}

// run runs do in a new goroutine, or refused on this one once shutting
// down.
func (c *Client) run(do, refused func()) {
	if c.shuttingDown.Load() {
		refused()
		return
	}
	c.handlers.Add(1)
	c.running.Add(1)
	go func() {
		defer c.handlers.Done()
		defer c.running.Add(-1)
		do()
	}()
}

// respond runs do for request req and sends its DispatchResponse.
func (c *Client) respond(req uint64, do func() (proto.Value, error)) {
	c.run(func() {
		res, err := do()
		c.sendResponse(req, res, err)
	}, func() {
		c.sendResponse(req, nil, proto.Errorf(proto.CodeShuttingDown, "worker %d is shutting down", c.workerID))
	})
}

func (c *Client) sendResponse(req uint64, res proto.Value, err error) {
	if err := c.link.send(context.Background(), c.responseFrame(req, res, err)); err != nil {
		c.log.Debug().Err(err).Uint64("req_id", req).Msg("send DispatchResponse")
	}
}

// responseFrame encodes the DispatchResponse of request req; a response
// over the master's frame limit becomes a result_too_large error, decided
// here before anything is sent: the connection, and every other call on
// it, is unharmed.
func (c *Client) responseFrame(req uint64, res proto.Value, err error) []byte {
	frame := responseFrame(req, res, err)
	if limit := c.link.maxFrame(); len(frame) > limit {
		code := proto.CodeResultTooLarge
		if e := proto.AsError(err); e != nil && e.Code != proto.CodeScriptError {
			code = e.Code // keep a limit's code; its message is cut below
		}
		frame = responseFrame(req, nil, proto.Errorf(code,
			"the response is %d bytes, over the %d-byte frame limit (--mesophyll-max-frame)", len(frame), limit))
	}
	return frame
}

// responseFrame encodes the DispatchResponse of request req.
func responseFrame(req uint64, res proto.Value, err error) []byte {
	if err == nil {
		if frame, ok := encodeResponse(req, res); ok {
			return frame
		}
	}
	r := &proto.DispatchResponse{ReqID: req, Result: res}
	if err != nil {
		r.Result, r.Error = nil, proto.AsError(err)
	}
	frame, merr := marshal(proto.Message{DispatchResponse: r})
	if merr != nil {
		r.Result, r.Error = nil, proto.Errorf(proto.CodeInternal, "result is not valid JSON: %v", merr)
		frame, _ = marshal(proto.Message{DispatchResponse: r})
	}
	return frame
}

// Answers of events run inline while Serve handles a Batch frame are
// collected and sent together once the frame is handled: what came in as
// one frame goes back as one. They are sent earlier when they reach
// batchMax bytes, when collectTime has passed since the first, and before
// an inline event waits for the store.
const collectTime = time.Millisecond

// emit sends a frame of Serve's goroutine: collected while a Batch frame
// is handled, at once otherwise.
func (c *Client) emit(frame []byte) {
	if !c.collecting {
		if err := c.link.send(context.Background(), frame); err != nil {
			c.log.Debug().Err(err).Msg("send answer")
		}
		return
	}
	if len(c.out) == 0 {
		c.outSince = time.Now()
	}
	c.out = append(c.out, frame)
	c.outBytes += len(frame)
	if c.outBytes >= batchMax || time.Since(c.outSince) >= c.collectTime {
		c.flushOut()
	}
}

// flushOut sends the collected answers.
func (c *Client) flushOut() {
	if len(c.out) == 0 {
		return
	}
	if err := c.link.sendFrames(context.Background(), c.out...); err != nil {
		c.log.Debug().Err(err).Int("frames", len(c.out)).Msg("send answers")
	}
	clear(c.out)
	c.out, c.outBytes = c.out[:0], 0
}

// sendHeartbeats sends a Heartbeat at once and then every interval until
// the connection ends.
func (c *Client) sendHeartbeats(h Handler) {
	t := time.NewTicker(c.heartbeat)
	defer t.Stop()
	for {
		hb := proto.Heartbeat{Tenants: h.Tenants()}
		if r, ok := h.(HeartbeatReporter); ok {
			hb = r.Heartbeat()
		}
		if err := c.link.sendMsg(context.Background(), &proto.Message{Heartbeat: &hb}); err != nil {
			return
		}
		select {
		case <-c.link.done:
			return
		case <-t.C:
		}
	}
}
