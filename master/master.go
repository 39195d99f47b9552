package master

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/cluster"
	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/store"
	"github.com/templateworker/templateworker/worker"
)

// Config is everything the master needs to run; the CLI fills it from flags
// and TEMPLATEWORKER_* environment variables.
type Config struct {
	// ThreadWorkers > 0 selects the thread topology with that many workers.
	ThreadWorkers int
	// ProcessWorkers > 0 selects the process topology (the default).
	ProcessWorkers int
	// MesophyllListen is where process workers connect: "unix", "unix:PATH"
	// or a loopback host:port (mesophyll.Listen).
	MesophyllListen string
	// Process configures spawning and supervision of process workers.
	Process ProcessConfig
	// Listen is the HTTP API address (default 127.0.0.1:7878).
	Listen string
	// DataDir holds the SQLite database, the generated API token and the
	// address file.
	DataDir string
	// DatabaseURL selects PostgreSQL instead of SQLite.
	DatabaseURL string
	// APIToken is the bearer token of the API; generated into
	// <DataDir>/api-token when empty.
	APIToken string
	// WorkerQueue bounds each worker's queue.
	WorkerQueue int
	// WorkerConcurrency is how many calls of different tenants each
	// worker runs at once (--worker-concurrency; worker.DefaultConcurrency
	// when zero). The process topology passes it to its workers in
	// Process.Args.
	WorkerConcurrency int
	// WorkerQueueBytes bounds the bytes of the nowait events held for
	// each worker (--worker-queue-bytes); past it calls get backlog_full.
	WorkerQueueBytes int64
	// MaxFrame is the Mesophyll frame limit (--mesophyll-max-frame). It
	// bounds what a tenant can make travel — results, KV batches,
	// template sets — in both topologies alike.
	MaxFrame int64
	// HTTP bounds the API's connections and their timeouts.
	HTTP HTTPConfig
	// Limits bound every Lua call.
	Limits worker.Limits
	// Cache bounds the tenants each worker keeps loaded.
	Cache worker.CacheOptions
	// WorkerMemoryMax is each worker's memory budget (0: off); see
	// worker.Options.MemoryMax and ProcessConfig.MemoryMax.
	WorkerMemoryMax int64
	// Quota bounds each tenant's KV data.
	Quota store.Quota
	// DispatchTimeout bounds how long a waited call may wait for its worker
	// beyond the Lua time limit.
	DispatchTimeout time.Duration
	// MetricsListen, when set, serves /metrics, /healthz and /readyz on a
	// separate address too.
	MetricsListen string
	// ShutdownTimeout bounds the graceful stop.
	ShutdownTimeout time.Duration
	// QuarantineAfter fatal incidents within QuarantineWindow quarantine a
	// tenant for QuarantineWindow; 0 disables quarantine.
	QuarantineAfter  int
	QuarantineWindow time.Duration
	// Cluster splits the tenants with other masters; off when zero.
	Cluster ClusterConfig
	// Events configures the durable event queue of nowait events.
	Events EventsConfig
	// SQLiteSynchronous is SQLite's synchronous setting, "normal" (the
	// default) or "full" (--sqlite-synchronous).
	SQLiteSynchronous string
	// WatchdogGrace is how much longer than Limits.Timeout a call may run
	// before the watchdog restarts its worker (see ProcessConfig.Watchdog
	// and worker.Options.Watchdog).
	WatchdogGrace time.Duration
	// TestWedgeFunction is the watchdog's test hook
	// (worker.Options.TestWedgeFunction); empty in production.
	TestWedgeFunction string
}

// TokenFile and AddrFile are the files the master keeps in its data dir so
// that the CLI on the same machine finds it with no flags.
const (
	TokenFile = "api-token"
	AddrFile  = "master.addr"
)

