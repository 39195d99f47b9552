package worker

import (
	"fmt"
	"sync"

	"github.com/templateworker/templateworker/proto"
)

// Backlog accounts the bytes of the nowait events held for one worker
// (--worker-queue-bytes), in total and per tenant: one tenant may hold at
// most a quarter of the worker's bound, so a tenant flooding a wedged
// worker gets backlog_full while its neighbours' events are still
// accepted. The zero Backlog is ready to use; it is safe for concurrent
// use.
type Backlog struct {
	mu    sync.Mutex
	total int64
	by    map[proto.Id]int64
}

// TenantShare is the part of a worker's bound one tenant may hold.
const TenantShare = 4

// Hold counts n bytes of an event of tenant id against max bytes for the
// worker (0: no bound), or refuses it with backlog_full.
func (b *Backlog) Hold(workerID int, id proto.Id, n, max int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if max > 0 {
		share := max / TenantShare
		switch {
		case b.total+n > max:
			return backlogFull(fmt.Sprintf("worker %d holds %d bytes of nowait events, the most it may hold is %d (--worker-queue-bytes)",
				workerID, b.total, max))
		case b.by[id]+n > share:
			return backlogFull(fmt.Sprintf("tenant %s has %d bytes of nowait events held for worker %d, the most one tenant may hold is %d (a quarter of --worker-queue-bytes)",
				id, b.by[id], workerID, share))
		}
	}
	if b.by == nil {
		b.by = make(map[proto.Id]int64)
	}
	b.total += n
	b.by[id] += n
	return nil
}

// Release gives back n bytes held for tenant id.
func (b *Backlog) Release(id proto.Id, n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.total -= n
	if b.by[id] -= n; b.by[id] <= 0 {
		delete(b.by, id)
	}
}

// Bytes returns the bytes held.
func (b *Backlog) Bytes() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.total
}

func backlogFull(msg string) *proto.Error {
	return &proto.Error{Code: proto.CodeBacklogFull, RetryAfter: 1, Message: msg + "; try again later"}
}

// EventSize is what holding ev costs, in bytes: its data and strings and
// a fixed share for the rest.
func EventSize(ev proto.Event) int64 {
	n := int64(len(ev.Data) + len(ev.Name) + 128)
	if ev.Author != nil {
		n += int64(len(*ev.Author))
	}
	return n
}
