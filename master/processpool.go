package master

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/mesophyll"
	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/store"
	"github.com/templateworker/templateworker/worker"
)

// processPool is the process topology: a Mesophyll server and one
// supervised child process per worker.
type processPool struct {
	*Pool
	workers []*procWorker
	meso    *mesophyll.Server
	http    *http.Server
	ln      *mesophyll.Listener
	addr    string // the URL workers dial

	restarting sync.Mutex
}

// startProcessPool serves Mesophyll on listen and spawns n workers.
// fatal is called once if a worker keeps failing.
func startProcessPool(n int, listen string, cfg ProcessConfig, st store.Store, q *Quarantine, log zerolog.Logger, fatal func(error)) (*processPool, error) {
	pp := &processPool{workers: make([]*procWorker, n)}
	backend := storeBackend{st: newBoundedStore(st, cfg.MaxFrame), events: newWorkerEvents(cfg.events, cfg.MaxFrame), total: n, q: q,
		alone: func(ctx context.Context, slot int) error {
			return pp.workers[slotWorker(slot, n)].waitAlone(ctx, slot, successorStartupWait)
		}}
	pp.meso = mesophyll.NewServer(mesophyll.ServerOptions{
		Workers:           2 * n, // two slots per worker: see slotWorker
		Backend:           backend,
		HeartbeatInterval: cfg.HeartbeatInterval,
		MaxFrame:          cfg.MaxFrame,
		Logger:            log,
		OnConnect:         func(slot int, c *mesophyll.Conn) { pp.workers[slotWorker(slot, n)].onConnect(c) },
		OnDisconnect:      func(slot int, c *mesophyll.Conn, err error) { pp.workers[slotWorker(slot, n)].onDisconnect(c, err) },
		OnHung:            func(slot int) { pp.workers[slotWorker(slot, n)].onHung(slot) },
		OnAck:             func(slot int, ack proto.Ack) { pp.workers[slotWorker(slot, n)].onAck(ack) },
		OnHeartbeat:       func(slot int, hb proto.Heartbeat) { pp.workers[slotWorker(slot, n)].onHeartbeat(slot, hb) },
	})
	ln, err := mesophyll.Listen(listen)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/ws", pp.meso)
	pp.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := pp.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fatal(fmt.Errorf("serve Mesophyll: %w", err))
		}
	}()
	pp.ln = ln
	pp.addr = ln.URL()
	cfg.Args = append([]string{"--mesophyll-url", pp.addr}, cfg.Args...)
	var once sync.Once
	fatalOnce := func(err error) { once.Do(func() { fatal(err) }) }
	for i := range pp.workers {
		pp.workers[i] = newProcWorker(i, n, &cfg, pp.meso, log, fatalOnce)
		pp.workers[i].crashed = func(guilty proto.Id, why string) { q.Strike(guilty, why) }
	}
	for _, w := range pp.workers {
		w.failed = func(id proto.Id, code string) { q.Strike(id, code+" (nowait event)") }
	}
	q.OnQuarantine = func(id proto.Id) {
		// Its queued events wait in the durable queue until the
		// quarantine ends; only events held in the worker's own memory
		// queue (none when the master has its queue) are dropped.
		dropped := pp.workers[id.WorkerID(n)].dropNowait(id)
		log.Warn().Str("tenant", id.String()).Int("dropped_nowait", dropped).Msg("tenant quarantined; its queued events wait for the quarantine to end")
	}
	list := make([]WorkerLike, n)
	for i, w := range pp.workers {
		list[i] = w
		w.start()
	}
	pp.Pool = &Pool{workers: list}
	log.Info().Str("mesophyll", pp.addr).Int("workers", n).Msg("process workers starting")
	return pp, nil
}

// Kill stops every worker, then the Mesophyll server.
func (pp *processPool) Kill(ctx context.Context) error {
	err := pp.Pool.Kill(ctx)
	_ = pp.http.Close()
	_ = pp.ln.Close() // removes a Unix socket
	return err
}

// successorStartupWait bounds how long a planned successor's OnStartup
// waits for the process it replaces to drain (drainOld is bounded by the
// watchdog's limit, a minute without one, and the Shutdown after it).
const successorStartupWait = 5 * time.Minute

// storeTimeout bounds a store call the backend makes on its own.
const storeTimeout = 10 * time.Second

// storeBackend answers the workers' store requests from the master's
// store, bounded (boundedStore) so that every answer fits in a frame.
type storeBackend struct {
	st     boundedStore
	events workerEvents
	total  int
	q      *Quarantine // quarantined tenants get no OnStartup
	// alone waits until the process on a slot is its worker's only one
	// (procWorker.waitAlone); nil: no wait.
	alone func(ctx context.Context, slot int) error
}

