package master

import (
	"context"
	"time"

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
	return WorkerStatus{
		ID:            w.ID(),
		State:         state,
		Tenants:       w.Loaded(),
		UptimeSeconds: time.Since(w.started).Seconds(),
		InFlight:      w.InFlight(),
		Queued:        w.Queued(),
		QueuedBytes:   w.QueuedBytes(),
		Cache:         &cs,
		HeapBytes:     heap,
		RSSBytes:      rss,
	}
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
