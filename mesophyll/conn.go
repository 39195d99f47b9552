package mesophyll

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
)

// storeConcurrency bounds the store requests of one worker served at once.
const storeConcurrency = 64

// Conn is the master's side of one worker's connection. Its methods are
// safe for concurrent use; calls that wait for the worker fail with
// worker_unavailable as soon as the connection ends, and with timeout when
// their ctx is done first (a call reading the connection for itself at
// that moment returns once the frame being waited for arrives, at the
// latest with the worker's next heartbeat: readrole.go).
type Conn struct {
	srv      *Server
	workerID int
	link     *link
	log      zerolog.Logger

	unacked  atomic.Int64 // nowait events sent and not acknowledged
	lastSeen atomic.Int64 // unix nanos of the last frame read
	stalled  atomic.Bool  // reading waits for a store slot
	storeSem chan struct{}
	role     readRole        // who reads the connection (readrole.go)
	ctx      context.Context // cancelled when the connection ends
	cancel   context.CancelFunc
}

func newConn(s *Server, id int, ws *websocket.Conn) *Conn {
	ctx, cancel := context.WithCancel(context.Background())
	c := &Conn{
		srv:      s,
		workerID: id,
		link:     newLink(ws, proto.CodeWorkerUnavailable, "worker "+strconv.Itoa(id)),
		log:      s.log.With().Int("worker", id).Logger(),
		storeSem: make(chan struct{}, storeConcurrency),
		role:     newReadRole(),
		ctx:      ctx,
		cancel:   cancel,
	}
	c.lastSeen.Store(time.Now().UnixNano())
	return c
}

// WorkerID returns the id of the worker at the other end.
func (c *Conn) WorkerID() int { return c.workerID }

// Done is closed when the connection has ended.
func (c *Conn) Done() <-chan struct{} { return c.link.done }

// Err returns why the connection ended: nil while it is up or after a
// normal closure.
func (c *Conn) Err() error { return c.link.err() }

// InFlight returns the number of waited calls without a response plus the
// nowait events not yet acknowledged.
func (c *Conn) InFlight() int {
	return c.link.inFlight() + int(max(c.unacked.Load(), 0))
}

// Close closes the connection with a normal closure and reason; calls in
// flight fail with worker_unavailable.
func (c *Conn) Close(reason string) {
	c.closeWith(websocket.StatusNormalClosure, reason, errors.New("closed by master: "+reason))
}

func (c *Conn) closeWith(code websocket.StatusCode, reason string, cause error) {
	if c.link.shut(code, reason, cause) {
		c.cancel()
	}
}

// DispatchEvent dispatches ev to tenant id and waits for its result.
func (c *Conn) DispatchEvent(ctx context.Context, id proto.Id, ev proto.Event) (proto.Value, error) {
	req := c.link.reqID()
	frame, err := encodeDispatchEvent(&proto.DispatchEvent{ID: id, Event: ev, ReqID: req})
	if err != nil {
		return nil, proto.Errorf(proto.CodeBadRequest, "encode request for worker %d: %v", c.workerID, err)
	}
	return c.roundTrip(ctx, req, frame)
}

// DispatchEventNoWait sends ev for tenant id without waiting; the worker
// acknowledges seq (which must not be 0) once the event has run, and the
// server reports it to OnAck.
func (c *Conn) DispatchEventNoWait(id proto.Id, ev proto.Event, seq uint64) error {
	if seq == 0 {
		return proto.Errorf(proto.CodeBadRequest, "nowait event needs a seq above 0")
	}
	frame, err := encodeDispatchEvent(&proto.DispatchEvent{ID: id, Event: ev, Seq: seq})
	if err != nil {
		return proto.Errorf(proto.CodeBadRequest, "encode event for worker %d: %v", c.workerID, err)
	}
	c.unacked.Add(1)
	err = c.link.send(context.Background(), frame)
	if err != nil {
		c.unacked.Add(-1)
		return err
	}
	c.wantReader() // for its Ack, and its store requests
	return nil
}

// DispatchEventWindow sends ev for tenant id as nowait event seq of
// pipelined window win (last: its final event), without waiting; the
// worker acknowledges seq once the event has run, or with code not_run if
// an earlier event of the window failed (proto.DispatchEvent).
func (c *Conn) DispatchEventWindow(id proto.Id, ev proto.Event, seq, win uint64, last bool) error {
	if seq == 0 || win == 0 {
		return proto.Errorf(proto.CodeBadRequest, "windowed event needs a seq and a window above 0")
	}
	frame, err := encodeDispatchEvent(&proto.DispatchEvent{ID: id, Event: ev, Seq: seq, Window: win, Last: last})
	if err != nil {
		return proto.Errorf(proto.CodeBadRequest, "encode event for worker %d: %v", c.workerID, err)
	}
	c.unacked.Add(1)
	if err = c.link.send(context.Background(), frame); err != nil {
		c.unacked.Add(-1)
		return err
	}
	c.wantReader()
	return nil
}

