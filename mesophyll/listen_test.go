package mesophyll

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/templateworker/templateworker/proto"
)

// serveOn serves a one-worker Server on ln until the test ends.
func serveOn(t *testing.T, ln *Listener) *harness {
	t.Helper()
	h := newHarness(t, ServerOptions{Workers: 1})
	srv := &http.Server{Handler: h.srv}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return h
}

func TestListenUnixPrivateSocket(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	ln, err := Listen("unix")
	if err != nil {
		t.Fatal(err)
	}
	path, ok := strings.CutPrefix(ln.URL(), "unix:")
	if !ok {
		t.Fatalf("URL %q, want unix:PATH", ln.URL())
	}
	for p, want := range map[string]os.FileMode{path: 0o600, filepath.Dir(path): 0o700} {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != want {
			t.Fatalf("%s: %v %v, want mode %v", p, fi, err, want)
		}
	}

	// A worker dials the URL and is served over the socket.
	h := serveOn(t, ln)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := Dial(ctx, ln.URL(), 0, h.token(0), ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = cl.Serve(context.Background(), newFakeHandler()) }()
	h.waitConnected(0)
	if res, err := h.srv.Conn(0).DispatchEvent(ctx, proto.GuildID(1), proto.Event{Name: "Ping"}); err != nil || string(res) != `{"ok":true}` {
		t.Fatalf("dispatch over the unix socket: %s %v", res, err)
	}
	cl.Close()

	ln.Close()
	if _, err := os.Stat(filepath.Dir(path)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket directory still there after Close: %v", err)
	}
}

func TestListenUnixRemovesStaleSockets(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	// A master killed with -9 left its directory and socket behind.
	stale := filepath.Join(tmp, "templateworker-mesophyll-123")
	if err := os.Mkdir(stale, 0o700); err != nil {
		t.Fatal(err)
	}
	dead, err := net.Listen("unix", filepath.Join(stale, "m.sock"))
	if err != nil {
		t.Fatal(err)
	}
	dead.(*net.UnixListener).SetUnlinkOnClose(false)
	dead.Close()
	// A live master's directory, and a master's that is still starting.
	live, err := Listen("unix")
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	starting := filepath.Join(tmp, "templateworker-mesophyll-456")
	if err := os.Mkdir(starting, 0o700); err != nil {
		t.Fatal(err)
	}

	ln, err := Listen("unix")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale directory kept: %v", err)
	}
	for _, dir := range []string{filepath.Dir(strings.TrimPrefix(live.URL(), "unix:")), starting} {
		if _, err := os.Stat(dir); err != nil {
			t.Fatalf("directory %s removed: %v", dir, err)
		}
	}

	// unix:PATH replaces a stale socket but refuses one in use.
	path := filepath.Join(tmp, "fixed.sock")
	first, err := Listen("unix:" + path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Listen("unix:" + path); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("second listener on a socket in use: %v", err)
	}
	first.Listener.(*net.UnixListener).SetUnlinkOnClose(false)
	first.Listener.Close() // dies without removing its socket
	again, err := Listen("unix:" + path)
	if err != nil {
		t.Fatalf("listen over a stale socket: %v", err)
	}
	again.Close()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket still there after Close: %v", err)
	}
}

func TestListenErrors(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{"unix:", "needs a path"},
		{"unix:/" + strings.Repeat("x", 120), "limit is 107"},
		{"256.0.0.1:0", "listen for Mesophyll on 256.0.0.1:0"},
	} {
		ln, err := Listen(tc.addr)
		if err == nil {
			ln.Close()
			t.Fatalf("Listen(%q) succeeded", tc.addr)
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("Listen(%q): %v, want it to say %q", tc.addr, err, tc.want)
		}
	}
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if !strings.HasPrefix(ln.URL(), "ws://127.0.0.1:") || !strings.HasSuffix(ln.URL(), "/ws") {
		t.Fatalf("TCP URL %q", ln.URL())
	}
}
