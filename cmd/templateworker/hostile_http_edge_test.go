package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/templateworker/templateworker/internal/syncbuf"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/templateworker/templateworker/client"
	"github.com/templateworker/templateworker/master"
	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/store"
)

// Hostile clients of issue 14 at the HTTP edge (slow bodies, idle and
// flooding connections under a low fd limit) and the data dir's file
// modes; see hostile_http_test.go for the helpers.

// TestHostileSlowAndIdleConnections: a body that promises 100,000 bytes
// and sends 1 is cut with 408 request_timeout; a connection that sends
// nothing, and an idle keep-alive one, are closed by the server.
func TestHostileSlowAndIdleConnections(t *testing.T) {
	attacker, neighbour := hostilePair()
	m := startHostile(t, hostileTopologies[0].args, neighbour, "--http-read-timeout", "2s", "--http-idle-timeout", "2s")
	host := strings.TrimPrefix(m.addr, "http://")
	dial := func() net.Conn {
		c, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(60 * time.Second))
		return c
	}
	slow := dial()
	fmt.Fprintf(slow, "POST /v1/tenants/%s/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 100000\r\n\r\n{", attacker.Path(), m.token)
	resp, err := http.ReadResponse(bufio.NewReader(slow), nil)
	if err != nil {
		t.Fatalf("slow body: no answer: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(b), proto.CodeRequestTimeout) {
		t.Fatalf("slow body: %s %s", resp.Status, b)
	}
	wantClosed := func(what string, c net.Conn) {
		t.Helper()
		_, err := io.ReadAll(c)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("%s: the server did not close the connection", what)
		}
	}
	wantClosed("slow body", slow)
	wantClosed("silent connection", dial())
	keep := dial()
	fmt.Fprintf(keep, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(keep)
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("keep-alive request: %v %v", resp, err)
	} else {
		_, _ = io.ReadAll(resp.Body)
	}
	if _, err := io.ReadAll(br); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("idle keep-alive connection not closed by the server")
		}
	}
	wantNeighbourServed(t, m, neighbour)
	wantHealthy(t, m, neighbour, true)
}

// startMasterFDLimited starts a master with its file descriptor limit
// (soft and hard) lowered to fds.
func startMasterFDLimited(t *testing.T, fds int, args ...string) *runningMaster {
	t.Helper()
	dataDir := t.TempDir()
	full := append([]string{"-c", fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, fds), binPath,
		"master", "--listen", "127.0.0.1:0", "--data-dir", dataDir, "--log-format", "json"}, args...)
	cmd := exec.Command("sh", full...)
	cmd.Env = append(os.Environ(), "TEMPLATEWORKER_API_TOKEN=", "TMPDIR="+shortTempDir(t))
	out := &syncbuf.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start master: %v", err)
	}
	m := &runningMaster{t: t, cmd: cmd, dataDir: dataDir, out: out, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(m.exited) }()
	t.Cleanup(func() {
		m.stop(syscall.SIGKILL)
		if t.Failed() {
			t.Logf("master output:\n%s", tail(out.String(), 6000))
		}
	})
	waitFor(t, 30*time.Second, func() bool {
		b, err := os.ReadFile(filepath.Join(dataDir, master.AddrFile))
		select {
		case <-m.exited:
			t.Fatalf("master exited:\n%s", out.String())
		default:
		}
		m.addr = strings.TrimSpace(string(b))
		return err == nil && m.addr != ""
	})
	tok, err := os.ReadFile(filepath.Join(dataDir, master.TokenFile))
	if err != nil {
		t.Fatal(err)
	}
	m.token = strings.TrimSpace(string(tok))
	m.api = client.New(m.addr, m.token)
	return m
}

