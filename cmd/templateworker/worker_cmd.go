package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/templateworker/templateworker/master"
	"github.com/templateworker/templateworker/store"
	"github.com/templateworker/templateworker/worker"
)

// workerProcessFlags are the root flags a master passes when it re-execs
// this binary as a process worker. They are hidden: operators never type
// them.
func workerProcessFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "worker-type", Hidden: true, Usage: "internal: processpoolworker"},
		&cli.IntFlag{Name: "worker-id", Hidden: true, Value: -1},
		&cli.IntFlag{Name: "process-workers", Hidden: true},
		&cli.IntFlag{Name: "mesophyll-slot", Hidden: true, Value: -1, Usage: "internal: the Mesophyll connection slot (--worker-id or --worker-id + --process-workers)"},
		&cli.StringFlag{Name: "mesophyll-url", Hidden: true},
		&cli.StringFlag{Name: "log-format", Hidden: true, Value: "json"},
		&cli.StringFlag{Name: "log-level", Hidden: true, Value: "info"},
		&cli.IntFlag{Name: "worker-queue", Hidden: true, Value: worker.DefaultQueueSize},
		&cli.IntFlag{Name: "worker-concurrency", Hidden: true, Value: worker.DefaultConcurrency},
		&cli.DurationFlag{Name: "sched-slice", Hidden: true, Value: worker.DefaultSchedSlice},
		&cli.Int64Flag{Name: "lua-max-instructions", Hidden: true, Value: worker.DefaultLimits.MaxInstructions},
		&cli.DurationFlag{Name: "lua-timeout", Hidden: true, Value: worker.DefaultLimits.Timeout},
		&cli.Int64Flag{Name: "lua-max-memory", Hidden: true, Value: worker.DefaultLimits.MaxMemory},
		&cli.IntFlag{Name: "lua-max-string", Hidden: true, Value: worker.DefaultLimits.MaxString},
		&cli.IntFlag{Name: "lua-max-call-depth", Hidden: true, Value: worker.DefaultLimits.MaxCallDepth},
		&cli.IntFlag{Name: "max-result", Hidden: true, Value: worker.DefaultMaxResult},
		&cli.Int64Flag{Name: "mesophyll-max-frame", Hidden: true},
		&cli.Int64Flag{Name: "lua-max-worker-memory", Hidden: true, Value: worker.DefaultLimits.MaxWorkerMemory},
		&cli.IntFlag{Name: "vm-cache-max", Hidden: true, Value: worker.DefaultVMCacheMax},
		&cli.DurationFlag{Name: "vm-idle-ttl", Hidden: true, Value: worker.DefaultVMIdleTTL},
		&cli.Int64Flag{Name: "worker-memory-max", Hidden: true},
		&cli.IntFlag{Name: "progress-fd", Hidden: true, Usage: "internal: the descriptor of the progress page shared with the master"},
	}
}

// testWedgeEnv names the environment variable of the watchdog's test hook
// (worker.Options.TestWedgeFunction): only an operator's environment can
// set it, and the master logs a warning when it is set.
const testWedgeEnv = "TEMPLATEWORKER_TEST_WEDGE_FUNCTION"

