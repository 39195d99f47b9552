package mesophyll

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/templateworker/templateworker/internal/wakeup"
	"github.com/templateworker/templateworker/proto"
)

// constHandler answers every dispatch with the same small result.
type constHandler struct{ *fakeHandler }

func (constHandler) DispatchEvent(context.Context, proto.Id, proto.Event) (proto.Value, error) {
	return proto.Value(`{"greet":"hi"}`), nil
}

// benchEvent is a ~200-byte DispatchEvent frame once encoded.
var benchEvent = proto.Event{Name: "Ping", Data: proto.Value(`{"channel":"1234567890","content":"hello there, templateworker","n":42,"tags":["a","b","c"]}`)}

// BenchmarkWSEcho is the floor: a raw coder/websocket loopback round trip
// of a ~200-byte text frame, echoed by the server.
func BenchmarkWSEcho(b *testing.B) {
	srv := httptest.NewServer(echoHandler)
	defer srv.Close()
	benchEcho(b, "ws"+strings.TrimPrefix(srv.URL, "http"), 0)
}

// benchEcho measures round trips of a dispatch-sized frame to the echo
// server at url.
//
// It reports the wake-ups one echo costs: of this process (wakeups/op)
// and of the echo server's process, when it is another (peer, its pid:
// worker-wakeups/op, the name the dispatch benchmarks use for theirs).
func benchEcho(b *testing.B, url string, peer int) {
	ctx := context.Background()
	target, hc := dialTarget(url)
	ws, _, err := websocket.Dial(ctx, target, &websocket.DialOptions{HTTPClient: hc, CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		b.Fatal(err)
	}
	defer ws.CloseNow()
	frame := []byte(`{"DispatchEvent":{"id":{"type":"Guild","id":"1"},"event":{"name":"Ping","author":null,"data":{"channel":"1234567890","content":"hello there, templateworker","n":42,"tags":["a","b","c"]}},"req_id":1}}`)
	b.ReportAllocs()
	b.ResetTimer()
	self, other := wakeup.Start(0), wakeup.Start(peer)
	for b.Loop() {
		if err := ws.Write(ctx, websocket.MessageText, frame); err != nil {
			b.Fatal(err)
		}
		if _, _, err := ws.Read(ctx); err != nil {
			b.Fatal(err)
		}
	}
	if n, err := self.PerOp(b.N); err == nil {
		b.ReportMetric(n, "wakeups/op")
	}
	if us, err := self.CPUPerOp(b.N); err == nil {
		b.ReportMetric(us, "cpu-us/op")
	}
	if peer != 0 {
		if n, err := other.PerOp(b.N); err == nil {
			b.ReportMetric(n, "worker-wakeups/op")
		}
		if us, err := other.CPUPerOp(b.N); err == nil {
			b.ReportMetric(us, "worker-cpu-us/op")
		}
	}
}

// benchConn connects a worker serving constHandler and returns the
// server's Conn to it; the worker stops when b ends.
func benchConn(b *testing.B) *Conn {
	b.Helper()
	h := newHarness(b, ServerOptions{Workers: 1})
	ctx := context.Background()
	cl, err := Dial(ctx, h.url, 0, h.token(0), ClientOptions{})
	if err != nil {
		b.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- cl.Serve(ctx, constHandler{newFakeHandler()}) }()
	b.Cleanup(func() { cl.Close(); <-served })
	<-h.connected
	return h.srv.Conn(0)
}

// BenchmarkMesophyllDispatch is a Conn.DispatchEvent round trip to a
// worker whose Handler returns a constant small result.
func BenchmarkMesophyllDispatch(b *testing.B) {
	c := benchConn(b)
	ctx := context.Background()
	g := proto.GuildID(1)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.DispatchEvent(ctx, g, benchEvent); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMesophyllDispatchParallel is DispatchEvent from many goroutines
// on one connection.
func BenchmarkMesophyllDispatchParallel(b *testing.B) {
	c := benchConn(b)
	ctx := context.Background()
	g := proto.GuildID(1)
	b.ReportAllocs()
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.DispatchEvent(ctx, g, benchEvent); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
