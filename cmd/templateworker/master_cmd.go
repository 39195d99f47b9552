package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/templateworker/templateworker/master"
	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/store"
	"github.com/templateworker/templateworker/worker"
)

func masterCommand() *cli.Command {
	return &cli.Command{
		Name:  "master",
		Usage: "run the master: HTTP API, store and workers",
		Flags: append([]cli.Flag{
			&cli.IntFlag{Name: "process-workers", Usage: "run N worker processes (default topology; default: number of CPUs)", EnvVars: envVars("process-workers")},
			&cli.IntFlag{Name: "thread-workers", Usage: "run N workers as goroutines in this process (development topology)", EnvVars: envVars("thread-workers")},
			&cli.StringFlag{Name: "mesophyll-listen", Value: "unix", Usage: "where process workers connect: unix (a private Unix socket under $TMPDIR), unix:PATH, or a loopback host:port (port 0 picks one)", EnvVars: envVars("mesophyll-listen")},
			&cli.StringFlag{Name: "worker-exe", Usage: "advanced: the worker binary (default: this executable)", EnvVars: envVars("worker-exe")},
			&cli.DurationFlag{Name: "min-uptime", Value: 10 * time.Second, Usage: "a worker run shorter than this counts as a failure", EnvVars: envVars("min-uptime")},
			&cli.DurationFlag{Name: "restart-backoff", Value: 3 * time.Second, Usage: "restart delay per consecutive failure", EnvVars: envVars("restart-backoff")},
			&cli.DurationFlag{Name: "restart-backoff-max", Value: 15 * time.Second, Usage: "longest restart delay", EnvVars: envVars("restart-backoff-max")},
			&cli.IntFlag{Name: "max-consecutive-failures", Value: 10, Usage: "consecutive failures of one worker that make the master exit", EnvVars: envVars("max-consecutive-failures")},
			&cli.DurationFlag{Name: "heartbeat-interval", Value: time.Second, Usage: "worker heartbeat interval; 3 missed beats mean hung", EnvVars: envVars("heartbeat-interval")},
			&cli.StringFlag{Name: "mesophyll-max-frame", Value: "4MiB", Usage: "largest Mesophyll frame", EnvVars: envVars("mesophyll-max-frame")},
			&cli.StringFlag{Name: "listen", Value: "127.0.0.1:7878", Usage: "HTTP API address", EnvVars: envVars("listen")},
			&cli.StringFlag{Name: "metrics-listen", Usage: "also serve /metrics, /healthz and /readyz on this address (e.g. 127.0.0.1:9100)", EnvVars: envVars("metrics-listen")},
			&cli.StringFlag{Name: "database-url", Usage: "PostgreSQL URL (postgres://user:pass@host/db); SQLite in --data-dir when empty", EnvVars: envVars("database-url")},
			&cli.IntFlag{Name: "worker-concurrency", Value: worker.DefaultConcurrency, Usage: "calls of different tenants one worker runs at once (a tenant's calls run one at a time, in order)", EnvVars: envVars("worker-concurrency")},
			&cli.DurationFlag{Name: "worker-sched-slice", Value: worker.DefaultSchedSlice, Usage: "scheduler slice a process worker asks Linux for its threads (0: the kernel's default, 1.4ms on 2 CPUs): a thread woken to serve a tenant waits at most this long behind a thread running another tenant's long call", EnvVars: envVars("worker-sched-slice")},
			&cli.IntFlag{Name: "worker-queue", Value: worker.DefaultQueueSize, Usage: "messages that may wait for one worker before calls fail with worker_overloaded", EnvVars: envVars("worker-queue")},
			&cli.Int64Flag{Name: "lua-max-instructions", Value: worker.DefaultLimits.MaxInstructions, Usage: "Lua instructions one call may run", EnvVars: envVars("lua-max-instructions")},
			&cli.DurationFlag{Name: "lua-timeout", Value: worker.DefaultLimits.Timeout, Usage: "wall time one call may take", EnvVars: envVars("lua-timeout")},
			&cli.StringFlag{Name: "lua-max-memory", Value: "64MiB", Usage: "memory ceiling of one tenant VM", EnvVars: envVars("lua-max-memory")},
			&cli.StringFlag{Name: "lua-max-string", Value: "16MiB", Usage: "longest string a script may build", EnvVars: envVars("lua-max-string")},
			&cli.StringFlag{Name: "lua-max-worker-memory", Value: "512MiB", Usage: "memory ceiling of all the tenant VMs of one worker together", EnvVars: envVars("lua-max-worker-memory")},
			&cli.IntFlag{Name: "vm-cache-max", Value: worker.DefaultVMCacheMax, Usage: "tenants (and VMs) one worker keeps loaded; the least recently used idle one is evicted past it (0: unlimited)", EnvVars: envVars("vm-cache-max")},
			&cli.DurationFlag{Name: "vm-idle-ttl", Value: worker.DefaultVMIdleTTL, Usage: "evict a tenant's VM after this long unused (0: never)", EnvVars: envVars("vm-idle-ttl")},
			&cli.StringFlag{Name: "worker-memory-max", Value: "0", Usage: "memory budget of one worker (e.g. 512MiB; 0: off): its Go soft memory limit; above 90% of it in live heap it evicts idle VMs down to 70%; a process worker whose RSS stays above it is replaced by a planned restart", EnvVars: envVars("worker-memory-max")},
			&cli.Int64Flag{Name: "worker-max-dispatches", Usage: "recycle a worker process after about N calls (±10% jitter) with a planned restart (0: never)", EnvVars: envVars("worker-max-dispatches")},
			&cli.IntFlag{Name: "kv-max-keys", Value: store.DefaultQuota.MaxKeys, Usage: "keys one tenant may store", EnvVars: envVars("kv-max-keys")},
			&cli.StringFlag{Name: "kv-max-bytes", Value: "16MiB", Usage: "bytes of keys and values one tenant may store", EnvVars: envVars("kv-max-bytes")},
			&cli.DurationFlag{Name: "watchdog-grace", Value: 5 * time.Second, Usage: "a call running longer than --lua-timeout plus this gets its worker killed and restarted (thread topology: its goroutine abandoned)", EnvVars: envVars("watchdog-grace")},
			&cli.DurationFlag{Name: "dispatch-timeout", Value: 5 * time.Second, Usage: "how long a call may wait for its worker beyond --lua-timeout", EnvVars: envVars("dispatch-timeout")},
			&cli.IntFlag{Name: "quarantine-after", Value: 3, Usage: "fatal incidents (limit hits, worker crashes) within --quarantine-window that quarantine a tenant; 0 disables", EnvVars: envVars("quarantine-after")},
			&cli.DurationFlag{Name: "quarantine-window", Value: 10 * time.Minute, Usage: "window for counting incidents, and how long a quarantine lasts", EnvVars: envVars("quarantine-window")},
			&cli.StringFlag{Name: "max-result", Value: "1MiB", Usage: "largest result of one call, encoded as JSON (result_too_large past it); at most --mesophyll-max-frame minus 4KiB", EnvVars: envVars("max-result")},
			&cli.StringFlag{Name: "worker-queue-bytes", Value: "64MiB", Usage: "bytes of nowait events held for one worker before calls fail with backlog_full; a quarter of it bounds the bytes of one tenant's pending queued events", EnvVars: envVars("worker-queue-bytes")},
			&cli.IntFlag{Name: "max-connections", Value: master.DefaultMaxConnections, Usage: "HTTP connections served at once (503 too_many_connections past it; lowered to fit the file descriptor limit)", EnvVars: envVars("max-connections")},
			&cli.DurationFlag{Name: "http-read-timeout", Value: master.DefaultReadTimeout, Usage: "time a client has to send one request, headers and body", EnvVars: envVars("http-read-timeout")},
			&cli.DurationFlag{Name: "http-idle-timeout", Value: master.DefaultIdleTimeout, Usage: "an idle keep-alive connection is closed after this", EnvVars: envVars("http-idle-timeout")},
			&cli.DurationFlag{Name: "shutdown-timeout", Value: 10 * time.Second, Usage: "how long in-flight calls may finish on SIGTERM", EnvVars: envVars("shutdown-timeout")},
		}, append(append(eventQueueFlags(), clusterFlags()...), commonFlags()...)...),
		Action: runMaster,
	}
}