// RunScript runs code as a template named name in tenant id's VM and
// waits for its result.
func (c *Conn) RunScript(ctx context.Context, id proto.Id, name, code string, ev proto.Event) (proto.Value, error) {
	req := c.link.reqID()
	return c.call(ctx, req, &proto.Message{RunScript: &proto.RunScript{ID: id, Name: name, Code: code, Event: ev, ReqID: req}})
}

// DropTenant asks the worker to discard tenant id's VM and templates and
// waits until it has.
func (c *Conn) DropTenant(ctx context.Context, id proto.Id) error {
	req := c.link.reqID()
	_, err := c.call(ctx, req, &proto.Message{DropTenant: &proto.DropTenant{ID: id, ReqID: req}})
	return err
}

// DropAll asks the worker to discard every tenant's VM and templates and
// waits until it has.
func (c *Conn) DropAll(ctx context.Context) error {
	req := c.link.reqID()
	_, err := c.call(ctx, req, &proto.Message{DropAll: &proto.DropAll{ReqID: req}})
	return err
}

// Shutdown asks the worker to finish its in-flight work and exit. It
// returns once the request is sent; Done tells when the worker has closed
// the connection.
func (c *Conn) Shutdown(ctx context.Context) error {
	c.role.mu.Lock()
	c.role.shutdown = true // read on until the worker closes
	c.role.mu.Unlock()
	c.wantReader()
	return c.link.sendMsg(ctx, &proto.Message{Shutdown: &proto.Shutdown{}})
}

func (c *Conn) call(ctx context.Context, req uint64, m *proto.Message) (proto.Value, error) {
	b, err := marshal(m)
	if err != nil {
		return nil, proto.Errorf(proto.CodeBadRequest, "encode request for worker %d: %v", c.workerID, err)
	}
	return c.roundTrip(ctx, req, b)
}

// handle acts on one message of the worker.
func (c *Conn) handle(m *proto.Message) error {
	switch {
	case m.DispatchResponse != nil:
		r := m.DispatchResponse
		if !c.link.resolve(r.ReqID, response{result: r.Result, err: r.Error}) {
			c.log.Debug().Uint64("req_id", r.ReqID).Msg("response to no waiting call")
		}
	case m.Ack != nil:
		if c.unacked.Add(-1) < 0 {
			c.unacked.Store(0)
		}
		if c.srv.opts.OnAck != nil {
			c.srv.opts.OnAck(c.workerID, *m.Ack)
		}
	case m.Heartbeat != nil:
		c.role.own = true // only the reader calls handle
		if c.srv.opts.OnHeartbeat != nil {
			c.srv.opts.OnHeartbeat(c.workerID, *m.Heartbeat)
		}
	case m.TemplatesFor != nil:
		q := m.TemplatesFor
		c.store(q.ReqID, proto.CodeTemplateTooLarge, func(ctx context.Context) (any, error) { return c.srv.opts.Backend.Templates(ctx, q.ID) })
	case m.TenantsFor != nil:
		q := m.TenantsFor
		c.store(q.ReqID, proto.CodeInternal, func(ctx context.Context) (any, error) {
			return c.srv.opts.Backend.TenantsFor(ctx, c.workerID, q.Event)
		})
	case m.KvGet != nil:
		q := m.KvGet
		c.store(q.ReqID, proto.CodeKVResultTooLarge, func(ctx context.Context) (any, error) {
			v, found, err := c.srv.opts.Backend.KvGet(ctx, q.ID, q.Key)
			return proto.KvGetResult{Found: found, Value: v}, err
		})
	case m.KvSet != nil:
		q := m.KvSet
		c.store(q.ReqID, proto.CodeInternal, func(ctx context.Context) (any, error) {
			return nil, c.srv.opts.Backend.KvSet(ctx, q.ID, q.Key, q.Value)
		})
	case m.KvDelete != nil:
		q := m.KvDelete
		c.store(q.ReqID, proto.CodeInternal, func(ctx context.Context) (any, error) { return nil, c.srv.opts.Backend.KvDelete(ctx, q.ID, q.Key) })
	case m.KvFind != nil:
		q := m.KvFind
		c.store(q.ReqID, proto.CodeKVResultTooLarge, func(ctx context.Context) (any, error) { return c.srv.opts.Backend.KvFind(ctx, q.ID, q.Prefix) })
	case m.ScheduleEvent != nil:
		q := m.ScheduleEvent
		c.store(q.ReqID, proto.CodeInternal, func(ctx context.Context) (any, error) {
			id, err := c.srv.opts.Backend.ScheduleEvent(ctx, c.workerID, q.ID, q.At, q.Event)
			return id, err
		})
	case m.CancelEvent != nil:
		q := m.CancelEvent
		c.store(q.ReqID, proto.CodeInternal, func(ctx context.Context) (any, error) {
			ok, err := c.srv.opts.Backend.CancelEvent(ctx, c.workerID, q.ID, q.EventID)
			return ok, err
		})
	case m.ScheduledEvents != nil:
		q := m.ScheduledEvents
		c.store(q.ReqID, proto.CodeKVResultTooLarge, func(ctx context.Context) (any, error) {
			list, err := c.srv.opts.Backend.ScheduledEvents(ctx, c.workerID, q.ID)
			if list == nil && err == nil {
				list = []proto.ScheduledEvent{}
			}
			return list, err
		})
	default:
		name, _ := messageName(m)
		return &frameError{websocket.StatusPolicyViolation, "unexpected " + name + " from worker"}
	}
	return nil
}

