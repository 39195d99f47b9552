package mesophyll

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/internal/syncbuf"
	"github.com/templateworker/templateworker/proto"
)

// linkPair returns a link over a fresh WebSocket connection and the raw
// connection at its other end.
func linkPair(t *testing.T) (*link, *websocket.Conn) {
	t.Helper()
	peer := make(chan *websocket.Conn, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		peer <- ws
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.CloseNow() })
	other := <-peer
	t.Cleanup(func() { other.CloseNow() })
	return newLink(ws, proto.CodeWorkerUnavailable, "test peer"), other
}

// readFrames reads n frames from ws.
func readFrames(t *testing.T, ws *websocket.Conn, n int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []string
	for range n {
		_, b, err := ws.Read(ctx)
		if err != nil {
			t.Fatalf("read frame %d: %v", len(out), err)
		}
		out = append(out, string(b))
	}
	return out
}

func TestWritesQueuedBehindAWriteGoOutAsBatches(t *testing.T) {
	frames := []string{`{"Ack":{"seq":1}}`, `{"Ack":{"seq":2}}`, `{"Ack":{"seq":3}}`, `{"Ack":{"seq":4}}`}
	for _, tc := range []struct {
		name     string
		peerMax  int64
		wantSent []string
	}{
		{"one batch", 1 << 20, []string{`{"Batch":[` + strings.Join(frames, ",") + `]}`}},
		{"split at the peer's limit", int64(len(`{"Batch":[]}`) + len(frames[0]) + 1 + len(frames[1])),
			[]string{`{"Batch":[` + frames[0] + "," + frames[1] + `]}`, `{"Batch":[` + frames[2] + "," + frames[3] + `]}`}},
		{"frames over the limit go alone", int64(len(frames[0]) + 5), frames},
		{"peer takes no batches", 0, frames},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, peer := linkPair(t)
			l.setBatchMax(tc.peerMax)
			// A write is in progress: sends queue behind it and return.
			l.w.mu.Lock()
			l.w.writing = true
			l.w.mu.Unlock()
			for _, f := range frames {
				if err := l.send(context.Background(), []byte(f)); err != nil {
					t.Fatal(err)
				}
			}
			// The writer finishes and writes what was queued.
			l.drain(-1)
			got := readFrames(t, peer, len(tc.wantSent))
			for i := range got {
				if got[i] != tc.wantSent[i] {
					t.Fatalf("frame %d: %s\nwant %s", i, got[i], tc.wantSent[i])
				}
			}
			// Idle again: the next frame goes out at once, alone.
			if err := l.send(context.Background(), []byte(`{"Ack":{"seq":5}}`)); err != nil {
				t.Fatal(err)
			}
			if got := readFrames(t, peer, 1)[0]; got != `{"Ack":{"seq":5}}` {
				t.Fatalf("frame after the batch: %s", got)
			}
			var batches int64
			for _, s := range tc.wantSent {
				if strings.HasPrefix(s, `{"Batch"`) {
					batches++
				}
			}
			if n := l.batchesWritten(); n != batches {
				t.Fatalf("batchesWritten() = %d, want %d", n, batches)
			}
		})
	}
}

func TestFullWriteQueueMakesSendersWait(t *testing.T) {
	l, peer := linkPair(t)
	l.setBatchMax(1 << 20)
	l.w.mu.Lock()
	l.w.writing = true
	l.w.queued = maxQueued // someone queued a lot behind a stuck write
	l.w.queue = append(l.w.queue, []byte(`{"Ack":{"seq":1}}`))
	l.w.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := l.send(ctx, []byte(`{"Ack":{"seq":2}}`))
	wantCode(t, err, proto.CodeTimeout)

	sent := make(chan error, 1)
	go func() { sent <- l.send(context.Background(), []byte(`{"Ack":{"seq":3}}`)) }()
	select {
	case err := <-sent:
		t.Fatalf("send returned (%v) while the queue was full", err)
	case <-time.After(50 * time.Millisecond):
	}
	l.drain(-1) // the stuck write ends: the queue is taken, the sender goes on
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	got := readFrames(t, peer, 1)[0]
	if got != `{"Ack":{"seq":1}}` {
		t.Fatalf("first frame %s", got)
	}
	// The waiting sender wrote its own frame once there was room.
	if got := readFrames(t, peer, 1)[0]; got != `{"Ack":{"seq":3}}` {
		t.Fatalf("second frame %s", got)
	}
}