// commonFlags are shared by the master and the client subcommands.
func commonFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "data-dir", Value: "./data", Usage: "data directory (SQLite database, generated API token)", EnvVars: envVars("data-dir")},
		&cli.StringFlag{Name: "api-token", Usage: "API bearer token (default: read or generated in --data-dir)", EnvVars: envVars("api-token")},
		&cli.StringFlag{Name: "log-format", Value: "auto", Usage: "json, console, or auto (console on a terminal)", EnvVars: envVars("log-format")},
		&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error", EnvVars: envVars("log-level")},
	}
}

func runMaster(c *cli.Context) error {
	if c.Args().Len() > 0 {
		return fmt.Errorf("master takes no arguments, got %q", c.Args().First())
	}
	log, err := newLogger(c.String("log-format"), c.String("log-level"), os.Stderr)
	if err != nil {
		return err
	}
	cfg := master.Config{
		ThreadWorkers:     c.Int("thread-workers"),
		Listen:            c.String("listen"),
		MetricsListen:     c.String("metrics-listen"),
		DataDir:           c.String("data-dir"),
		DatabaseURL:       c.String("database-url"),
		APIToken:          c.String("api-token"),
		WorkerQueue:       c.Int("worker-queue"),
		WorkerConcurrency: c.Int("worker-concurrency"),
		DispatchTimeout:   c.Duration("dispatch-timeout"),
		ShutdownTimeout:   c.Duration("shutdown-timeout"),
		QuarantineAfter:   c.Int("quarantine-after"),
		QuarantineWindow:  c.Duration("quarantine-window"),
		WatchdogGrace:     c.Duration("watchdog-grace"),
		// A test hook only the operator's environment can set: see
		// worker.Options.TestWedgeFunction.
		TestWedgeFunction: os.Getenv(testWedgeEnv),
		Limits: worker.Limits{
			MaxInstructions: c.Int64("lua-max-instructions"),
			Timeout:         c.Duration("lua-timeout"),
			MaxCallDepth:    worker.DefaultLimits.MaxCallDepth,
		},
		Quota: store.Quota{MaxKeys: c.Int("kv-max-keys")},
	}
	if cfg.Cache, err = cacheOptions(c.Int("vm-cache-max"), c.Duration("vm-idle-ttl")); err != nil {
		return err
	}
	if v := strings.TrimSpace(c.String("worker-memory-max")); v != "0" && v != "" {
		if cfg.WorkerMemoryMax, err = parseSize("worker-memory-max", v); err != nil {
			return err
		}
	}
	if cfg.Limits.MaxMemory, err = parseSize("lua-max-memory", c.String("lua-max-memory")); err != nil {
		return err
	}
	maxString, err := parseSize("lua-max-string", c.String("lua-max-string"))
	if err != nil {
		return err
	}
	cfg.Limits.MaxString = int(maxString)
	if err := boundsConfig(c, &cfg); err != nil {
		return err
	}
	if cfg.Limits.MaxWorkerMemory, err = parseSize("lua-max-worker-memory", c.String("lua-max-worker-memory")); err != nil {
		return err
	}
	if cfg.Quota.MaxBytes, err = parseSize("kv-max-bytes", c.String("kv-max-bytes")); err != nil {
		return err
	}
	if cfg.Cluster, err = clusterConfig(c); err != nil {
		return err
	}
	if err := eventsConfig(c, &cfg); err != nil {
		return err
	}
	if err := topology(c, &cfg); err != nil {
		return err
	}
	if cfg.WorkerQueue <= 0 {
		return fmt.Errorf("--worker-queue must be positive, got %d", cfg.WorkerQueue)
	}
	if cfg.WorkerConcurrency < 1 || cfg.WorkerConcurrency > worker.MaxConcurrency {
		return fmt.Errorf("--worker-concurrency must be between 1 and %d, got %d", worker.MaxConcurrency, cfg.WorkerConcurrency)
	}
	if err := worker.CheckSchedSlice(c.Duration("worker-sched-slice")); err != nil {
		return err
	}
	if cfg.Limits.MaxInstructions <= 0 || cfg.Limits.Timeout <= 0 {
		return fmt.Errorf("--lua-max-instructions and --lua-timeout must be positive")
	}
	if cfg.WatchdogGrace < 0 {
		return fmt.Errorf("--watchdog-grace must not be negative, got %s", cfg.WatchdogGrace)
	}
	cfg.Process.Watchdog = cfg.Limits.Timeout + cfg.WatchdogGrace
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return master.Run(ctx, cfg, log)
}

