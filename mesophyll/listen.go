package mesophyll

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Where the master serves Mesophyll (--mesophyll-listen):
//
//	unix             a Unix socket in a new private directory (mode 0700)
//	                 under $TMPDIR, removed when the listener closes: the
//	                 default, and the cheapest way between processes
//	unix:/run/x.sock a Unix socket at that path (mode 0600)
//	127.0.0.1:0      TCP; port 0 picks a free port
//
// Workers get the URL to dial from Listener.URL: ws://host:port/ws for
// TCP, unix:PATH for a Unix socket (Dial understands both).

// unixPrefix starts the listen address and the URL of a Unix socket.
const unixPrefix = "unix:"

// Listener is where the master accepts workers' connections.
type Listener struct {
	net.Listener
	url     string
	cleanup func()
}

// URL returns what a worker passes to Dial to reach this listener.
func (l *Listener) URL() string { return l.url }

// Close stops listening and removes a Unix socket the listener created.
func (l *Listener) Close() error {
	err := l.Listener.Close()
	if l.cleanup != nil {
		l.cleanup()
	}
	return err
}

// Listen listens for workers at addr: "unix", "unix:PATH" or a TCP
// host:port.
func Listen(addr string) (*Listener, error) {
	switch {
	case addr == "unix":
		removeStaleDirs()
		dir, err := os.MkdirTemp("", socketDirPattern)
		if err != nil {
			return nil, fmt.Errorf("listen for Mesophyll: create socket directory: %w", err)
		}
		l, err := listenUnix(filepath.Join(dir, "m.sock"))
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		l.cleanup = func() { os.RemoveAll(dir) }
		return l, nil
	case strings.HasPrefix(addr, unixPrefix):
		path := strings.TrimPrefix(addr, unixPrefix)
		if path == "" {
			return nil, errors.New("listen for Mesophyll: unix: needs a path, e.g. unix:/run/templateworker/mesophyll.sock")
		}
		removeStaleSocket(path)
		l, err := listenUnix(path)
		if err != nil {
			return nil, err
		}
		l.cleanup = func() { os.Remove(path) }
		return l, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for Mesophyll on %s: %w", addr, err)
	}
	return &Listener{Listener: ln, url: "ws://" + ln.Addr().String() + "/ws"}, nil
}

// maxSocketPath is the longest path a Unix socket can have on Linux.
const maxSocketPath = 107

// socketDirPattern names the private directories of "unix".
const socketDirPattern = "templateworker-mesophyll-*"

func listenUnix(path string) (*Listener, error) {
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("listen for Mesophyll: unix socket path %s is %d bytes, the limit is %d: use a shorter $TMPDIR or --mesophyll-listen unix:PATH",
			path, len(path), maxSocketPath)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen for Mesophyll on unix socket %s: %w", path, err)
	}
	// Only the master's user may connect; the token is checked anyway.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("listen for Mesophyll: chmod %s: %w", path, err)
	}
	// The socket file is removed by Listener.Close, not by net.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	return &Listener{Listener: ln, url: unixPrefix + path}, nil
}

// removeStaleDirs removes the socket directories of "unix" under $TMPDIR
// whose socket nobody listens on any more: those of masters killed with -9.
func removeStaleDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), socketDirPattern))
	for _, dir := range dirs {
		if removeStaleSocket(filepath.Join(dir, "m.sock")) {
			os.Remove(dir) // only if empty
		}
	}
}

// removeStaleSocket removes the socket at path if nothing listens on it
// any more (a master killed with -9 leaves its socket behind) and reports
// whether it did.
func removeStaleSocket(path string) bool {
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode()&os.ModeSocket == 0 {
		return false
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close() // in use: Listen reports it
		return false
	}
	return errors.Is(err, syscall.ECONNREFUSED) && os.Remove(path) == nil
}

// dialTarget returns the WebSocket URL to request and, for a Unix socket
// URL, the HTTP client that reaches it.
func dialTarget(url string) (string, *http.Client) {
	path, ok := strings.CutPrefix(url, unixPrefix)
	if !ok {
		return url, nil
	}
	return "ws://mesophyll/ws", &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
}