func (b storeBackend) Templates(ctx context.Context, id proto.Id) ([]proto.Template, error) {
	return b.st.Templates(ctx, id)
}

// TenantsFor lists the tenants of the worker on Mesophyll slot slot that
// subscribe to event.
func (b storeBackend) TenantsFor(ctx context.Context, slot int, event string) ([]proto.Id, error) {
	workerID := slotWorker(slot, b.total)
	if event == worker.OnStartup && b.alone != nil {
		// A planned successor's OnStartup waits for the process it
		// replaces to finish, beyond the store timeout of this request
		// (the worker waits for the answer as long as its connection
		// lasts); the listing itself gets a store timeout of its own.
		if err := b.alone(context.WithoutCancel(ctx), slot); err != nil {
			return nil, err
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
		defer cancel()
	}
	ids, err := b.st.TenantsWithEvent(ctx, event)
	if err != nil {
		return nil, err
	}
	mine := ids[:0]
	for _, id := range ids {
		// A quarantined tenant's OnStartup is not run: one that crashes
		// its worker would otherwise do it again at every restart.
		if id.WorkerID(b.total) == workerID && b.q.Check(id) == nil {
			mine = append(mine, id)
		}
	}
	return mine, nil
}

func (b storeBackend) KvGet(ctx context.Context, id proto.Id, key string) (json.RawMessage, bool, error) {
	return b.st.KvGet(ctx, id, key)
}

func (b storeBackend) KvSet(ctx context.Context, id proto.Id, key string, v json.RawMessage) error {
	return b.st.KvSet(ctx, id, key, v)
}

func (b storeBackend) KvDelete(ctx context.Context, id proto.Id, key string) error {
	return b.st.KvDelete(ctx, id, key)
}

func (b storeBackend) KvFind(ctx context.Context, id proto.Id, prefix string) ([]proto.KVItem, error) {
	return b.st.KvFind(ctx, id, prefix)
}

// owned refuses a ctx.events call of the worker on Mesophyll slot slot
// about a tenant it does not own: a worker acts only for the tenants
// routed to it.
func (b storeBackend) owned(slot int, id proto.Id) error {
	workerID := slotWorker(slot, b.total)
	if id.WorkerID(b.total) != workerID {
		return proto.Errorf(proto.CodeBadRequest, "tenant %s is not routed to worker %d", id, workerID)
	}
	return nil
}

// ScheduleEvent answers a worker's ctx.events.schedule for a tenant it owns.
func (b storeBackend) ScheduleEvent(ctx context.Context, workerID int, id proto.Id, at time.Time, ev proto.Event) (string, error) {
	if err := b.owned(workerID, id); err != nil {
		return "", err
	}
	return b.events.ScheduleEvent(ctx, id, at, ev)
}

// CancelEvent answers a worker's ctx.events.cancel for a tenant it owns.
func (b storeBackend) CancelEvent(ctx context.Context, workerID int, id proto.Id, eventID string) (bool, error) {
	if err := b.owned(workerID, id); err != nil {
		return false, err
	}
	return b.events.CancelEvent(ctx, id, eventID)
}

// ScheduledEvents answers a worker's ctx.events.list for a tenant it owns.
func (b storeBackend) ScheduledEvents(ctx context.Context, workerID int, id proto.Id) ([]proto.ScheduledEvent, error) {
	if err := b.owned(workerID, id); err != nil {
		return nil, err
	}
	return b.events.ScheduledEvents(ctx, id)
}

// RollingRestart replaces the workers one at a time, so that no call fails
// (used on SIGHUP to pick up a new binary): each worker's new process is
// started and ready before the old one is drained (swap), and the old one
// has exited before the next worker's turn. A worker whose new process
// cannot get ready keeps its old one, and the rolling restart stops with
// that error. Only one rolling restart runs at a time.
func (pp *processPool) RollingRestart(ctx context.Context, perWorker time.Duration) error {
	if !pp.restarting.TryLock() {
		return proto.Errorf(proto.CodeConflict, "a rolling restart is already running")
	}
	defer pp.restarting.Unlock()
	for _, w := range pp.workers {
		wctx, cancel := context.WithTimeout(ctx, perWorker)
		err := w.swap(wctx, ReasonRolling)
		cancel()
		if err != nil {
			return fmt.Errorf("rolling restart of worker %d: %w", w.id, err)
		}
	}
	return nil
}
