package main

import (
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/templateworker/templateworker/master"
	"github.com/templateworker/templateworker/queue"
)

// eventQueueFlags are the master's flags of the durable event queue.
func eventQueueFlags() []cli.Flag {
	return []cli.Flag{
		&cli.IntFlag{Name: "event-max-attempts", Value: queue.DefaultMaxAttempts, Usage: "failed deliveries (fatal limit, worker death) of a queued event before it moves to the dead-letter table", EnvVars: envVars("event-max-attempts")},
		&cli.DurationFlag{Name: "event-retry-backoff", Value: queue.DefaultRetryBackoff, Usage: "wait after a queued event's first failed delivery, doubled after each further one", EnvVars: envVars("event-retry-backoff")},
		&cli.DurationFlag{Name: "event-retry-backoff-max", Value: queue.DefaultRetryBackoffMax, Usage: "longest wait between two deliveries of a failing queued event", EnvVars: envVars("event-retry-backoff-max")},
		&cli.IntFlag{Name: "event-backlog-tenant", Value: queue.DefaultBacklogTenant, Usage: "pending queued events one tenant may have (503 backlog_full past it)", EnvVars: envVars("event-backlog-tenant")},
		&cli.IntFlag{Name: "event-backlog-max", Value: queue.DefaultBacklogMax, Usage: "pending queued events of all tenants together (503 backlog_full past it)", EnvVars: envVars("event-backlog-max")},
		&cli.IntFlag{Name: "event-dead-letters-tenant", Value: queue.DefaultDeadLetterKeep, Usage: "dead letters one tenant keeps; when one more arrives its oldest are deleted", EnvVars: envVars("event-dead-letters-tenant")},
		&cli.IntFlag{Name: "event-concurrency", Usage: "queued events delivered at once, each of another tenant (default: 32 per worker)", EnvVars: envVars("event-concurrency")},
		&cli.StringFlag{Name: "sqlite-synchronous", Value: "normal", Usage: "SQLite's synchronous setting: normal (a commit survives a crash of the master; a power loss may lose the last ones) or full (an fsync per commit: also survives a power loss)", EnvVars: envVars("sqlite-synchronous")},
	}
}

// eventsConfig reads eventQueueFlags into cfg.
func eventsConfig(c *cli.Context, cfg *master.Config) error {
	cfg.Events = master.EventsConfig{
		MaxAttempts:       c.Int("event-max-attempts"),
		RetryBackoff:      c.Duration("event-retry-backoff"),
		RetryBackoffMax:   c.Duration("event-retry-backoff-max"),
		BacklogTenant:     c.Int("event-backlog-tenant"),
		BacklogMax:        c.Int("event-backlog-max"),
		Concurrency:       c.Int("event-concurrency"),
		DeadLettersTenant: c.Int("event-dead-letters-tenant"),
	}
	e := cfg.Events
	switch {
	case e.MaxAttempts < 1:
		return fmt.Errorf("--event-max-attempts must be at least 1, got %d", e.MaxAttempts)
	case e.RetryBackoff <= 0 || e.RetryBackoffMax < e.RetryBackoff:
		return fmt.Errorf("--event-retry-backoff must be positive and at most --event-retry-backoff-max, got %s and %s", e.RetryBackoff, e.RetryBackoffMax)
	case e.RetryBackoffMax > 24*time.Hour:
		return fmt.Errorf("--event-retry-backoff-max must be at most 24h, got %s", e.RetryBackoffMax)
	case e.BacklogTenant < 1 || e.BacklogMax < 1:
		return fmt.Errorf("--event-backlog-tenant and --event-backlog-max must be positive, got %d and %d", e.BacklogTenant, e.BacklogMax)
	case e.DeadLettersTenant < 1:
		return fmt.Errorf("--event-dead-letters-tenant must be at least 1, got %d", e.DeadLettersTenant)
	case e.Concurrency < 0:
		return fmt.Errorf("--event-concurrency must not be negative, got %d", e.Concurrency)
	}
	switch s := c.String("sqlite-synchronous"); s {
	case "normal", "full":
		cfg.SQLiteSynchronous = s
	default:
		return fmt.Errorf("--sqlite-synchronous must be normal or full, got %q", s)
	}
	return nil
}