// store answers one store request in its own goroutine. When
// storeConcurrency requests are running, reading waits for one to finish;
// the heartbeat watchdog does not count that wait against the worker. An
// answer too large for the worker's frame limit is replaced by an error
// with code tooLarge: the worker gets an error for that request, and the
// connection stays up.
func (c *Conn) store(req uint64, tooLarge string, do func(ctx context.Context) (any, error)) {
	c.role.own = true // only the reader calls handle
	select {
	case c.storeSem <- struct{}{}:
	default:
		c.stalled.Store(true)
		select {
		case c.storeSem <- struct{}{}:
		case <-c.link.done:
			return
		}
		c.stalled.Store(false)
		c.lastSeen.Store(time.Now().UnixNano())
	}
	go func() {
		defer func() { <-c.storeSem }()
		ctx, cancel := context.WithTimeout(c.ctx, c.srv.opts.StoreTimeout)
		res, err := do(ctx)
		cancel()
		frame := storeResponse(req, res, err)
		if limit := c.link.maxFrame(); len(frame) > limit {
			c.log.Warn().Int("bytes", len(frame)).Int("limit", limit).Str("code", tooLarge).Msg("store answer does not fit in a frame; answering with an error")
			frame = storeResponse(req, nil, proto.Errorf(tooLarge,
				"the answer is %d bytes, over the %d-byte frame limit (--mesophyll-max-frame)", len(frame), limit))
		}
		if err := c.link.send(c.ctx, frame); err != nil && c.ctx.Err() == nil {
			c.log.Warn().Err(err).Msg("send StoreResponse")
		}
	}()
}

// storeResponse encodes the StoreResponse frame of request req. The result
// is encoded once, straight into the frame.
func storeResponse(req uint64, res any, err error) []byte {
	if err == nil && res != nil {
		b, merr := marshal(res)
		if merr == nil {
			frame := make([]byte, 0, len(b)+64)
			frame = append(frame, `{"StoreResponse":{"req_id":`...)
			frame = strconv.AppendUint(frame, req, 10)
			frame = append(frame, `,"result":`...)
			frame = append(frame, b...)
			return append(frame, `}}`...)
		}
		err = proto.Errorf(proto.CodeInternal, "encode store result: %v", merr)
	}
	r := &proto.StoreResponse{ReqID: req}
	if err != nil {
		var e *proto.Error
		if !errors.As(err, &e) {
			e = proto.Errorf(proto.CodeStoreUnavailable, "%v", err)
		}
		r.Error = e
	}
	frame, merr := json.Marshal(proto.Message{StoreResponse: r})
	if merr != nil { // cannot happen: only strings and numbers
		panic(fmt.Sprintf("mesophyll: encode StoreResponse: %v", merr))
	}
	return frame
}

// watch closes the connection and reports the worker hung when no frame
// arrived for 3 heartbeat intervals.
func (c *Conn) watch(interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-c.link.done:
			return
		case now := <-t.C:
			if c.stalled.Load() {
				continue
			}
			silent := time.Duration(now.UnixNano() - c.lastSeen.Load())
			if silent < 3*interval {
				continue
			}
			c.log.Warn().Dur("silent", silent).Msg("worker missed 3 heartbeats: closing")
			c.closeWith(websocket.StatusPolicyViolation, "missed heartbeats",
				fmt.Errorf("worker %d missed 3 heartbeats (silent %v)", c.workerID, silent.Round(time.Millisecond)))
			if c.srv.opts.OnHung != nil {
				c.srv.opts.OnHung(c.workerID)
			}
			return
		}
	}
}
