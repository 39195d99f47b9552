package mesophyll

import (
	"context"
	"encoding/json"
	"errors"
	"github.com/templateworker/templateworker/internal/syncbuf"
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

	"github.com/templateworker/templateworker/proto"
)

// fakeBackend is an in-memory Backend. Keys named "slow" block until
// release is closed; keys named "quota", "invalid" and "down" fail.
type fakeBackend struct {
	mu        sync.Mutex
	kv        map[string]json.RawMessage
	templates map[proto.Id][]proto.Template
	tenantsOf map[int][]proto.Id
	release   chan struct{}

	slow, maxSlow atomic.Int64 // "slow" calls running, and their maximum
}

func newFakeBackend() *fakeBackend {
	return &fakeBackend{
		kv:        make(map[string]json.RawMessage),
		templates: make(map[proto.Id][]proto.Template),
		tenantsOf: make(map[int][]proto.Id),
		release:   make(chan struct{}),
	}
}

func (b *fakeBackend) Templates(ctx context.Context, tenant proto.Id) ([]proto.Template, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.templates[tenant], nil
}

func (b *fakeBackend) TenantsFor(ctx context.Context, workerID int, event string) ([]proto.Id, error) {
	if event != "OnStartup" {
		return nil, proto.Errorf(proto.CodeBadRequest, "unexpected event %q", event)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.tenantsOf[workerID], nil
}

func (b *fakeBackend) fail(ctx context.Context, key string) error {
	switch key {
	case "slow":
		n := b.slow.Add(1)
		defer b.slow.Add(-1)
		for m := b.maxSlow.Load(); n > m && !b.maxSlow.CompareAndSwap(m, n); m = b.maxSlow.Load() {
		}
		select {
		case <-b.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	case "quota":
		return proto.Errorf(proto.CodeKVQuotaExceeded, "tenant has 10000 keys")
	case "invalid":
		return proto.Errorf(proto.CodeInvalidKV, "key too long")
	case "down":
		return errors.New("database is down")
	}
	return nil
}

func (b *fakeBackend) KvGet(ctx context.Context, tenant proto.Id, key string) (json.RawMessage, bool, error) {
	if err := b.fail(ctx, key); err != nil {
		return nil, false, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	v, ok := b.kv[tenant.String()+"/"+key]
	return v, ok, nil
}

func (b *fakeBackend) KvSet(ctx context.Context, tenant proto.Id, key string, value json.RawMessage) error {
	if err := b.fail(ctx, key); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.kv[tenant.String()+"/"+key] = value
	return nil
}

func (b *fakeBackend) KvDelete(ctx context.Context, tenant proto.Id, key string) error {
	if err := b.fail(ctx, key); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.kv, tenant.String()+"/"+key)
	return nil
}

func (b *fakeBackend) KvFind(ctx context.Context, tenant proto.Id, prefix string) ([]proto.KVItem, error) {
	if err := b.fail(ctx, prefix); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []proto.KVItem
	for k, v := range b.kv {
		if key, ok := strings.CutPrefix(k, tenant.String()+"/"); ok && strings.HasPrefix(key, prefix) {
			out = append(out, proto.KVItem{Key: key, Value: v})
		}
	}
	return out, nil
}

// fakeHandler answers by event name: "slow" blocks until release is closed
// (or ctx is done), "fail" fails with script_error, "echo" returns the
// event's data, anything else returns {"ok":true}.
type fakeHandler struct {
	release chan struct{}
	nowait  chan proto.Event // nowait-style events seen, if not nil

	mu         sync.Mutex
	dropped    []proto.Id
	droppedAll int
}

func newFakeHandler() *fakeHandler { return &fakeHandler{release: make(chan struct{})} }

func (h *fakeHandler) DispatchEvent(ctx context.Context, id proto.Id, ev proto.Event) (proto.Value, error) {
	switch ev.Name {
	case "slow":
		select {
		case <-h.release:
		case <-ctx.Done():
			return nil, proto.Errorf(proto.CodeTimeout, "cancelled: %v", ctx.Err())
		}
	case "fail":
		return nil, &proto.Error{Code: proto.CodeScriptError, Message: "boom", Results: proto.Value(`{"a":1}`)}
	case "echo":
		return ev.Data, nil
	case "nowait":
		h.nowait <- ev
		return nil, nil
	}
	return proto.Value(`{"ok":true}`), nil
}

func (h *fakeHandler) RunScript(ctx context.Context, id proto.Id, name, code string, ev proto.Event) (proto.Value, error) {
	b, _ := json.Marshal(map[string]string{"tenant": id.String(), "name": name, "code": code, "event": ev.Name})
	return b, nil
}

func (h *fakeHandler) DropTenant(ctx context.Context, id proto.Id) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.dropped = append(h.dropped, id)
	return nil
}

func (h *fakeHandler) DropAll(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.droppedAll++
	return nil
}

func (h *fakeHandler) Tenants() int { return 7 }

// harness is a Server behind an httptest server, with its callbacks
// recorded.
type harness struct {
	t       testing.TB
	srv     *Server
	http    *httptest.Server
	url     string
	backend *fakeBackend
	logs    *syncbuf.Buffer

	connected    chan int
	disconnected chan disconnect
	hung         chan int
	acks         chan uint64
	heartbeats   chan proto.Heartbeat
}

type disconnect struct {
	id  int
	err error
}

func newHarness(t testing.TB, opts ServerOptions) *harness {
	t.Helper()
	h := &harness{
		t:            t,
		backend:      newFakeBackend(),
		logs:         &syncbuf.Buffer{},
		connected:    make(chan int, 16),
		disconnected: make(chan disconnect, 16),
		hung:         make(chan int, 16),
		acks:         make(chan uint64, 1024),
		heartbeats:   make(chan proto.Heartbeat, 1024),
	}
	if opts.Workers == 0 {
		opts.Workers = 2
	}
	if opts.Backend == nil {
		opts.Backend = h.backend
	}
	opts.Logger = zerolog.New(h.logs)
	opts.OnConnect = func(id int, c *Conn) { h.connected <- id }
	opts.OnDisconnect = func(id int, _ *Conn, err error) { h.disconnected <- disconnect{id, err} }
	opts.OnHung = func(id int) { h.hung <- id }
	opts.OnAck = func(id int, ack proto.Ack) { h.acks <- ack.Seq }
	opts.OnHeartbeat = func(id int, hb proto.Heartbeat) {
		select {
		case h.heartbeats <- hb:
		default:
		}
	}
	h.srv = NewServer(opts)
	mux := http.NewServeMux()
	mux.Handle("/ws", h.srv)
	h.http = httptest.NewServer(mux) // listens on 127.0.0.1:0
	h.url = "ws" + strings.TrimPrefix(h.http.URL, "http") + "/ws"
	t.Cleanup(h.http.Close)
	return h
}

// token sets a fresh token for worker id and returns it.
func (h *harness) token(id int) string {
	h.t.Helper()
	tok, err := NewToken()
	if err != nil {
		h.t.Fatal(err)
	}
	h.srv.SetToken(id, tok)
	return tok
}

// worker connects worker id with handler hd, serves it in the background
// and waits until the server has the connection. The returned channel
// receives Serve's result.
func (h *harness) worker(id int, hd Handler) (*Client, *Conn, <-chan error) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := Dial(ctx, h.url, id, h.token(id), ClientOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	served := make(chan error, 1)
	finished := make(chan struct{})
	go func() {
		served <- cl.Serve(context.Background(), hd)
		close(finished)
	}()
	h.t.Cleanup(func() {
		cl.Close()
		<-finished
	})
	h.waitConnected(id)
	c := h.srv.Conn(id)
	if c == nil {
		h.t.Fatalf("worker %d connected but Server.Conn is nil", id)
	}
	return cl, c, served
}

func (h *harness) waitConnected(id int) {
	h.t.Helper()
	select {
	case got := <-h.connected:
		if got != id {
			h.t.Fatalf("connected worker %d, want %d", got, id)
		}
	case <-time.After(30 * time.Second):
		h.t.Fatalf("worker %d never connected", id)
	}
}

func (h *harness) waitDisconnected(id int) error {
	h.t.Helper()
	select {
	case d := <-h.disconnected:
		if d.id != id {
			h.t.Fatalf("disconnected worker %d, want %d", d.id, id)
		}
		return d.err
	case <-time.After(15 * time.Second):
		h.t.Fatalf("worker %d never disconnected", id)
	}
	return nil
}

// rawDial connects as worker id with a bare WebSocket and reads Hello.
func (h *harness) rawDial(id int, token string) (*websocket.Conn, *http.Response, error) {
	hdr := http.Header{}
	if token != "" {
		hdr.Set("Authorization", "Bearer "+token)
	}
	hdr.Set("X-Worker-Id", strconv.Itoa(id))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, h.url, &websocket.DialOptions{HTTPHeader: hdr})
	if err != nil {
		return nil, resp, err
	}
	_, b, err := ws.Read(ctx)
	if err != nil {
		ws.CloseNow()
		return nil, resp, err
	}
	if !strings.HasPrefix(string(b), `{"Hello":`) {
		ws.CloseNow()
		return nil, resp, errors.New("first frame is not Hello: " + string(b))
	}
	return ws, resp, nil
}

// rawWorker connects as worker id with a bare WebSocket and a fresh
// token, and waits until the server has the connection.
func (h *harness) rawWorker(id int) *websocket.Conn {
	h.t.Helper()
	ws, _, err := h.rawDial(id, h.token(id))
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { ws.CloseNow() })
	h.waitConnected(id)
	return ws
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	var pe *proto.Error
	if !errors.As(err, &pe) {
		t.Fatalf("error %v (%T) is not a *proto.Error", err, err)
	}
	if pe.Code != code {
		t.Fatalf("error code %q (%v), want %q", pe.Code, err, code)
	}
}
