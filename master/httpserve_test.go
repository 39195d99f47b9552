package master

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/store"
)

// serveLimited serves h on 127.0.0.1:0 behind a limitListener of max
// connections with cfg's timeouts, and returns its address.
func serveLimited(t *testing.T, max int, cfg HTTPConfig, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := newServer(h, cfg, 5*time.Second)
	go func() { _ = srv.Serve(newLimitListener(ln, max, zerolog.Nop())) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

func TestConnectionsPastTheBoundGet503(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	addr := serveLimited(t, 3, HTTPConfig{ReadTimeout: time.Minute, IdleTimeout: time.Minute}, ok)
	var held []net.Conn
	for i := 0; i < 3; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		held = append(held, c)
	}
	// The listener counts a connection when it accepts it: wait until
	// the fourth is refused.
	var resp *http.Response
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err = http.ReadResponse(bufio.NewReader(c), nil)
		if err == nil && resp.StatusCode == http.StatusServiceUnavailable {
			body, _ := io.ReadAll(resp.Body)
			c.Close()
			if !strings.Contains(string(body), `"code":"too_many_connections"`) || resp.Header.Get("Retry-After") == "" {
				t.Fatalf("refusal: %s %q", resp.Status, body)
			}
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("a fourth connection was never refused (last: %v %v)", resp, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Closing one gives its slot back.
	held[0].Close()
	deadline = time.Now().Add(20 * time.Second)
	for {
		r, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + addr + "/")
		if err == nil {
			b, _ := io.ReadAll(r.Body)
			r.Body.Close()
			if r.StatusCode == 200 && string(b) == "ok" {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no slot after closing a connection: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestSlowBodyIsCutByTheReadTimeout(t *testing.T) {
	a := &API{Store: nil, Token: "t", Log: zerolog.Nop()}
	h := a.auth(func(w http.ResponseWriter, r *http.Request) error {
		_, err := decodeEvent(r)
		return err
	})
	addr := serveLimited(t, 10, HTTPConfig{ReadTimeout: 500 * time.Millisecond, IdleTimeout: time.Minute}, h)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Promise 100,000 bytes, send one.
	_, _ = io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\nContent-Length: 100000\r\n\r\n{")
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer before the connection ended: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(body), proto.CodeRequestTimeout) {
		t.Fatalf("slow body: %s %s", resp.Status, body)
	}
	// And the connection is closed.
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection still open after the timed-out body")
	}
}

func TestIdleConnectionsAreClosed(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	addr := serveLimited(t, 10, HTTPConfig{ReadTimeout: 300 * time.Millisecond, IdleTimeout: 300 * time.Millisecond}, ok)
	for _, first := range []string{"", "GET / HTTP/1.1\r\nHost: x\r\n\r\n"} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(c, first)
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		_, err = io.ReadAll(c) // returns when the server closes
		c.Close()
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("connection (first bytes %q) not closed by the server", first)
		}
	}
}

func TestConnectionBoundLeavesFileDescriptors(t *testing.T) {
	log := zerolog.Nop()
	if got := connectionBound(1024, 1<<20, 8, log); got != 1024 {
		t.Fatalf("plenty of fds: %d", got)
	}
	got := connectionBound(1024, 512, 2, log)
	if want := 512 - fdHeadroom(2) - metricsMaxConnections; got != want {
		t.Fatalf("512 fds: bound %d, want %d", got, want)
	}
	if got := connectionBound(1024, 100, 2, log); got != 16 {
		t.Fatalf("tiny fd limit: %d, want the floor 16", got)
	}
	if fds := raiseFDLimit(); fds <= 0 {
		t.Fatalf("raiseFDLimit() = %d", fds)
	}
}

func TestBoundedStore(t *testing.T) {
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, t.TempDir()+"/db", store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	id := proto.GuildID(7)
	const frame = 2 << 20
	b := newBoundedStore(st, frame)
	value := []byte(`"` + strings.Repeat("v", 250<<10) + `"`)
	for i := 0; i < 8; i++ {
		if err := st.KvSet(ctx, id, "k"+string(rune('a'+i)), value); err != nil {
			t.Fatal(err)
		}
	}
	if items, err := b.KvFind(ctx, id, "ka"); err != nil || len(items) != 1 {
		t.Fatalf("small find: %d %v", len(items), err)
	}
	if items, err := b.KvFind(ctx, id, ""); err != nil || len(items) != 8 {
		t.Fatalf("8 x 250 KB in a 2 MiB frame: %d %v", len(items), err)
	}
	if err := st.KvSet(ctx, id, "kz", value); err != nil {
		t.Fatal(err)
	}
	_, err = b.KvFind(ctx, id, "")
	if pe := proto.AsError(err); pe.Code != proto.CodeKVResultTooLarge || !strings.Contains(pe.Message, "2093056 bytes") {
		t.Fatalf("9 x 250 KB: %v, want kv_result_too_large naming the limit", err)
	}

	code := strings.Repeat("-", 400<<10)
	var set []proto.Template
	for i := 0; ; i++ {
		tp := proto.Template{Name: "t" + string(rune('a'+i)), Code: code, Events: []string{"Ping"}, UpdatedAt: time.Now()}
		err := checkTemplate(set, id, tp, frame)
		if err != nil {
			if proto.CodeOf(err) != proto.CodeTemplateTooLarge || i != 5 {
				t.Fatalf("template %d: %v, want template_too_large at the 6th", i, err)
			}
			// Replacing one of the same name does not grow the set.
			tp.Name = "ta"
			if err := checkTemplate(set, id, tp, frame); err != nil {
				t.Fatalf("replacing a template: %v", err)
			}
			break
		}
		set = append(set, tp)
		if err := st.PutTemplate(ctx, id, tp); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.Templates(ctx, id); err != nil {
		t.Fatalf("templates that fit: %v", err)
	}
	// A set over the bound (stored by an older version, or two racing
	// PUTs) is refused when a worker asks for it.
	if err := st.PutTemplate(ctx, id, proto.Template{Name: "tz", Code: code}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Templates(ctx, id); proto.CodeOf(err) != proto.CodeTemplateTooLarge {
		t.Fatalf("oversized set: %v", err)
	}
	big := proto.Template{Name: "one", Code: strings.Repeat("x", proto.MaxTemplateBytes+1)}
	if err := checkTemplate(nil, id, big, frame); proto.CodeOf(err) != proto.CodeTemplateTooLarge {
		t.Fatalf("one template over MaxTemplateBytes: %v", err)
	}
}

func TestOversizedBodyIsAnsweredThroughTheLimitedListener(t *testing.T) {
	a := &API{Token: "t", Log: zerolog.Nop()}
	h := a.auth(func(w http.ResponseWriter, r *http.Request) error {
		_, err := decodeEvent(r)
		return err
	})
	addr := serveLimited(t, 10, HTTPConfig{ReadTimeout: 30 * time.Second, IdleTimeout: time.Minute}, h)
	req, _ := http.NewRequest("POST", "http://"+addr+"/", strings.NewReader(`{"name":"x","data":"`+strings.Repeat("a", 3<<20)+`"}`))
	req.Header.Set("Authorization", "Bearer t")
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("no answer to an oversized body: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 400 || !strings.Contains(string(b), proto.CodeTooLarge) {
		t.Fatalf("oversized body: %s %s", resp.Status, b)
	}
}