// Run starts the master and serves until ctx is cancelled, then shuts down
// gracefully. It returns a non-nil error only when the master could not run.
func Run(ctx context.Context, cfg Config, log zerolog.Logger) error {
	if err := privateDir(cfg.DataDir, log); err != nil {
		return err
	}
	fds := raiseFDLimit()
	token, err := apiToken(cfg)
	if err != nil {
		return err
	}
	st, err := store.Open(ctx, store.Config{
		DataDir:     cfg.DataDir,
		DatabaseURL: cfg.DatabaseURL,
		Options:     store.Options{Quota: cfg.Quota, Logger: log, Synchronous: cfg.SQLiteSynchronous},
	})
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	defer st.Close()

	quarantine := NewQuarantine(cfg.QuarantineAfter, cfg.QuarantineWindow)
	var owns func(proto.Id) bool
	if cc := cfg.Cluster; cc.Shards > 0 {
		owns = func(id proto.Id) bool { return cc.Range.Contains(cluster.ShardOf(id.ID, cc.Shards)) }
	}
	if err := quarantine.Restore(ctx, st, owns, log); err != nil {
		return err
	}
	fatalCh := make(chan error, 1)
	fatal := func(err error) {
		select {
		case fatalCh <- err:
		default:
		}
	}
	// The queue is opened once the workers run; their ctx.events calls
	// wait for it (store_unavailable before).
	workerQueue := &lateQueue{}
	var (
		pool     *Pool
		kill     func(context.Context) error
		rolling  func(context.Context) error
		topology string
	)
	switch {
	case cfg.ThreadWorkers > 0:
		topology = "thread"
		pool, err = newThreadPool(cfg.ThreadWorkers, worker.Options{
			Store:  quarantinedOut{Store: threadStore(st, workerQueue, cfg.MaxFrame), q: quarantine},
			Limits: threadLimits(cfg.Limits, cfg.MaxFrame), QueueSize: cfg.WorkerQueue,
			Concurrency: cfg.WorkerConcurrency,
			QueueBytes:  cfg.WorkerQueueBytes, Logger: log, Cache: cfg.Cache, MemoryMax: cfg.WorkerMemoryMax,
			OnNowaitError: func(id proto.Id, err error) {
				if c := proto.CodeOf(err); fatalCode(c) {
					quarantine.Strike(id, c+" (nowait event)")
				}
			},
			Watchdog: cfg.Limits.Timeout + cfg.WatchdogGrace,
			OnWatchdog: func(id proto.Id, why string) {
				quarantine.Strike(id, why+"; worker goroutine abandoned")
			},
			AbandonOnPanic:    true,
			TestWedgeFunction: cfg.TestWedgeFunction,
		})
		if err != nil {
			return err
		}
		kill = pool.Kill
	case cfg.ProcessWorkers > 0:
		topology = "process"
		pc := cfg.Process
		pc.QueueSize = cfg.WorkerQueue
		pc.QueueBytes = cfg.WorkerQueueBytes
		pc.MaxFrame = cfg.MaxFrame
		pc.events = workerQueue
		pp, err := startProcessPool(cfg.ProcessWorkers, cfg.MesophyllListen, pc, st, quarantine, log, fatal)
		if err != nil {
			return err
		}
		pool, kill = pp.Pool, pp.Kill
		rolling = func(ctx context.Context) error {
			return pp.RollingRestart(ctx, cfg.ShutdownTimeout+30*time.Second)
		}
	default:
		return errors.New("no topology: give --process-workers N or --thread-workers N")
	}
	events, err := startQueue(ctx, cfg, st, pool, quarantine, owns, log)
	if err != nil {
		_ = kill(context.Background())
		return err
	}
	workerQueue.Set(events)
	stopQueue := func(ctx context.Context) {
		if err := events.Close(ctx); err != nil {
			log.Warn().Err(err).Msg("event queue: stopped before its deliveries in flight ended (their events stay queued)")
		}
	}
	defer stopQueue(context.Background())
	kill = func(kill func(context.Context) error) func(context.Context) error {
		// The queue stops before the workers: a delivery cut short
		// stays in the store.
		return func(ctx context.Context) error {
			stopQueue(ctx)
			return kill(ctx)
		}
	}(kill)
	api := &API{
		Store: st, Workers: pool, Token: token, Log: log, Queue: events, Events: events,
		Quarantine:     quarantine,
		Metrics:        NewMetrics(topology, pool, quarantine),
		CallTimeout:    cfg.Limits.Timeout + cfg.DispatchTimeout,
		Ready:          st.Ping,
		RollingRestart: rolling,
		MaxFrame:       cfg.MaxFrame,
	}
	api.Metrics.WatchQueue(events, pool.Len())
	tcpLn, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		_ = kill(context.Background())
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	maxConns := connectionBound(cfg.HTTP.MaxConnections, fds, pool.Len(), log)
	ln := newLimitListener(tcpLn, maxConns, log)
	node, err := startCluster(ctx, cfg, ln.Addr(), pool, api.CallTimeout, log)
	if err != nil {
		_ = ln.Close()
		_ = kill(context.Background())
		return err
	}
	if node != nil {
		defer node.Close()
		api.Cluster = node
	}
	addr := "http://" + ln.Addr().String()
	// A handler may take a whole call, and a rolling restart extends its
	// own deadline.
	srv := newServer(api.Handler(), cfg.HTTP, api.CallTimeout+30*time.Second)
	serveErr := make(chan error, 2)
	go func() { serveErr <- srv.Serve(ln) }()
	servers := []*http.Server{srv}
	if cfg.MetricsListen != "" {
		mln, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			_ = srv.Close()
			_ = kill(context.Background())
			return fmt.Errorf("listen for metrics on %s: %w", cfg.MetricsListen, err)
		}
		mux := http.NewServeMux()
		api.HealthRoutes(mux)
		msrv := newServer(mux, cfg.HTTP, 30*time.Second)
		go func() { serveErr <- msrv.Serve(newLimitListener(mln, metricsMaxConnections, log)) }()
		servers = append(servers, msrv)
		log.Info().Str("addr", mln.Addr().String()).Msg("serving /metrics, /healthz and /readyz")
	}
	if err := os.WriteFile(filepath.Join(cfg.DataDir, AddrFile), []byte(addr+"\n"), 0o600); err != nil {
		log.Warn().Err(err).Msg("write address file")
	} else if err := store.PrivateFile(filepath.Join(cfg.DataDir, AddrFile)); err != nil {
		log.Warn().Err(err).Msg("address file mode")
	}
	log.Info().Str("addr", addr).Str("topology", topology).Int("workers", pool.Len()).
		Int("max_connections", maxConns).Int("fd_limit", fds).
		Str("store", storeName(cfg)).Msg("master serving")

	notify := newNotifier(log)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	notify.tick(pool)
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-serveErr:
			_ = kill(context.Background())
			return fmt.Errorf("serve HTTP: %w", err)
		case err := <-fatalCh:
			log.Error().Err(err).Msg("fatal: stopping every worker and exiting")
			notify.stopping()
			for _, s := range servers {
				_ = s.Close()
			}
			kctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = kill(kctx)
			_ = os.Remove(filepath.Join(cfg.DataDir, AddrFile))
			return err
		case <-hup:
			if api.RollingRestart == nil {
				log.Warn().Msg("SIGHUP: rolling restart needs process workers; ignored")
				continue
			}
			log.Info().Msg("SIGHUP: rolling restart of the workers")
			go func() {
				if err := api.RollingRestart(ctx); err != nil {
					log.Error().Err(err).Msg("rolling restart")
				}
			}()
		case <-tick.C:
			notify.tick(pool)
		}
	}
	log.Info().Msg("shutting down")
	notify.stopping()
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	for _, s := range servers {
		if err := s.Shutdown(sctx); err != nil {
			log.Warn().Err(err).Msg("HTTP shutdown")
		}
	}
	if err := kill(sctx); err != nil {
		log.Warn().Err(err).Msg("stop workers")
	}
	_ = os.Remove(filepath.Join(cfg.DataDir, AddrFile))
	log.Info().Msg("stopped")
	return nil
}