// minMaxFrame is the smallest --mesophyll-max-frame: a request body of
// up to 1 MiB must fit in one frame to a worker.
const minMaxFrame = 2 << 20

// boundsConfig reads the flags that bound what a tenant can make travel
// (frames, results, held events) and the HTTP server's.
func boundsConfig(c *cli.Context, cfg *master.Config) error {
	maxFrame, err := parseSize("mesophyll-max-frame", c.String("mesophyll-max-frame"))
	if err != nil {
		return err
	}
	if maxFrame < minMaxFrame {
		return fmt.Errorf("--mesophyll-max-frame must be at least 2MiB (a 1 MiB request must fit in one frame), got %d", maxFrame)
	}
	cfg.MaxFrame = maxFrame
	maxResult, err := parseSize("max-result", c.String("max-result"))
	if err != nil {
		return err
	}
	if budget := proto.ValueBudget(maxFrame); maxResult > int64(budget) {
		return fmt.Errorf("--max-result %d is over what one frame carries: at most --mesophyll-max-frame minus %d, %d bytes", maxResult, proto.FrameReserve, budget)
	}
	cfg.Limits.MaxResult = int(maxResult)
	if cfg.WorkerQueueBytes, err = parseSize("worker-queue-bytes", c.String("worker-queue-bytes")); err != nil {
		return err
	}
	if cfg.WorkerQueueBytes < 8<<20 {
		return fmt.Errorf("--worker-queue-bytes must be at least 8MiB (a tenant may hold a quarter of it, and one event may be 1 MiB), got %d", cfg.WorkerQueueBytes)
	}
	cfg.HTTP = master.HTTPConfig{
		MaxConnections: c.Int("max-connections"),
		ReadTimeout:    c.Duration("http-read-timeout"),
		IdleTimeout:    c.Duration("http-idle-timeout"),
	}
	if cfg.HTTP.MaxConnections <= 0 || cfg.HTTP.ReadTimeout <= 0 || cfg.HTTP.IdleTimeout <= 0 {
		return errors.New("--max-connections, --http-read-timeout and --http-idle-timeout must be positive")
	}
	return nil
}