// runWorkerProcessOrHelp runs a process worker when --worker-type is
// given, and shows the help otherwise.
func runWorkerProcessOrHelp(c *cli.Context) error {
	switch c.String("worker-type") {
	case "":
		if c.Args().Len() > 0 {
			return fmt.Errorf("unknown command %q (see templateworker --help)", c.Args().First())
		}
		return cli.ShowAppHelp(c)
	case "processpoolworker":
	default:
		return fmt.Errorf("unknown --worker-type %q (want processpoolworker)", c.String("worker-type"))
	}
	id, total := c.Int("worker-id"), c.Int("process-workers")
	if total <= 0 || id < 0 || id >= total {
		return fmt.Errorf("bad worker placement: --worker-id %d of --process-workers %d", id, total)
	}
	slot := c.Int("mesophyll-slot")
	if slot >= 0 && slot != id && slot != id+total {
		return fmt.Errorf("bad worker placement: --mesophyll-slot %d of --worker-id %d of --process-workers %d", slot, id, total)
	}
	if c.String("mesophyll-url") == "" {
		return errors.New("missing --mesophyll-url")
	}
	token := os.Getenv(master.TokenEnv)
	if token == "" {
		return fmt.Errorf("missing %s in the environment", master.TokenEnv)
	}
	os.Unsetenv(master.TokenEnv) // nothing the worker runs may read it back
	log, err := newLogger(c.String("log-format"), c.String("log-level"), os.Stderr)
	if err != nil {
		return err
	}
	// No worker_id/pid fields here: the master re-logs every line of this
	// process with its own.
	// The master stops workers with Shutdown over Mesophyll; a SIGTERM sent
	// to the worker directly ends it too.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := worker.SetSchedSlice(c.Duration("sched-slice")); err != nil {
		log.Warn().Err(err).Msg("the worker's threads keep the kernel's scheduler slice")
	}
	defer startWorkerProfile(log)()
	limits := worker.Limits{
		MaxInstructions: c.Int64("lua-max-instructions"),
		Timeout:         c.Duration("lua-timeout"),
		MaxMemory:       c.Int64("lua-max-memory"),
		MaxString:       c.Int("lua-max-string"),
		MaxCallDepth:    c.Int("lua-max-call-depth"),
		MaxResult:       c.Int("max-result"),
		MaxWorkerMemory: c.Int64("lua-max-worker-memory"),
	}
	cache, err := cacheOptions(c.Int("vm-cache-max"), c.Duration("vm-idle-ttl"))
	if err != nil {
		return err
	}
	if c.Int64("worker-memory-max") <= 0 && os.Getenv("GOMEMLIMIT") == "" {
		// No memory budget (nor an operator's GOMEMLIMIT): the soft memory
		// limit follows the VM cache's size.
		worker.TuneMemoryLimit(ctx, worker.CacheMemoryLimit(cache.MaxTenants))
	}
	err = worker.RunProcess(ctx, worker.ProcessConfig{
		ID: id, Total: total, Slot: slot, URL: c.String("mesophyll-url"), Token: token, MaxFrame: c.Int64("mesophyll-max-frame"),
		ProgressFD: c.Int("progress-fd"),
		Options: worker.Options{Limits: limits, QueueSize: c.Int("worker-queue"), Concurrency: c.Int("worker-concurrency"), Logger: log, Cache: cache,
			MemoryMax: c.Int64("worker-memory-max"), TestWedgeFunction: os.Getenv(testWedgeEnv)},
		MemoryLimit: c.Int64("worker-memory-max"),
	})
	if err != nil {
		log.Error().Err(err).Msg("worker process ends")
		return err
	}
	log.Info().Msg("worker process stopped")
	return nil
}

func migrateCommand() *cli.Command {
	return &cli.Command{
		Name:  "migrate",
		Usage: "apply the database schema migrations and print the schema version (a separate deploy step)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "data-dir", Value: "./data", Usage: "data directory (SQLite)", EnvVars: envVars("data-dir")},
			&cli.StringFlag{Name: "database-url", Usage: "PostgreSQL URL; SQLite in --data-dir when empty", EnvVars: envVars("database-url")},
		},
		Action: func(c *cli.Context) error {
			if c.String("database-url") == "" {
				if err := os.MkdirAll(c.String("data-dir"), 0o700); err != nil {
					return fmt.Errorf("create data dir: %w", err)
				}
			}
			ctx, cancel := context.WithTimeout(c.Context, 5*time.Minute)
			defer cancel()
			v, err := store.Migrate(ctx, store.Config{DataDir: c.String("data-dir"), DatabaseURL: c.String("database-url")})
			if err != nil {
				return err
			}
			fmt.Printf("schema version %d\n", v)
			return nil
		},
	}
}
