package pgtest

import (
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Proxy forwards TCP connections from 127.0.0.1 to the test database's
// server and can be cut and restored on the same address: the database
// going away and coming back, from a client's point of view, without
// disturbing the server other tests use.
type Proxy struct {
	tb              testing.TB
	network, target string

	mu    sync.Mutex
	addr  string
	l     net.Listener
	conns []net.Conn
}

// NewProxy starts a proxy to the server of base (reached over TCP or its
// unix socket). It is cut at the end of tb.
func NewProxy(tb testing.TB, base string) *Proxy {
	tb.Helper()
	cfg, err := pgconn.ParseConfig(base)
	if err != nil {
		tb.Fatalf("parse %s: %v", Env, err)
	}
	p := &Proxy{tb: tb, network: "tcp", target: net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))), addr: "127.0.0.1:0"}
	if strings.HasPrefix(cfg.Host, "/") {
		p.network, p.target = "unix", cfg.Host+"/.s.PGSQL."+strconv.Itoa(int(cfg.Port))
	}
	p.Start()
	tb.Cleanup(p.Cut)
	return p
}

// Addr is the proxy's host:port, to be set as a client's "host".
func (p *Proxy) Addr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addr
}

// Start listens (again, on the same address) and forwards every connection.
func (p *Proxy) Start() {
	p.tb.Helper()
	var (
		l   net.Listener
		err error
	)
	for try := 0; try < 50; try++ { // the old address may linger a moment
		if l, err = net.Listen("tcp", p.Addr()); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		p.tb.Fatalf("proxy listen: %v", err)
	}
	p.mu.Lock()
	p.l, p.addr = l, l.Addr().String()
	p.mu.Unlock()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s, err := net.DialTimeout(p.network, p.target, 5*time.Second)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			if p.l != l { // cut meanwhile
				p.mu.Unlock()
				c.Close()
				s.Close()
				return
			}
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			go func() { io.Copy(s, c); s.Close() }()
			go func() { io.Copy(c, s); c.Close() }()
		}
	}()
}

// Cut closes the listener and every forwarded connection: new connections
// are refused, established ones break.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.l != nil {
		p.l.Close()
		p.l = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}
