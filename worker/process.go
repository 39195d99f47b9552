package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/templateworker/templateworker/mesophyll"
	"github.com/templateworker/templateworker/proto"
)

// ProcessConfig configures a worker process (--worker-type
// processpoolworker): it serves one worker over Mesophyll and reaches the
// store only through the master.
type ProcessConfig struct {
	// ID and Total place the worker in the master's pool.
	ID, Total int
	// Slot is the master's Mesophyll connection slot the process dials
	// with (X-Worker-Id): ID or ID+Total, so that a planned replacement
	// connects while the process it replaces still is. Zero or negative: ID.
	Slot int
	// URL is the master's Mesophyll endpoint, e.g. ws://127.0.0.1:4100/ws.
	URL string
	// Token authenticates the worker; it comes from the environment.
	Token string
	// Options configure the worker itself (its Store is set here).
	Options Options
	// MemoryLimit, when positive, is the soft Go memory limit of the
	// process (debug.SetMemoryLimit).
	MemoryLimit int64
	// MaxFrame is the largest Mesophyll frame the worker accepts
	// (--mesophyll-max-frame, as the master's); default 4 MiB.
	MaxFrame int64
	// ProgressFD, when positive, is the inherited descriptor of the page
	// the worker shares with its master to record the call it runs (see
	// Progress): the master's watchdog reads it.
	ProgressFD int
}

// RunProcess connects to the master and serves until the master sends
// Shutdown (nil) or the connection is lost (an error: the master restarts
// the process).
func RunProcess(ctx context.Context, cfg ProcessConfig) error {
	if cfg.MemoryLimit > 0 {
		debug.SetMemoryLimit(cfg.MemoryLimit)
	}
	slot := cfg.Slot
	if slot <= 0 {
		slot = cfg.ID
	}
	c, err := mesophyll.Dial(ctx, cfg.URL, slot, cfg.Token, mesophyll.ClientOptions{Logger: cfg.Options.Logger, MaxFrame: cfg.MaxFrame})
	if err != nil {
		return fmt.Errorf("connect to master: %w", err)
	}
	opts := cfg.Options
	opts.Store = storeProxy{c}
	if opts.Limits == (Limits{}) {
		opts.Limits = DefaultLimits
	}
	// A result must fit in a frame to the master: the master checks
	// --max-result against it, and this holds for any master.
	if budget := proto.ValueBudget(int64(c.MaxFrame())); opts.Limits.MaxResult <= 0 || opts.Limits.MaxResult > budget {
		opts.Limits.MaxResult = budget
	}
	opts.Limits.StoreAnswer = proto.ValueBudget(int64(c.MaxFrame()))
	if cfg.ProgressFD > 0 {
		p, err := OpenProgress(uintptr(cfg.ProgressFD))
		if err != nil {
			c.Close()
			return fmt.Errorf("worker %d: %w", cfg.ID, err)
		}
		opts.Progress = p
	}
	w, err := New(cfg.ID, cfg.Total, opts)
	if err != nil {
		return fmt.Errorf("start worker %d: %w", cfg.ID, err)
	}
	serveErr := c.Serve(ctx, processHandler{w})
	_ = w.Kill(context.Background())
	return serveErr
}

// processHandler adapts a Thread to the Mesophyll client's Handler.
type processHandler struct{ *Thread }

// Tenants reports the loaded VMs for heartbeats.
func (h processHandler) Tenants() int { return h.Loaded() }

// Heartbeat reports the worker's figures: loaded VMs, cache counters, Go
// heap and RSS (mesophyll.HeartbeatReporter).
func (h processHandler) Heartbeat() proto.Heartbeat {
	cs := h.CacheStats()
	heap, rss := ProcessMemory()
	return proto.Heartbeat{Tenants: h.Loaded(), Cache: &cs, HeapBytes: heap, RSSBytes: rss}
}

// storeProxy adapts the Mesophyll client to the worker's Store.
type storeProxy struct{ c *mesophyll.Client }

func (s storeProxy) Templates(ctx context.Context, id proto.Id) ([]proto.Template, error) {
	return s.c.Templates(ctx, id)
}

func (s storeProxy) TenantsWithEvent(ctx context.Context, event string) ([]proto.Id, error) {
	return s.c.TenantsFor(ctx, event)
}

func (s storeProxy) KvGet(ctx context.Context, id proto.Id, key string) (json.RawMessage, bool, error) {
	return s.c.KvGet(ctx, id, key)
}

func (s storeProxy) KvSet(ctx context.Context, id proto.Id, key string, v json.RawMessage) error {
	return s.c.KvSet(ctx, id, key, v)
}

func (s storeProxy) KvDelete(ctx context.Context, id proto.Id, key string) error {
	return s.c.KvDelete(ctx, id, key)
}

func (s storeProxy) KvFind(ctx context.Context, id proto.Id, prefix string) ([]proto.KVItem, error) {
	return s.c.KvFind(ctx, id, prefix)
}

func (s storeProxy) ScheduleEvent(ctx context.Context, id proto.Id, at time.Time, ev proto.Event) (string, error) {
	return s.c.ScheduleEvent(ctx, id, at, ev)
}

func (s storeProxy) CancelEvent(ctx context.Context, id proto.Id, eventID string) (bool, error) {
	return s.c.CancelEvent(ctx, id, eventID)
}

func (s storeProxy) ScheduledEvents(ctx context.Context, id proto.Id) ([]proto.ScheduledEvent, error) {
	return s.c.ScheduledEvents(ctx, id)
}
