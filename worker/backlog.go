package worker

import (
	"fmt"
	"sync"

	"github.com/templateworker/templateworker/proto"
)

// Backlog accounts the nowait events held for one worker, in total and per
// tenant: one tenant may hold at most a quarter of the worker's bytes
// (--worker-queue-bytes) and a quarter of its count (--worker-queue), so
// a tenant flooding a wedged worker gets backlog_full while its
// neighbours' events are still accepted. The zero Backlog is ready to
// use; it is safe for concurrent use.
type Backlog struct {
	mu    sync.Mutex
	total int64
	by    map[proto.Id]held
}

// held is what one tenant holds.
type held struct {
	bytes  int64
	events int
}

// TenantShare is the part of a worker's bound one tenant may hold.
const TenantShare = 4

// Hold counts an event of n bytes of tenant id against maxBytes for the
// worker and, per tenant, a quarter of it and of maxEvents (0: no bound),
// or refuses it with backlog_full.
func (b *Backlog) Hold(workerID int, id proto.Id, n, maxBytes int64, maxEvents int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	h := b.by[id]
	switch {
	case maxBytes > 0 && b.total+n > maxBytes:
		return backlogFull(fmt.Sprintf("worker %d holds %d bytes of nowait events, the most it may hold is %d (--worker-queue-bytes)",
			workerID, b.total, maxBytes))
	case maxBytes > 0 && h.bytes+n > maxBytes/TenantShare:
		return backlogFull(fmt.Sprintf("tenant %s has %d bytes of nowait events held for worker %d, the most one tenant may hold is %d (a quarter of --worker-queue-bytes)",
			id, h.bytes, workerID, maxBytes/TenantShare))
	case maxEvents > 0 && h.events+1 > max(maxEvents/TenantShare, 1):
		return backlogFull(fmt.Sprintf("tenant %s has %d nowait events held for worker %d, the most one tenant may hold is %d (a quarter of --worker-queue)",
			id, h.events, workerID, max(maxEvents/TenantShare, 1)))
	}
	if b.by == nil {
		b.by = make(map[proto.Id]held)
	}
	b.total += n
	b.by[id] = held{bytes: h.bytes + n, events: h.events + 1}
	return nil
}

// Release gives back an event of n bytes held for tenant id.
func (b *Backlog) Release(id proto.Id, n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.total -= n
	h := b.by[id]
	h.bytes -= n
	h.events--
	if h.events <= 0 {
		delete(b.by, id)
	} else {
		b.by[id] = h
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
