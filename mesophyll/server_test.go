package mesophyll

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/templateworker/templateworker/proto"
)

func TestNewToken(t *testing.T) {
	a, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewToken()
	if len(a) != TokenLength || len(b) != TokenLength || a == b {
		t.Fatalf("tokens %q and %q: want two distinct %d-char tokens", a, b, TokenLength)
	}
}

func TestAuth(t *testing.T) {
	h := newHarness(t, ServerOptions{Workers: 2})
	tok := h.token(0)

	for _, tc := range []struct {
		name   string
		id     string
		auth   string
		status int
	}{
		{"unknown id", "2", "Bearer " + tok, http.StatusNotFound},
		{"negative id", "-1", "Bearer " + tok, http.StatusNotFound},
		{"invalid id", "zero", "Bearer " + tok, http.StatusBadRequest},
		{"bad token", "0", "Bearer " + strings.Repeat("0", TokenLength), http.StatusUnauthorized},
		{"no token", "0", "", http.StatusUnauthorized},
		{"not bearer", "0", "Basic " + tok, http.StatusUnauthorized},
		{"token of another worker", "1", "Bearer " + tok, http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hdr := http.Header{}
			hdr.Set("X-Worker-Id", tc.id)
			if tc.auth != "" {
				hdr.Set("Authorization", tc.auth)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			ws, resp, err := websocket.Dial(ctx, h.url, &websocket.DialOptions{HTTPHeader: hdr})
			if err == nil {
				ws.CloseNow()
				t.Fatal("connection accepted")
			}
			if resp == nil || resp.StatusCode != tc.status {
				t.Fatalf("response %v, want HTTP %d", resp, tc.status)
			}
		})
	}

	// Dial reports the refusal without the token.
	_, err := Dial(context.Background(), h.url, 0, "wrong", ClientOptions{})
	if err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("Dial with a bad token: %v, want a 401 error", err)
	}
	if strings.Contains(h.logs.String(), tok) {
		t.Fatal("the token appears in the logs")
	}
	if !strings.Contains(h.logs.String(), "refused: bad token") {
		t.Fatalf("refusals not logged: %s", h.logs.String())
	}
}

func TestSecondConnectionRefused(t *testing.T) {
	h := newHarness(t, ServerOptions{Workers: 1})
	tok := h.token(0)
	ws, _, err := h.rawDial(0, tok)
	if err != nil {
		t.Fatal(err)
	}
	h.waitConnected(0)
	if _, resp, err := h.rawDial(0, tok); err == nil || resp == nil || resp.StatusCode != http.StatusConflict {
		t.Fatalf("second connection: %v %v, want HTTP 409", resp, err)
	}
	// Once the first is gone, the worker may connect again.
	ws.Close(websocket.StatusNormalClosure, "")
	if err := h.waitDisconnected(0); err != nil {
		t.Fatalf("normal closure reported as %v", err)
	}
	ws2, _, err := h.rawDial(0, tok)
	if err != nil {
		t.Fatalf("reconnect after close: %v", err)
	}
	ws2.CloseNow()
}

func TestTokenRotation(t *testing.T) {
	h := newHarness(t, ServerOptions{Workers: 1})
	old := h.token(0)
	ws, _, err := h.rawDial(0, old)
	if err != nil {
		t.Fatal(err)
	}
	h.waitConnected(0)
	conn := h.srv.Conn(0)

	fresh := h.token(0) // SetToken closes the connection of the old token
	select {
	case <-conn.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("connection of the replaced token still open")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, _, err := ws.Read(ctx); websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
		t.Fatalf("old connection ended with %v, want close status %d", err, websocket.StatusPolicyViolation)
	}
	if err := h.waitDisconnected(0); err == nil {
		t.Fatal("OnDisconnect got nil for a replaced token")
	}
	if _, resp, err := h.rawDial(0, old); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("old token: %v %v, want HTTP 401", resp, err)
	}
	ws2, _, err := h.rawDial(0, fresh)
	if err != nil {
		t.Fatalf("new token: %v", err)
	}
	ws2.CloseNow()
}

