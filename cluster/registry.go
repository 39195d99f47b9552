package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
)

// Defaults of Config.
const (
	// DefaultHeartbeat is how often a master refreshes its row.
	DefaultHeartbeat = time.Second
	// DefaultTTL is how old a heartbeat may be before its master is gone.
	DefaultTTL = 5 * time.Second
)

// lockKey is the pg_advisory_xact_lock key ("twmaster") held while the
// table is created and while a master checks its range and registers, so
// that two masters starting together cannot both claim a shard.
const lockKey int64 = 0x74776d6173746572

const createTable = `CREATE TABLE IF NOT EXISTS templateworker_masters (
	name         text PRIMARY KEY,
	url          text NOT NULL,
	shard_lo     integer NOT NULL,
	shard_hi     integer NOT NULL,
	shards       integer NOT NULL,
	instance     text NOT NULL,
	started_at   timestamptz NOT NULL DEFAULT now(),
	heartbeat_at timestamptz NOT NULL DEFAULT now()
)`

const selectMembers = `SELECT name, url, shard_lo, shard_hi, shards, heartbeat_at,
	EXTRACT(EPOCH FROM (now() - heartbeat_at))::float8
	FROM templateworker_masters ORDER BY shard_lo, name`

// ErrOverlap is returned by Register when the master's range overlaps the
// range of a live master (or their shard counts differ).
var ErrOverlap = errors.New("shard range conflicts with a live master")

// Config configures a Registry.
type Config struct {
	// DatabaseURL is the shared PostgreSQL.
	DatabaseURL string
	// Self is this master: Name, URL, Range and Shards.
	Self Member
	// Peers overrides the URL of named masters (--peers name=url,...),
	// for when the address a master advertises is not the one this
	// machine must use.
	Peers map[string]string
	// Heartbeat and TTL default to DefaultHeartbeat and DefaultTTL.
	Heartbeat, TTL time.Duration
	Log            zerolog.Logger
}

// Registry keeps this master's row in templateworker_masters fresh and
// holds the latest view of every master.
type Registry struct {
	cfg      Config
	instance string
	pool     *pgxpool.Pool
	cancel   context.CancelFunc
	done     chan struct{}

	mu       sync.RWMutex
	members  []Member
	readAt   time.Time
	report   Report
	beatErr  error
	lastLog  time.Time
	lastText string
}

// Register connects to PostgreSQL, creates the masters table if needed,
// refuses (with ErrOverlap) a range that overlaps a live master, records
// this master and starts heartbeating until Close.
func Register(ctx context.Context, cfg Config) (*Registry, error) {
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.Self.Name == "" || cfg.Self.URL == "" {
		return nil, errors.New("cluster: a master needs a name and an advertised URL")
	}
	if err := cfg.Self.Range.Validate(cfg.Self.Shards); err != nil {
		return nil, fmt.Errorf("cluster: shard range %s: %w", cfg.Self.Range, err)
	}
	pcfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("cluster: parse database URL: %w", err)
	}
	pcfg.MaxConns = 4
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("cluster: connect: %w", err)
	}
	buf := make([]byte, 8)
	_, _ = rand.Read(buf)
	r := &Registry{cfg: cfg, instance: hex.EncodeToString(buf), pool: pool, done: make(chan struct{})}
	if err := r.register(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	if err := r.refresh(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	lctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go r.loop(lctx)
	return r, nil
}

// EnsureTable creates templateworker_masters if it does not exist.
func EnsureTable(ctx context.Context, db *pgxpool.Pool) error {
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockKey); err != nil {
			return fmt.Errorf("lock: %w", err)
		}
		if _, err := tx.Exec(ctx, createTable); err != nil {
			return fmt.Errorf("create templateworker_masters: %w", err)
		}
		return nil
	})
}