// privateDir creates the data dir with mode 0700, or makes an existing
// one 0700: it holds the API token and the database.
func privateDir(dir string, log zerolog.Logger) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			log.Warn().Err(err).Str("dir", dir).Msg("cannot make the data dir private (0700)")
			return nil
		}
		log.Info().Str("dir", dir).Str("was", fi.Mode().Perm().String()).Msg("data dir made private (0700)")
	}
	return nil
}

func storeName(cfg Config) string {
	if cfg.DatabaseURL != "" {
		return "postgres " + store.RedactURL(cfg.DatabaseURL)
	}
	return "sqlite " + filepath.Join(cfg.DataDir, "templateworker.db")
}

// apiToken returns the configured token, or the one in the data dir,
// generating it (mode 0600) at first start.
func apiToken(cfg Config) (string, error) {
	if cfg.APIToken != "" {
		return cfg.APIToken, nil
	}
	path := filepath.Join(cfg.DataDir, TokenFile)
	if b, err := os.ReadFile(path); err == nil {
		if err := store.PrivateFile(path); err != nil {
			return "", fmt.Errorf("API token: %w", err)
		}
		if t := strings.TrimSpace(string(b)); t != "" {
			return t, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read API token: %w", err)
	}
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return "", fmt.Errorf("generate API token: %w", err)
	}
	t := hex.EncodeToString(buf)
	if err := os.WriteFile(path, []byte(t+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write API token: %w", err)
	}
	return t, nil
}