func TestBatchFromWorkerIsHandledInOrder(t *testing.T) {
	h := newHarness(t, ServerOptions{Workers: 1})
	ws := h.rawWorker(0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	frame := `{"Batch":[{"Ack":{"seq":1}},{"Heartbeat":{"tenants":9}},{"Ack":{"seq":2}},{"Ack":{"seq":3}}]}`
	if err := ws.Write(ctx, websocket.MessageText, []byte(frame)); err != nil {
		t.Fatal(err)
	}
	for want := uint64(1); want <= 3; want++ {
		select {
		case got := <-h.acks:
			if got != want {
				t.Fatalf("ack %d, want %d", got, want)
			}
		case <-ctx.Done():
			t.Fatalf("ack %d never handled", want)
		}
	}
	for {
		select {
		case hb := <-h.heartbeats:
			if hb.Tenants == 9 {
				return
			}
		case <-ctx.Done():
			t.Fatal("the batch's heartbeat was not handled")
		}
	}
}

func TestHelloAnnouncesTheFrameLimit(t *testing.T) {
	h := newHarness(t, ServerOptions{Workers: 2, MaxFrame: 12345})
	hdr := http.Header{}
	hdr.Set("Authorization", "Bearer "+h.token(0))
	hdr.Set("X-Worker-Id", "0")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, h.url, &websocket.DialOptions{HTTPHeader: hdr})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	_, b, err := ws.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var m proto.Message
	if err := json.Unmarshal(b, &m); err != nil || m.Hello == nil || m.Hello.MaxFrame != 12345 {
		t.Fatalf("Hello %s (%v): want max_frame 12345", b, err)
	}

	// The Client takes the limit from Hello.
	cl, err := Dial(ctx, h.url, 1, h.token(1), ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if got := cl.link.w.batchMax; got != 12345 {
		t.Fatalf("client batch limit %d, want 12345 (the master's max_frame)", got)
	}
	// The master batches only to a worker that announced its limit.
	for range 2 { // both connections are registered, in either order
		select {
		case <-h.connected:
		case <-ctx.Done():
			t.Fatal("workers never connected")
		}
	}
	if got := h.srv.Conn(0).link.w.batchMax; got != 0 {
		t.Fatalf("master batches up to %d bytes to a worker that announced no limit", got)
	}
	if got := h.srv.Conn(1).link.w.batchMax; got != batchMax {
		t.Fatalf("master batches up to %d bytes to the Client, want %d", got, batchMax)
	}
}

// inlineHandler is a fakeHandler that runs events inline when not busy;
// the event "kv" reads the key named by its data through the Client.
type inlineHandler struct {
	*fakeHandler
	cl              atomic.Pointer[Client]
	busy            atomic.Bool
	inlined, queued atomic.Int64
}

func (h *inlineHandler) TryDispatchEvent(ctx context.Context, id proto.Id, ev proto.Event) (proto.Value, bool, error) {
	if !h.busy.CompareAndSwap(false, true) {
		return nil, false, nil
	}
	defer h.busy.Store(false)
	h.inlined.Add(1)
	if ev.Name == "kv" {
		var key string
		_ = json.Unmarshal(ev.Data, &key)
		v, found, err := h.cl.Load().KvGet(ctx, id, key)
		if err != nil {
			return nil, true, err
		}
		b, _ := json.Marshal(map[string]any{"found": found, "value": v})
		return b, true, nil
	}
	v, err := h.fakeHandler.DispatchEvent(ctx, id, ev)
	return v, true, err
}

func (h *inlineHandler) DispatchEvent(ctx context.Context, id proto.Id, ev proto.Event) (proto.Value, error) {
	h.queued.Add(1)
	return h.fakeHandler.DispatchEvent(ctx, id, ev)
}

func TestInlineEventsAndTheirStoreCalls(t *testing.T) {
	h := newHarness(t, ServerOptions{Workers: 1})
	g := proto.GuildID(1)
	h.backend.kv[g.String()+"/count"] = json.RawMessage(`3`)
	hd := &inlineHandler{fakeHandler: newFakeHandler()}
	cl, c, _ := h.worker(0, hd)
	hd.cl.Store(cl)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// An idle worker runs the event inline, store call included: the
	// reading goroutine answers its own store request.
	res, err := c.DispatchEvent(ctx, g, proto.Event{Name: "kv", Data: proto.Value(`"count"`)})
	if err != nil || string(res) != `{"found":true,"value":3}` {
		t.Fatalf("inline kv: %s %v", res, err)
	}
	if hd.inlined.Load() != 1 || hd.queued.Load() != 0 {
		t.Fatalf("inlined %d, queued %d: want the event run inline", hd.inlined.Load(), hd.queued.Load())
	}

	// While an inline event waits for the store, the connection keeps
	// being read: another event is served (not inline: the worker is busy)
	// and a nowait event is acknowledged.
	slow := h.slowKV(ctx, c, g)
	if res, err := c.DispatchEvent(ctx, g, proto.Event{Name: "Ping"}); err != nil || string(res) != `{"ok":true}` {
		t.Fatalf("event during an inline store call: %s %v", res, err)
	}
	if err := c.DispatchEventNoWait(g, proto.Event{Name: "Ping"}, 7); err != nil {
		t.Fatal(err)
	}
	select {
	case seq := <-h.acks:
		if seq != 7 {
			t.Fatalf("ack %d, want 7", seq)
		}
	case <-ctx.Done():
		t.Fatal("nowait event not acknowledged during an inline store call")
	}
	if hd.queued.Load() != 2 {
		t.Fatalf("queued %d events, want 2 (the worker was busy)", hd.queued.Load())
	}
	select {
	case err := <-slow:
		t.Fatalf("the slow store call returned early: %v", err)
	default:
	}
	close(h.backend.release)
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
	// Idle again (once the goroutines that served the others have
	// ended): inline again.
	before := hd.inlined.Load()
	for hd.inlined.Load() == before {
		if ctx.Err() != nil {
			t.Fatal("an idle worker's events are not run inline any more")
		}
		if _, err := c.DispatchEvent(ctx, g, proto.Event{Name: "Ping"}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestInlineStoreCallEndsWithTheConnection(t *testing.T) {
	h := newHarness(t, ServerOptions{Workers: 1})
	g := proto.GuildID(1)
	hd := &inlineHandler{fakeHandler: newFakeHandler()}
	cl, c, served := h.worker(0, hd)
	hd.cl.Store(cl)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	call := h.slowKV(ctx, c, g)
	c.Close("test")
	wantCode(t, <-call, proto.CodeWorkerUnavailable)
	select {
	case err := <-served:
		if err == nil {
			t.Fatal("Serve returned nil after the master closed the connection")
		}
	case <-ctx.Done():
		t.Fatal("Serve did not return after the connection ended during an inline store call")
	}
	close(h.backend.release)
}

// fakeMaster accepts one worker connection, sends Hello announcing a frame
// limit, and hands the connection to the test.
func fakeMaster(t *testing.T) (url string, conns <-chan *websocket.Conn) {
	t.Helper()
	ch := make(chan *websocket.Conn, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		hello, _ := json.Marshal(proto.Message{Hello: &proto.Hello{HeartbeatIntervalMS: 60000, MaxFrame: DefaultMaxFrame}})
		if err := ws.Write(r.Context(), websocket.MessageText, hello); err != nil {
			return
		}
		ch <- ws
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http"), ch
}

func TestBatchOfEventsIsAnsweredWithOneBatch(t *testing.T) {
	url, conns := fakeMaster(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl, err := Dial(ctx, url, 0, "token", ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cl.collectTime = time.Minute // a slow machine must not split the answer
	hd := &inlineHandler{fakeHandler: newFakeHandler()}
	hd.cl.Store(cl)
	go func() { _ = cl.Serve(context.Background(), hd) }()
	defer cl.Close()
	master := <-conns
	// Serve sends a Heartbeat at once (the next in 60 s): read it first.
	if _, b, err := master.Read(ctx); err != nil || !strings.HasPrefix(string(b), `{"Heartbeat"`) {
		t.Fatalf("first frame %s (%v), want a Heartbeat", b, err)
	}

	batch := `{"Batch":[` +
		`{"DispatchEvent":{"id":{"type":"Guild","id":"1"},"event":{"name":"echo","author":null,"data":1},"req_id":1}},` +
		`{"DispatchEvent":{"id":{"type":"Guild","id":"1"},"event":{"name":"Ping","author":null,"data":null},"seq":9}},` +
		`{"DispatchEvent":{"id":{"type":"Guild","id":"1"},"event":{"name":"echo","author":null,"data":3},"req_id":3}}]}`
	if err := master.Write(ctx, websocket.MessageText, []byte(batch)); err != nil {
		t.Fatal(err)
	}
	var m proto.Message
	_, b, err := master.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if len(m.Batch) != 3 {
		t.Fatalf("answer to a Batch of 3 events: %+v, want one Batch of 3", m)
	}
	r0, ack, r2 := m.Batch[0].DispatchResponse, m.Batch[1].Ack, m.Batch[2].DispatchResponse
	if r0 == nil || r0.ReqID != 1 || string(r0.Result) != "1" || ack == nil || ack.Seq != 9 ||
		r2 == nil || r2.ReqID != 3 || string(r2.Result) != "3" {
		t.Fatalf("answers out of order or wrong: %s", mustJSON(m))
	}
	if hd.inlined.Load() != 3 {
		t.Fatalf("%d of 3 events ran inline", hd.inlined.Load())
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestConcurrentCallsAreBatchedAndAllAnswered(t *testing.T) {
	h := newHarness(t, ServerOptions{Workers: 1})
	hd := &inlineHandler{fakeHandler: newFakeHandler()}
	cl, c, _ := h.worker(0, hd)
	hd.cl.Store(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var bad atomic.Int64
	for g := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				n := g*1000 + i
				res, err := c.DispatchEvent(ctx, proto.GuildID(1), proto.Event{Name: "echo", Data: proto.Value(strconv.Itoa(n))})
				if err != nil || string(res) != strconv.Itoa(n) {
					bad.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d of 3200 calls failed or got another call's answer", bad.Load())
	}
	t.Logf("Batch frames: master → worker %d, worker → master %d", c.link.batchesWritten(), cl.link.batchesWritten())
	if c.link.batchesWritten() == 0 {
		t.Fatal("64 concurrent callers never had their frames combined")
	}
}

// slowKV dispatches the event "kv" of key "slow" to c in the background
// and returns once the backend holds its store call; the channel gets the
// call's error when the backend is released.
func (h *harness) slowKV(ctx context.Context, c *Conn, g proto.Id) <-chan error {
	h.t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := c.DispatchEvent(ctx, g, proto.Event{Name: "kv", Data: proto.Value(`"slow"`)})
		done <- err
	}()
	deadline := time.Now().Add(30 * time.Second)
	for h.backend.slow.Load() == 0 {
		if time.Now().After(deadline) {
			h.t.Fatal("the slow store call never reached the backend")
		}
		time.Sleep(time.Millisecond)
	}
	return done
}

// TestInlineWaitedFailureIsNoNowaitFailure: a waited event that fails
// inline is answered with its error and is not logged as a failed nowait
// event (nor encoded as an Ack).
func TestInlineWaitedFailureIsNoNowaitFailure(t *testing.T) {
	h := newHarness(t, ServerOptions{Workers: 1})
	hd := &inlineHandler{fakeHandler: newFakeHandler()}
	logs := &syncbuf.Buffer{}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl, err := Dial(ctx, h.url, 0, h.token(0), ClientOptions{Logger: zerolog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cl.Serve(context.Background(), hd); close(done) }()
	t.Cleanup(func() { cl.Close(); <-done })
	h.waitConnected(0)
	_, err = h.srv.Conn(0).DispatchEvent(ctx, proto.GuildID(1), proto.Event{Name: "fail"})
	if proto.CodeOf(err) != proto.CodeScriptError {
		t.Fatalf("the failing event: %v, want a script_error", err)
	}
	if hd.inlined.Load() != 1 {
		t.Fatalf("%d events ran inline, want 1", hd.inlined.Load())
	}
	if strings.Contains(logs.String(), "nowait event failed") {
		t.Fatalf("a waited call's failure was logged as a nowait event's:\n%s", logs.String())
	}
}