// register checks the range against the live masters and upserts this
// master's row, under the advisory lock.
func (r *Registry) register(ctx context.Context) error {
	if err := EnsureTable(ctx, r.pool); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	self := r.cfg.Self
	return pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockKey); err != nil {
			return fmt.Errorf("cluster: lock the masters table: %w", err)
		}
		members, err := queryMembers(ctx, tx)
		if err != nil {
			return err
		}
		for _, m := range members {
			if m.Name == self.Name || !m.Live(r.cfg.TTL) {
				continue
			}
			if m.Shards != self.Shards {
				return fmt.Errorf("%w: master %s (%s) uses --shards %d, this one %d", ErrOverlap, m.Name, m.URL, m.Shards, self.Shards)
			}
			if m.Range.Overlaps(self.Range) {
				return fmt.Errorf("%w: shard range %s of master %s overlaps range %s of master %s (%s, heartbeat %s ago): refusing to serve shards twice",
					ErrOverlap, self.Range, self.Name, m.Range, m.Name, m.URL, m.Age.Round(time.Millisecond))
			}
		}
		_, err = tx.Exec(ctx, `INSERT INTO templateworker_masters (name, url, shard_lo, shard_hi, shards, instance)
			VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (name) DO UPDATE SET url = $2, shard_lo = $3, shard_hi = $4, shards = $5,
				instance = $6, started_at = now(), heartbeat_at = now()`,
			self.Name, self.URL, self.Range.Lo, self.Range.Hi, self.Shards, r.instance)
		if err != nil {
			return fmt.Errorf("cluster: register master %s: %w", self.Name, err)
		}
		return nil
	})
}

// querier is what both a pool, a connection and a transaction offer.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func queryMembers(ctx context.Context, q querier) ([]Member, error) {
	rows, err := q.Query(ctx, selectMembers)
	if err != nil {
		return nil, fmt.Errorf("cluster: list masters: %w", err)
	}
	var out []Member
	for rows.Next() {
		var m Member
		var age float64
		if err := rows.Scan(&m.Name, &m.URL, &m.Range.Lo, &m.Range.Hi, &m.Shards, &m.HeartbeatAt, &age); err != nil {
			rows.Close()
			return nil, fmt.Errorf("cluster: read masters: %w", err)
		}
		m.Age = time.Duration(age * float64(time.Second))
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("cluster: read masters: %w", err)
	}
	return out, nil
}

// List returns every registered master, live or not, reading the table at
// databaseURL; no table means no masters.
func List(ctx context.Context, databaseURL string) ([]Member, error) {
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		return nil, fmt.Errorf("cluster: connect: %w", err)
	}
	defer conn.Close(context.Background())
	members, err := queryMembers(ctx, conn)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" { // undefined_table
		return nil, nil
	}
	return members, err
}

