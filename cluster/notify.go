package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
)

// Channel is the LISTEN/NOTIFY channel of template changes.
const Channel = "templateworker_templates"

// change is the payload of a notification on Channel.
type change struct {
	Tenant proto.Id `json:"tenant"`
	From   string   `json:"from,omitempty"`
}

// Execer runs a statement: a *pgx.Conn, a *pgxpool.Pool or a pgx.Tx.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Notify tells every listening master that tenant id's templates changed;
// from names the sending master (its own Listener ignores it).
func Notify(ctx context.Context, db Execer, from string, id proto.Id) error {
	b, err := json.Marshal(change{Tenant: id, From: from})
	if err != nil {
		return fmt.Errorf("cluster: encode notification: %w", err)
	}
	if _, err := db.Exec(ctx, `SELECT pg_notify($1, $2)`, Channel, string(b)); err != nil {
		return fmt.Errorf("cluster: notify template change of %s: %w", id, err)
	}
	return nil
}

// ListenConfig configures a Listener.
type ListenConfig struct {
	// DatabaseURL is the shared PostgreSQL.
	DatabaseURL string
	// Self is this master's name; its own notifications are ignored.
	Self string
	// OnChange is called, one call at a time, for every template change
	// made by another master.
	OnChange func(id proto.Id)
	// OnReconnect, if set, is called after the connection was lost and
	// LISTEN is active again: notifications sent meanwhile were missed.
	OnReconnect func()
	Log         zerolog.Logger
}

// Listener LISTENs on Channel on a dedicated connection, reconnecting with
// capped backoff when it breaks.
type Listener struct {
	cfg       ListenConfig
	cancel    context.CancelFunc
	done      chan struct{}
	listening chan struct{}
}

// Listen starts a Listener; Close stops it.
func Listen(cfg ListenConfig) *Listener {
	ctx, cancel := context.WithCancel(context.Background())
	l := &Listener{cfg: cfg, cancel: cancel, done: make(chan struct{}), listening: make(chan struct{})}
	go l.run(ctx)
	return l
}

// WaitListening waits until LISTEN is first active.
func (l *Listener) WaitListening(ctx context.Context) error {
	select {
	case <-l.listening:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("cluster: wait for LISTEN %s: %w", Channel, ctx.Err())
	}
}

// Close stops listening and waits for the loop to end.
func (l *Listener) Close() {
	l.cancel()
	<-l.done
}

func (l *Listener) run(ctx context.Context) {
	defer close(l.done)
	backoff := 100 * time.Millisecond
	first := true
	for ctx.Err() == nil {
		err := l.session(ctx, &first, &backoff)
		if ctx.Err() != nil {
			return
		}
		l.cfg.Log.Warn().Err(err).Dur("retry_in", backoff).Msg("cluster: template change listener lost its connection; reconnecting")
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// session connects, LISTENs and delivers notifications until an error.
func (l *Listener) session(ctx context.Context, first *bool, backoff *time.Duration) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	conn, err := pgx.Connect(cctx, l.cfg.DatabaseURL)
	cancel()
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+Channel); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	*backoff = 100 * time.Millisecond
	if *first {
		*first = false
		close(l.listening)
	} else {
		l.cfg.Log.Info().Msg("cluster: template change listener reconnected")
		if l.cfg.OnReconnect != nil {
			l.cfg.OnReconnect()
		}
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		var c change
		if err := json.Unmarshal([]byte(n.Payload), &c); err != nil {
			l.cfg.Log.Warn().Err(errors.Unwrap(err)).Str("payload", n.Payload).Msg("cluster: ignoring a malformed template change notification")
			continue
		}
		if c.From != "" && c.From == l.cfg.Self {
			continue
		}
		l.cfg.OnChange(c.Tenant)
	}
}