// TestHostileConnectionFloodUnderLowFDLimit: with the master's fd limit
// lowered to 400, 300 connections held open (and re-opened as the server
// cuts them) get the connection bound's 503 past it, and a worker killed
// with -9 meanwhile restarts: the master kept file descriptors for it.
func TestHostileConnectionFloodUnderLowFDLimit(t *testing.T) {
	_, neighbour := hostilePair()
	m := startMasterFDLimited(t, 400, "--process-workers", "2", "--restart-backoff", "50ms", "--http-read-timeout", "3s")
	rows := m.waitReady(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := m.api.PutTemplate(ctx, neighbour, "quick", `return "ok"`, []string{"Ping"}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(m.out.String(), `"fd_limit":400`) {
		t.Fatalf("the master does not report the lowered fd limit:\n%s", tail(m.out.String(), 2000))
	}
	connected := func() int {
		n := 0
		for _, line := range strings.Split(m.out.String(), "\n") {
			if strings.Contains(line, `"message":"worker connected"`) && strings.Contains(line, `"worker":0`) {
				n++
			}
		}
		return n
	}
	before := connected()
	host := strings.TrimPrefix(m.addr, "http://")
	stop := make(chan struct{})
	var stopOnce sync.Once
	var flood sync.WaitGroup
	endFlood := func() { stopOnce.Do(func() { close(stop) }); flood.Wait() }
	defer endFlood()
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}
	for i := 0; i < 300; i++ {
		flood.Add(1)
		go func() {
			defer flood.Done()
			buf := make([]byte, 512)
			for !stopped() {
				c, err := net.DialTimeout("tcp", host, 5*time.Second)
				if err != nil {
					time.Sleep(50 * time.Millisecond)
					continue
				}
				// Hold it, sending nothing, until the server closes it.
				for !stopped() {
					_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
					if _, err := c.Read(buf); err != nil {
						var ne net.Error
						if errors.As(err, &ne) && ne.Timeout() {
							continue
						}
						break
					}
				}
				c.Close()
				time.Sleep(50 * time.Millisecond)
			}
		}()
	}
	// Past the bound, a new connection is answered 503 at once.
	waitFor(t, time.Minute, func() bool {
		c, err := net.DialTimeout("tcp", host, 5*time.Second)
		if err != nil {
			return false
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == 503 && strings.Contains(string(b), proto.CodeTooManyConnections)
	})
	if err := syscall.Kill(rows[0].PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// The new process connects while the flood goes on.
	waitFor(t, 2*time.Minute, func() bool { return connected() > before })
	endFlood()
	if out := m.out.String(); strings.Contains(out, "too many open files") {
		t.Fatalf("the master ran out of file descriptors:\n%s", tail(out, 3000))
	}
	var w0 workerRow
	waitFor(t, time.Minute, func() bool {
		raw, err := m.api.Workers(ctx)
		if err != nil {
			return false
		}
		var out struct{ Workers []workerRow }
		if json.Unmarshal(raw, &out) != nil || len(out.Workers) == 0 {
			return false
		}
		w0 = out.Workers[0]
		return w0.State == "ready" && w0.PID != rows[0].PID
	})
	if w0.Restarts != 1 {
		t.Fatalf("worker 0: %d restarts, want 1", w0.Restarts)
	}
	wantNeighbourServed(t, m, neighbour)
	select {
	case <-m.exited:
		t.Fatal("the master exited")
	default:
	}
}

// TestHostileFileModes: the data dir is 0700, the database, its -wal and
// -shm and the API token 0600 — created so, and made so in a data dir of
// an older version with looser modes.
func TestHostileFileModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	files := []string{store.SQLiteFile, store.SQLiteFile + "-wal", store.SQLiteFile + "-shm", master.TokenFile}
	check := func(m *runningMaster) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := m.api.PutTemplate(ctx, proto.GuildID(1), "t", `return 1`, []string{"Ping"}); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
			t.Fatalf("data dir: %v %v, want 0700", fi.Mode(), err)
		}
		for _, f := range files {
			fi, err := os.Stat(filepath.Join(dir, f))
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("%s: %v %v, want 0600", f, fi.Mode(), err)
			}
		}
	}
	m := startMaster(t, dir, "--thread-workers", "1")
	check(m)
	m.stop(syscall.SIGTERM)
	// An upgraded data dir: modes an older version left.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		// SQLite removes -wal and -shm at a clean close: leave empty
		// ones, as a master killed with -9 would leave them.
		p := filepath.Join(dir, f)
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			if err := os.WriteFile(p, nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chmod(p, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m = startMaster(t, dir, "--thread-workers", "1")
	check(m)
}
