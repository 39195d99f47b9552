package master

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
)

// HTTPConfig bounds the API server: how many connections it holds and how
// long a client may take. Zero fields take the defaults below.
type HTTPConfig struct {
	// MaxConnections is the most connections served at once
	// (--max-connections); one more is answered 503 too_many_connections
	// and closed. It is lowered to leave the master file descriptors of
	// its own (for its workers, store and logs): see fdHeadroom.
	MaxConnections int
	// ReadTimeout bounds reading one request, headers and body
	// (--http-read-timeout); headers alone get at most 10 s of it.
	ReadTimeout time.Duration
	// IdleTimeout closes a keep-alive connection idle that long
	// (--http-idle-timeout).
	IdleTimeout time.Duration
}

// Defaults of HTTPConfig.
const (
	DefaultMaxConnections = 1024
	DefaultReadTimeout    = 30 * time.Second
	DefaultIdleTimeout    = 60 * time.Second
)

// metricsMaxConnections bounds the connections of --metrics-listen.
const metricsMaxConnections = 64

// fdHeadroom is how many file descriptors the master keeps for itself
// beyond the HTTP connections: the store's, the Mesophyll listener and
// connections, each worker's pipes while it restarts, and logs.
func fdHeadroom(workers int) int { return 128 + 8*workers }

// raiseFDLimit raises the soft RLIMIT_NOFILE to the hard limit and
// returns the soft limit now in force (0 if it cannot be read).
func raiseFDLimit() int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0
	}
	if lim.Cur < lim.Max {
		raised := lim
		raised.Cur = raised.Max
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised) == nil {
			lim = raised
		}
	}
	if lim.Cur > 1<<30 {
		return 1 << 30
	}
	return int(lim.Cur)
}

// connectionBound returns the connection bound to use: want, lowered so
// that the API and metrics connections and the master's own headroom
// stay under the file descriptor limit fds (0: unknown).
func connectionBound(want, fds, workers int, log zerolog.Logger) int {
	if want <= 0 {
		want = DefaultMaxConnections
	}
	if fds <= 0 {
		return want
	}
	room := fds - fdHeadroom(workers) - metricsMaxConnections
	if room < 16 {
		room = 16
	}
	if want > room {
		log.Warn().Int("max_connections", want).Int("fd_limit", fds).Int("lowered_to", room).
			Msg("--max-connections lowered to leave the master file descriptors for its workers")
		return room
	}
	return want
}

// newServer returns an http.Server for h with the timeouts of cfg; write
// is the longest a handler may take to answer (the longest call plus
// margin).
func newServer(h http.Handler, cfg HTTPConfig, write time.Duration) *http.Server {
	read := cfg.ReadTimeout
	if read <= 0 {
		read = DefaultReadTimeout
	}
	idle := cfg.IdleTimeout
	if idle <= 0 {
		idle = DefaultIdleTimeout
	}
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: min(read, 10*time.Second),
		ReadTimeout:       read,
		WriteTimeout:      read + write,
		IdleTimeout:       idle,
		MaxHeaderBytes:    64 << 10,
	}
}

// limitListener accepts at most max connections at once. A connection
// past the bound is answered with a minimal HTTP/1.1 503
// too_many_connections and closed, by at most maxRejecting goroutines at
// a time (beyond them it is closed at once), so that a flood costs
// neither unbounded goroutines nor file descriptors.
type limitListener struct {
	net.Listener
	max       int
	active    atomic.Int64
	rejecting atomic.Int64
	refusal   []byte
	log       zerolog.Logger
	lastLog   atomic.Int64 // unix seconds of the last "refused" log line
}

// maxRejecting bounds the connections being answered 503 at once.
const maxRejecting = 16

func newLimitListener(ln net.Listener, max int, log zerolog.Logger) *limitListener {
	body := fmt.Sprintf(`{"error":{"code":%q,"message":"the server is at its limit of %d connections; try again","retry_after":1}}`+"\n",
		proto.CodeTooManyConnections, max)
	refusal := fmt.Sprintf("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	return &limitListener{Listener: ln, max: max, refusal: []byte(refusal), log: log}
}

// Accept returns the next connection within the bound, refusing those
// past it.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.active.Add(1) <= int64(l.max) {
			return &limitedConn{Conn: c, l: l}, nil
		}
		l.active.Add(-1)
		l.refuse(c)
	}
}

// refuse answers c with 503 and closes it, in the background.
func (l *limitListener) refuse(c net.Conn) {
	if now := time.Now().Unix(); l.lastLog.Swap(now) != now {
		l.log.Warn().Int("max_connections", l.max).Str("remote", c.RemoteAddr().String()).
			Msg("connection refused: at the connection limit")
	}
	if l.rejecting.Add(1) > maxRejecting {
		l.rejecting.Add(-1)
		_ = c.Close()
		return
	}
	go func() {
		defer l.rejecting.Add(-1)
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(time.Second))
		if _, err := c.Write(l.refusal); err != nil {
			return
		}
		// Half-close and drain what the client sent, so that closing
		// does not reset the connection before it read the answer.
		if tc, ok := c.(interface{ CloseWrite() error }); ok {
			_ = tc.CloseWrite()
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(c, 64<<10))
	}()
}

// limitedConn gives its slot back when closed.
type limitedConn struct {
	net.Conn
	l    *limitListener
	once sync.Once
}

// CloseWrite half-closes the connection when the underlying one can, so
// that the server's graceful close after an error answer (close the
// write side, let the client read, then close) still works.
func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.active.Add(-1) })
	return err
}
