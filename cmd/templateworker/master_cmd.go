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
			&cli.IntFlag{Name: "worker-queue", Value: worker.DefaultQueueSize, Usage: "messages that may wait for one worker before calls fail with worker_overloaded", EnvVars: envVars("worker-queue")},
			&cli.Int64Flag{Name: "lua-max-instructions", Value: worker.DefaultLimits.MaxInstructions, Usage: "Lua instructions one call may run", EnvVars: envVars("lua-max-instructions")},
			&cli.DurationFlag{Name: "lua-timeout", Value: worker.DefaultLimits.Timeout, Usage: "wall time one call may take", EnvVars: envVars("lua-timeout")},
			&cli.StringFlag{Name: "lua-max-memory", Value: "64MiB", Usage: "memory ceiling of one tenant VM", EnvVars: envVars("lua-max-memory")},
			&cli.StringFlag{Name: "lua-max-string", Value: "16MiB", Usage: "longest string a script may build", EnvVars: envVars("lua-max-string")},
			&cli.IntFlag{Name: "kv-max-keys", Value: store.DefaultQuota.MaxKeys, Usage: "keys one tenant may store", EnvVars: envVars("kv-max-keys")},
			&cli.StringFlag{Name: "kv-max-bytes", Value: "16MiB", Usage: "bytes of keys and values one tenant may store", EnvVars: envVars("kv-max-bytes")},
			&cli.DurationFlag{Name: "watchdog-grace", Value: 5 * time.Second, Usage: "a call running longer than --lua-timeout plus this gets its worker killed and restarted (thread topology: its goroutine abandoned)", EnvVars: envVars("watchdog-grace")},
			&cli.DurationFlag{Name: "dispatch-timeout", Value: 5 * time.Second, Usage: "how long a call may wait for its worker beyond --lua-timeout", EnvVars: envVars("dispatch-timeout")},
			&cli.IntFlag{Name: "quarantine-after", Value: 3, Usage: "fatal incidents (limit hits, worker crashes) within --quarantine-window that quarantine a tenant; 0 disables", EnvVars: envVars("quarantine-after")},
			&cli.DurationFlag{Name: "quarantine-window", Value: 10 * time.Minute, Usage: "window for counting incidents, and how long a quarantine lasts", EnvVars: envVars("quarantine-window")},
			&cli.DurationFlag{Name: "shutdown-timeout", Value: 10 * time.Second, Usage: "how long in-flight calls may finish on SIGTERM", EnvVars: envVars("shutdown-timeout")},
		}, append(clusterFlags(), commonFlags()...)...),
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
		ThreadWorkers:    c.Int("thread-workers"),
		Listen:           c.String("listen"),
		MetricsListen:    c.String("metrics-listen"),
		DataDir:          c.String("data-dir"),
		DatabaseURL:      c.String("database-url"),
		APIToken:         c.String("api-token"),
		WorkerQueue:      c.Int("worker-queue"),
		DispatchTimeout:  c.Duration("dispatch-timeout"),
		ShutdownTimeout:  c.Duration("shutdown-timeout"),
		QuarantineAfter:  c.Int("quarantine-after"),
		QuarantineWindow: c.Duration("quarantine-window"),
		WatchdogGrace:    c.Duration("watchdog-grace"),
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
	if cfg.Limits.MaxMemory, err = parseSize("lua-max-memory", c.String("lua-max-memory")); err != nil {
		return err
	}
	maxString, err := parseSize("lua-max-string", c.String("lua-max-string"))
	if err != nil {
		return err
	}
	cfg.Limits.MaxString = int(maxString)
	if cfg.Quota.MaxBytes, err = parseSize("kv-max-bytes", c.String("kv-max-bytes")); err != nil {
		return err
	}
	if cfg.Cluster, err = clusterConfig(c); err != nil {
		return err
	}
	if err := topology(c, &cfg); err != nil {
		return err
	}
	if cfg.WorkerQueue <= 0 {
		return fmt.Errorf("--worker-queue must be positive, got %d", cfg.WorkerQueue)
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
	maxFrame, err := parseSize("mesophyll-max-frame", c.String("mesophyll-max-frame"))
	if err != nil {
		return err
	}
	if c.Int("max-consecutive-failures") <= 0 {
		return fmt.Errorf("--max-consecutive-failures must be positive")
	}
	if c.Duration("heartbeat-interval") <= 0 {
		return fmt.Errorf("--heartbeat-interval must be positive")
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
		MaxFrame:          maxFrame,
		Args: []string{
			"--log-format", format,
			"--log-level", c.String("log-level"),
			"--worker-queue", strconv.Itoa(cfg.WorkerQueue),
			"--lua-max-instructions", strconv.FormatInt(cfg.Limits.MaxInstructions, 10),
			"--lua-timeout", cfg.Limits.Timeout.String(),
			"--lua-max-memory", strconv.FormatInt(cfg.Limits.MaxMemory, 10),
			"--lua-max-string", strconv.Itoa(cfg.Limits.MaxString),
			"--lua-max-call-depth", strconv.Itoa(cfg.Limits.MaxCallDepth),
		},
	}
	return nil
}
