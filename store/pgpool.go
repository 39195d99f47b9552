package store

import (
	"context"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/templateworker/templateworker/proto"
)

// pgPool is a small pool of PostgreSQL connections: at most max in use,
// idle ones reused newest first. A connection idle for more than a second is
// pinged before reuse, and one that comes back closed, busy or inside a
// transaction is discarded, so the pool recovers by itself when the database
// restarts. (pgxpool would do this, but its dependency is not available to
// this module.)
type pgPool struct {
	cfg  *pgx.ConnConfig
	slot chan struct{} // one token per connection in use

	mu     sync.Mutex
	idle   []idleConn
	closed bool
}

type idleConn struct {
	conn  *pgx.Conn
	since time.Time
}

const (
	// pgPingAfter is how long a connection may idle before it is pinged
	// on reuse.
	pgPingAfter = time.Second
	// pgMaxIdle is how long a connection may idle before it is closed
	// instead of reused.
	pgMaxIdle = 5 * time.Minute
)

func newPgPool(cfg *pgx.ConnConfig, max int) *pgPool {
	return &pgPool{cfg: cfg, slot: make(chan struct{}, max)}
}

// acquire returns a healthy connection, dialling one when none is idle.
func (p *pgPool) acquire(ctx context.Context) (*pgx.Conn, error) {
	select {
	case p.slot <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	for {
		ic, ok, err := p.popIdle()
		if err != nil {
			<-p.slot
			return nil, err
		}
		if !ok {
			break
		}
		idle := time.Since(ic.since)
		switch {
		case ic.conn.IsClosed():
			continue
		case idle > pgMaxIdle:
			closeConn(ic.conn)
			continue
		case idle > pgPingAfter:
			if err := ic.conn.Ping(ctx); err != nil {
				closeConn(ic.conn)
				if ctx.Err() != nil {
					<-p.slot
					return nil, ctx.Err()
				}
				continue
			}
		}
		return ic.conn, nil
	}
	conn, err := pgx.ConnectConfig(ctx, p.cfg)
	if err != nil {
		<-p.slot
		return nil, err
	}
	return conn, nil
}

func (p *pgPool) popIdle() (idleConn, bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return idleConn{}, false, proto.Errorf(proto.CodeStoreUnavailable, "postgres store is closed")
	}
	n := len(p.idle)
	if n == 0 {
		return idleConn{}, false, nil
	}
	ic := p.idle[n-1]
	p.idle[n-1] = idleConn{}
	p.idle = p.idle[:n-1]
	return ic, true, nil
}

// release returns conn to the pool, or closes it when it is not clean.
func (p *pgPool) release(conn *pgx.Conn) {
	defer func() { <-p.slot }()
	pc := conn.PgConn()
	if conn.IsClosed() || pc.IsBusy() || pc.TxStatus() != 'I' {
		closeConn(conn)
		return
	}
	p.mu.Lock()
	if !p.closed {
		p.idle = append(p.idle, idleConn{conn: conn, since: time.Now()})
		conn = nil
	}
	p.mu.Unlock()
	if conn != nil {
		closeConn(conn)
	}
}

// discardIdle closes every idle connection: called when a connection broke,
// since the others were most likely broken by the same restart.
func (p *pgPool) discardIdle() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, ic := range idle {
		closeConn(ic.conn)
	}
}

// close closes the idle connections; connections in use close on release.
func (p *pgPool) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.discardIdle()
}

func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}