// cacheOptions turns --vm-cache-max and --vm-idle-ttl (0 meaning off) into
// worker.CacheOptions (where negative means off).
func cacheOptions(max int, ttl time.Duration) (worker.CacheOptions, error) {
	if max < 0 {
		return worker.CacheOptions{}, fmt.Errorf("--vm-cache-max must be 0 (unlimited) or positive, got %d", max)
	}
	if ttl < 0 {
		return worker.CacheOptions{}, fmt.Errorf("--vm-idle-ttl must be 0 (never) or positive, got %s", ttl)
	}
	c := worker.CacheOptions{MaxTenants: max, IdleTTL: ttl}
	if max == 0 {
		c.MaxTenants = -1
	}
	if ttl == 0 {
		c.IdleTTL = -1
	}
	return c, nil
}

// parseSize parses a byte size: a plain number of bytes, or a number with
// a KiB/MiB/GiB (or KB/MB/GB, powers of 1000) suffix.
func parseSize(flag, s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("bad --%s %q: want a positive size like 16777216, 64MiB or 1GiB", flag, s)
	}
	return n * mult, nil
}

// topology picks thread or process workers and fills the process options.
func topology(c *cli.Context, cfg *master.Config) error {
	threads, procs := c.Int("thread-workers"), c.Int("process-workers")
	if c.IsSet("thread-workers") && c.IsSet("process-workers") {
		return errors.New("--thread-workers and --process-workers are mutually exclusive: pick one topology")
	}
	if c.IsSet("thread-workers") {
		if threads <= 0 {
			return fmt.Errorf("--thread-workers must be positive, got %d", threads)
		}
		if c.Int64("worker-max-dispatches") != 0 {
			return errors.New("--worker-max-dispatches recycles worker processes: it needs --process-workers")
		}
		cfg.ThreadWorkers = threads
		return nil
	}
	if !c.IsSet("process-workers") {
		procs = runtime.NumCPU()
	}
	if procs <= 0 {
		return fmt.Errorf("--process-workers must be positive, got %d", procs)
	}
	cfg.ProcessWorkers = procs
	cfg.MesophyllListen = c.String("mesophyll-listen")
	exe := c.String("worker-exe")
	if exe == "" {
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find this executable to re-exec workers: %w", err)
		}
		exe = self
	}
	if c.Int("max-consecutive-failures") <= 0 {
		return fmt.Errorf("--max-consecutive-failures must be positive")
	}
	if c.Duration("heartbeat-interval") <= 0 {
		return fmt.Errorf("--heartbeat-interval must be positive")
	}
	if c.Int64("worker-max-dispatches") < 0 {
		return fmt.Errorf("--worker-max-dispatches must be 0 (never) or positive, got %d", c.Int64("worker-max-dispatches"))
	}
	format := c.String("log-format")
	if format == "auto" {
		format = "json" // workers write to a pipe the master re-logs
	}
	cfg.Process = master.ProcessConfig{
		Exe:               exe,
		MinUptime:         c.Duration("min-uptime"),
		Backoff:           c.Duration("restart-backoff"),
		BackoffMax:        c.Duration("restart-backoff-max"),
		MaxFailures:       c.Int("max-consecutive-failures"),
		ReadyTimeout:      30 * time.Second,
		DispatchTimeout:   c.Duration("dispatch-timeout"),
		HeartbeatInterval: c.Duration("heartbeat-interval"),
		MaxFrame:          cfg.MaxFrame,
		MemoryMax:         cfg.WorkerMemoryMax,
		MaxDispatches:     c.Int64("worker-max-dispatches"),
		Args: []string{
			"--mesophyll-max-frame", strconv.FormatInt(cfg.MaxFrame, 10),
			"--max-result", strconv.Itoa(cfg.Limits.MaxResult),
			"--log-format", format,
			"--log-level", c.String("log-level"),
			"--worker-queue", strconv.Itoa(cfg.WorkerQueue),
			"--worker-concurrency", strconv.Itoa(c.Int("worker-concurrency")),
			"--sched-slice", c.Duration("worker-sched-slice").String(),
			"--lua-max-instructions", strconv.FormatInt(cfg.Limits.MaxInstructions, 10),
			"--lua-timeout", cfg.Limits.Timeout.String(),
			"--lua-max-memory", strconv.FormatInt(cfg.Limits.MaxMemory, 10),
			"--lua-max-string", strconv.Itoa(cfg.Limits.MaxString),
			"--lua-max-call-depth", strconv.Itoa(cfg.Limits.MaxCallDepth),
			"--lua-max-worker-memory", strconv.FormatInt(cfg.Limits.MaxWorkerMemory, 10),
			"--vm-cache-max", strconv.Itoa(c.Int("vm-cache-max")),
			"--vm-idle-ttl", c.Duration("vm-idle-ttl").String(),
			"--worker-memory-max", strconv.FormatInt(cfg.WorkerMemoryMax, 10),
		},
	}
	return nil
}