func TestBadFrames(t *testing.T) {
	for _, tc := range []struct {
		name  string
		typ   websocket.MessageType
		frame string
		code  websocket.StatusCode
	}{
		{"oversize", websocket.MessageText, `{"Heartbeat":{"tenants":1}}` + strings.Repeat(" ", 2048), websocket.StatusMessageTooBig},
		{"garbage", websocket.MessageText, `not json`, websocket.StatusInvalidFramePayloadData},
		{"truncated", websocket.MessageText, `{"Ack":{"seq":1}`, websocket.StatusInvalidFramePayloadData},
		{"no message", websocket.MessageText, `{}`, websocket.StatusPolicyViolation},
		{"unknown message", websocket.MessageText, `{"Bogus":{}}`, websocket.StatusPolicyViolation},
		{"two messages", websocket.MessageText, `{"Ack":{"seq":1},"Heartbeat":{"tenants":1}}`, websocket.StatusPolicyViolation},
		{"wrong direction", websocket.MessageText, `{"Hello":{"heartbeat_interval_ms":5}}`, websocket.StatusPolicyViolation},
		{"binary", websocket.MessageBinary, `{"Ack":{"seq":1}}`, websocket.StatusUnsupportedData},
		{"empty batch", websocket.MessageText, `{"Batch":[]}`, websocket.StatusPolicyViolation},
		{"nested batch", websocket.MessageText, `{"Batch":[{"Batch":[{"Ack":{"seq":1}}]}]}`, websocket.StatusPolicyViolation},
		{"batch element without a message", websocket.MessageText, `{"Batch":[{"Ack":{"seq":1}},{}]}`, websocket.StatusPolicyViolation},
		{"batch element with two messages", websocket.MessageText, `{"Batch":[{"Ack":{"seq":1},"Heartbeat":{"tenants":1}}]}`, websocket.StatusPolicyViolation},
		{"batch with a message for the worker", websocket.MessageText, `{"Batch":[{"Ack":{"seq":1}},{"Shutdown":{}}]}`, websocket.StatusPolicyViolation},
		{"batch and a message", websocket.MessageText, `{"Batch":[{"Ack":{"seq":1}}],"Ack":{"seq":2}}`, websocket.StatusPolicyViolation},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, ServerOptions{Workers: 2, MaxFrame: 1024})
			_, good, _ := h.worker(1, newFakeHandler())

			ws := h.rawWorker(0)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := ws.Write(ctx, tc.typ, []byte(tc.frame)); err != nil {
				t.Fatal(err)
			}
			var err error
			for {
				_, _, err = ws.Read(ctx)
				if err != nil {
					break
				}
			}
			if got := websocket.CloseStatus(err); got != tc.code {
				t.Fatalf("connection ended with %v, want close status %d", err, tc.code)
			}
			if err := h.waitDisconnected(0); err == nil {
				t.Fatal("OnDisconnect got nil for a protocol violation")
			}
			if !strings.Contains(h.logs.String(), "protocol violation") {
				t.Fatal("violation not logged")
			}
			// The other worker is unaffected.
			res, err := good.DispatchEvent(ctx, proto.GuildID(1), proto.Event{Name: "Ping"})
			if err != nil || string(res) != `{"ok":true}` {
				t.Fatalf("other worker: %s %v", res, err)
			}
		})
	}
}

func TestHeartbeatMiss(t *testing.T) {
	// 500 ms: the heartbeating worker is declared hung only after 1.5 s
	// of silence, which a busy machine does not impose on a healthy one.
	h := newHarness(t, ServerOptions{Workers: 2, HeartbeatInterval: 500 * time.Millisecond})
	_, good, _ := h.worker(1, newFakeHandler())

	// Worker 0 connects but never sends a frame.
	ws, _, err := h.rawDial(0, h.token(0))
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	h.waitConnected(0)
	conn := h.srv.Conn(0)
	go func() { // keep reading so that the close handshake completes
		for {
			if _, _, err := ws.Read(context.Background()); err != nil {
				return
			}
		}
	}()

	select {
	case id := <-h.hung:
		if id != 0 {
			t.Fatalf("worker %d reported hung, want 0", id)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("silent worker never reported hung")
	}
	select {
	case <-conn.Done():
	default:
		t.Fatal("hung worker's connection still open after OnHung")
	}
	if err := h.waitDisconnected(0); err == nil || !strings.Contains(err.Error(), "heartbeats") {
		t.Fatalf("OnDisconnect of the hung worker: %v", err)
	}
	// The worker that heartbeats is still served.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := good.DispatchEvent(ctx, proto.GuildID(1), proto.Event{Name: "Ping"}); err != nil {
		t.Fatalf("heartbeating worker: %v", err)
	}
	select {
	case hb := <-h.heartbeats:
		if hb.Tenants != 7 {
			t.Fatalf("heartbeat %+v, want 7 tenants", hb)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no heartbeat received")
	}
}
