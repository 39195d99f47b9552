package queue

import (
	"context"
	"runtime"
	"time"

	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/store"
)

// maxBatch bounds the writes of one group commit.
const maxBatch = 2048

// gatherMax bounds how long the writer keeps yielding to gather more
// writes into a commit.
const gatherMax = 2 * time.Millisecond

// commitTimeout bounds one group commit.
const commitTimeout = 10 * time.Second

// doneDelay and maxDeferred bound how long and how many deletions of
// delivered events wait for a commit of something else.
const (
	doneDelay   = 5 * time.Millisecond
	maxDeferred = 512
)

// write is one request to the writer; at most one of add, failed, dead,
// done is set (none: a flush, which makes the deferred deletions commit).
type write struct {
	add    *store.EventRecord
	failed *store.EventFailure
	dead   *store.EventFailure
	// done are the seqs of delivered events of one tenant (those of one
	// window), deleted together.
	done []int64
	// t is the tenant of a done write, whose delivering marks are removed
	// once the deletion is committed.
	t      *tenantState
	tenant proto.Id
	size   int64 // eventBytes of add

	seq   int64 // of add, once committed
	err   error
	reply chan struct{} // closed once committed (or failed)
}

// submit hands w to the writer and waits for its commit. It does not give
// up when ctx ends: the commit is bounded by commitTimeout, and a caller
// must know whether its write was committed.
func (q *Queue) submit(ctx context.Context, w *write) (int64, error) {
	w.reply = make(chan struct{})
	q.submitMu.RLock()
	if q.writerClosed {
		q.submitMu.RUnlock()
		return 0, proto.Errorf(proto.CodeShuttingDown, "the master is shutting down")
	}
	q.writes <- w
	q.submitMu.RUnlock()
	<-w.reply
	return w.seq, w.err
}

// submitAsync hands w to the writer without waiting; w.reply closes once
// it is committed.
func (q *Queue) submitAsync(w *write) bool {
	w.reply = make(chan struct{})
	q.submitMu.RLock()
	defer q.submitMu.RUnlock()
	if q.writerClosed {
		return false
	}
	q.writes <- w
	return true
}

// writer commits the writes that arrived while its previous commit ran, in
// one transaction each time (group commit), until the queue closes.
//
// Deletions of delivered events alone do not make a commit: they wait, up
// to doneDelay or maxDeferred of them, for the next commit of anything
// else (an accepted event, a failure, a flush), so that under load they
// cost no commit of their own. A crash meanwhile runs them again (at
// least once).
func (q *Queue) writer() {
	defer close(q.writerDone)
	batch := make([]*write, 0, maxBatch)
	var deferred []*write
	deferredSeqs := 0 // the seqs of deferred
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	armed := false
	drain := func() {
		for len(batch) < maxBatch {
			select {
			case w := <-q.writes:
				batch = append(batch, w)
			default:
				return
			}
		}
	}
	for {
		batch = batch[:0]
		select {
		case w := <-q.writes:
			batch = append(batch, w)
		case <-timer.C:
			armed = false
		case <-q.writerStop:
			// Close holds submitMu: nothing more arrives. Commit the rest.
			for {
				drain()
				batch = append(batch, deferred...)
				deferred, deferredSeqs = nil, 0
				if len(batch) == 0 {
					return
				}
				q.commit(batch)
				batch = batch[:0]
			}
		}
		drain()
		if len(batch) > 0 {
			// Let the callers that are about to submit do so, and join
			// this commit: yield as long as each yield brought more (on
			// an idle machine the first brings nothing), for at most
			// gatherMax.
			first := time.Now()
			for len(batch) < maxBatch {
				n := len(batch)
				runtime.Gosched()
				drain()
				if len(batch) == n || time.Since(first) > gatherMax {
					break
				}
			}
		}
		onlyDone := true
		seqs := 0
		for _, w := range batch {
			if len(w.done) == 0 {
				onlyDone = false
				break
			}
			seqs += len(w.done)
		}
		if len(batch) > 0 && onlyDone && deferredSeqs+seqs < maxDeferred {
			deferred = append(deferred, batch...)
			deferredSeqs += seqs
			if !armed {
				timer.Reset(doneDelay)
				armed = true
			}
			continue
		}
		batch = append(batch, deferred...)
		clear(deferred)
		deferred, deferredSeqs = deferred[:0], 0
		if armed && !timer.Stop() {
			select { // a timer of an older Go may hold a stale tick
			case <-timer.C:
			default:
			}
		}
		armed = false
		if len(batch) > 0 {
			q.commit(batch)
		}
		clear(batch) // let the writes go
	}
}

// commit writes batch in one transaction and answers its writes.
// Only the writer calls it: the batch's slices (q.wb) are reused.
func (q *Queue) commit(batch []*write) {
	b := &q.wb
	*b = store.EventBatch{Add: b.Add[:0], Failed: b.Failed[:0], Dead: b.Dead[:0], Done: b.Done[:0],
		DeadLetterKeep: q.cfg.DeadLetterKeep, DeadLetterKeepBytes: q.cfg.BacklogTenantBytes}
	for _, w := range batch {
		switch {
		case w.add != nil:
			b.Add = append(b.Add, *w.add)
		case w.failed != nil:
			b.Failed = append(b.Failed, *w.failed)
		case w.dead != nil:
			b.Dead = append(b.Dead, *w.dead)
		case len(w.done) > 0:
			b.Done = append(b.Done, w.done...)
		}
	}
	defer func() {
		// The reused slices keep no event alive.
		clear(b.Add)
		clear(b.Failed)
		clear(b.Dead)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	seqs, err := q.cfg.Store.CommitEvents(ctx, *b)
	cancel()
	if err != nil {
		if proto.CodeOf(err) != proto.CodeStoreUnavailable {
			q.log.Error().Err(err).Int("writes", len(batch)).Msg("event queue: commit failed")
			err = &proto.Error{Code: proto.CodeStoreUnavailable, RetryAfter: 1, Message: "the store could not commit the event: " + proto.AsError(err).Message}
		} else {
			q.log.Warn().Err(err).Int("writes", len(batch)).Msg("event queue: store unavailable")
		}
	}
	if err == nil && len(b.Add) > 0 {
		q.mu.Lock()
		i := 0
		for _, w := range batch {
			if w.add != nil {
				w.seq = seqs[i]
				r := *w.add
				r.Seq = seqs[i]
				q.acceptedLocked(r, w.size)
				i++
			}
		}
		q.mu.Unlock()
	}
	q.mu.Lock()
	for _, w := range batch {
		if len(w.done) > 0 && w.t != nil {
			for _, seq := range w.done {
				delete(w.t.delivering, seq)
			}
			if q.tenants[w.tenant] == w.t {
				q.dropIfIdleLocked(w.tenant, w.t)
			}
		}
	}
	q.mu.Unlock()
	for _, w := range batch {
		w.err = err
		close(w.reply)
	}
	q.commits.Add(1)
}
