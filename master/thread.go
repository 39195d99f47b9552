package master

import (
	"context"
	"time"

	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/worker"
)

// threadWorker adapts a worker.Thread to the pool's status view.
type threadWorker struct {
	*worker.Thread
	started time.Time
}

// Status describes the thread worker.
func (w threadWorker) Status() WorkerStatus {
	state := "running"
	select {
	case <-w.Done():
		state = "stopped"
	default:
	}
	cs := w.CacheStats()
	heap, rss := worker.ProcessMemory()
	n := w.Abandoned()
	return WorkerStatus{
		ID:            w.ID(),
		State:         state,
		Tenants:       w.Loaded(),
		UptimeSeconds: time.Since(w.started).Seconds(),
		Restarts:      n,
		InFlight:      w.InFlight(),
		Queued:        w.Queued(),
		QueuedBytes:   w.QueuedBytes(),
		Cache:         &cs,
		HeapBytes:     heap,
		RSSBytes:      rss,
		Running:       runningCall(w.Progress()),
		RunningCalls:  runningCalls(w.Running()),
		Concurrency:   w.Concurrency(),

		restartReasons: map[string]int{"watchdog": n},
	}
}

// quarantinedOut hides quarantined tenants from the OnStartup listing of
// thread workers, as storeBackend does for process workers.
type quarantinedOut struct {
	worker.Store
	q *Quarantine
}

func (s quarantinedOut) TenantsWithEvent(ctx context.Context, event string) ([]proto.Id, error) {
	ids, err := s.Store.TenantsWithEvent(ctx, event)
	if err != nil {
		return nil, err
	}
	kept := ids[:0]
	for _, id := range ids {
		if s.q.Check(id) == nil {
			kept = append(kept, id)
		}
	}
	return kept, nil
}

// newThreadPool starts n thread workers.
func newThreadPool(n int, opts worker.Options) (*Pool, error) {
	return NewPool(context.Background(), n, func(id, total int) (threadWorker, error) {
		t, err := worker.New(id, total, opts)
		if err != nil {
			return threadWorker{}, err
		}
		return threadWorker{Thread: t, started: time.Now()}, nil
	})
}