// loop heartbeats until the registry is closed.
func (r *Registry) loop(ctx context.Context) {
	defer close(r.done)
	t := time.NewTicker(r.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		bctx, cancel := context.WithTimeout(ctx, max(2*r.cfg.Heartbeat, 2*time.Second))
		err := r.beat(bctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		r.mu.Lock()
		r.beatErr = err
		r.mu.Unlock()
		r.logState()
	}
}

// beat refreshes this master's row and the view of the others.
func (r *Registry) beat(ctx context.Context) error {
	self := r.cfg.Self
	tag, err := r.pool.Exec(ctx, `UPDATE templateworker_masters SET heartbeat_at = now(), url = $3,
		shard_lo = $4, shard_hi = $5, shards = $6 WHERE name = $1 AND instance = $2`,
		self.Name, r.instance, self.URL, self.Range.Lo, self.Range.Hi, self.Shards)
	if err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	if tag.RowsAffected() == 0 {
		// The row is gone (an operator removed it) or another master took
		// this name: put it back only if it is gone.
		tag, err = r.pool.Exec(ctx, `INSERT INTO templateworker_masters (name, url, shard_lo, shard_hi, shards, instance)
			VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING`,
			self.Name, self.URL, self.Range.Lo, self.Range.Hi, self.Shards, r.instance)
		if err != nil {
			return fmt.Errorf("heartbeat: re-register: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("another master registered under the name %q: give each master its own --master-name", self.Name)
		}
	}
	return r.refresh(ctx)
}

// refresh reads every master and checks the ranges.
func (r *Registry) refresh(ctx context.Context) error {
	members, err := queryMembers(ctx, r.pool)
	if err != nil {
		return err
	}
	rep := Check(members, r.cfg.Self.Shards, r.cfg.TTL)
	r.mu.Lock()
	r.members, r.readAt, r.report = members, time.Now(), rep
	r.mu.Unlock()
	return nil
}

// logState logs the cluster's problems loudly when they change, and again
// every 30 seconds while they last.
func (r *Registry) logState() {
	err := r.Problem()
	text := ""
	if err != nil {
		text = err.Error()
	}
	r.mu.Lock()
	changed := text != r.lastText
	due := text != "" && time.Since(r.lastLog) > 30*time.Second
	if changed || due {
		r.lastText, r.lastLog = text, time.Now()
	}
	r.mu.Unlock()
	switch {
	case text != "" && (changed || due):
		r.cfg.Log.Error().Str("problem", text).Str("master", r.cfg.Self.Name).
			Msg("cluster is inconsistent: overlapping shards may be served twice, shards in gaps are unavailable; fix --shard-range")
	case text == "" && changed:
		r.cfg.Log.Info().Str("master", r.cfg.Self.Name).Msg("cluster is consistent: every shard has exactly one live owner")
	}
}

// Self returns this master as registered.
func (r *Registry) Self() Member { return r.cfg.Self }

// Shards returns the cluster's shard count.
func (r *Registry) Shards() int { return r.cfg.Self.Shards }

// Local reports whether this master owns shard.
func (r *Registry) Local(shard int) bool { return r.cfg.Self.Range.Contains(shard) }

// Members returns the last view of every master, ages brought up to now.
func (r *Registry) Members() []Member {
	r.mu.RLock()
	defer r.mu.RUnlock()
	since := time.Since(r.readAt)
	out := make([]Member, len(r.members))
	for i, m := range r.members {
		m.Age += since
		if u, ok := r.cfg.Peers[m.Name]; ok {
			m.URL = u
		}
		out[i] = m
	}
	return out
}

// Owner returns the live master, other than this one, that owns shard.
func (r *Registry) Owner(shard int) (Member, error) {
	for _, m := range r.Members() {
		if m.Name == r.cfg.Self.Name || m.Shards != r.cfg.Self.Shards || !m.Range.Contains(shard) {
			continue
		}
		if !m.Live(r.cfg.TTL) {
			return m, proto.Errorf(proto.CodeShardUnavailable, "shard %d (owner %s at %s) is unavailable: its last heartbeat was %s ago",
				shard, m.Name, m.URL, m.Age.Round(time.Second))
		}
		return m, nil
	}
	return Member{}, proto.Errorf(proto.CodeShardUnavailable, "shard %d has no live owner: no master's --shard-range covers it", shard)
}

// Problem returns nil when every shard has exactly one live owner and the
// heartbeat works, else what is wrong.
func (r *Registry) Problem() error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.beatErr != nil {
		return fmt.Errorf("registry: %w", r.beatErr)
	}
	if time.Since(r.readAt) > r.cfg.TTL {
		return fmt.Errorf("registry: no heartbeat for %s", time.Since(r.readAt).Round(time.Second))
	}
	return r.report.Err()
}

// Report returns the last check of the ranges.
func (r *Registry) Report() Report {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.report
}

// Notify tells every master that tenant id's templates changed.
func (r *Registry) Notify(ctx context.Context, id proto.Id) error {
	return Notify(ctx, r.pool, r.cfg.Self.Name, id)
}

// Close stops heartbeating and removes this master's row, so the others
// see its shards as a gap at once.
func (r *Registry) Close() error {
	r.cancel()
	<-r.done
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := r.pool.Exec(ctx, `DELETE FROM templateworker_masters WHERE name = $1 AND instance = $2`, r.cfg.Self.Name, r.instance)
	r.pool.Close()
	if err != nil {
		return fmt.Errorf("cluster: deregister %s: %w", r.cfg.Self.Name, err)
	}
	return nil
}
