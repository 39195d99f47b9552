package worker

import (
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/templateworker/templateworker/proto"
)

// Progress is the record of the call a worker is running: which tenant,
// since when, and how many calls it has started. The worker goroutine
// writes it at the start and end of every call (a few atomic stores); the
// supervisor reads it to tell a worker that makes progress from one whose
// call never ends — a VM whose count hook never fires cannot fake it —
// and, after a crash, to blame the tenant that was running and nobody
// else.
//
// In a process worker the record lives in a page of memory shared with the
// master (ProgressFile, OpenProgress), so it survives the process: the
// master reads what the worker was doing when it died. In the thread
// topology it is ordinary memory (NewProgress).
type Progress struct {
	words []atomic.Uint64
}

// Word offsets of the record. gen is a sequence lock: odd while the writer
// is between the two halves of an update.
const (
	pwGen = iota
	pwCalls
	pwKind // 0: idle; else the tenant's proto.Kind + 1
	pwTenant
	pwStart      // unix nanoseconds the running call started
	pwStoreSince // unix nanoseconds the running call began waiting for the store; 0 when not
	progressWords
)

// ProgressSize is the size of a progress file.
const ProgressSize = 4096

// NewProgress returns a record in ordinary memory.
func NewProgress() *Progress {
	return &Progress{words: make([]atomic.Uint64, progressWords)}
}

// ProgressFile creates the shared progress page of one worker spawn: an
// unlinked temporary file the master maps read-only (the returned
// Progress) and hands to the worker as an inherited descriptor. Close the
// file once the worker is started; unmap the Progress with Close.
func ProgressFile() (*os.File, *Progress, error) {
	f, err := os.CreateTemp("", "tw-progress-")
	if err != nil {
		return nil, nil, fmt.Errorf("create progress file: %w", err)
	}
	_ = os.Remove(f.Name())
	if err := f.Truncate(ProgressSize); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("size progress file: %w", err)
	}
	p, err := mapProgress(f, syscall.PROT_READ)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, p, nil
}

// OpenProgress maps the progress page a worker inherited as descriptor fd
// for writing.
func OpenProgress(fd uintptr) (*Progress, error) {
	f := os.NewFile(fd, "progress")
	if f == nil {
		return nil, fmt.Errorf("progress descriptor %d is not open", fd)
	}
	defer f.Close() // the mapping outlives the descriptor
	return mapProgress(f, syscall.PROT_READ|syscall.PROT_WRITE)
}

func mapProgress(f *os.File, prot int) (*Progress, error) {
	b, err := syscall.Mmap(int(f.Fd()), 0, ProgressSize, prot, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("map progress file: %w", err)
	}
	words := unsafe.Slice((*atomic.Uint64)(unsafe.Pointer(&b[0])), progressWords)
	return &Progress{words: words}, nil
}

// Close unmaps a shared record; a record in ordinary memory needs none.
func (p *Progress) Close() error {
	if p == nil || len(p.words) == 0 {
		return nil
	}
	b := unsafe.Slice((*byte)(unsafe.Pointer(&p.words[0])), ProgressSize)
	p.words = nil
	return syscall.Munmap(b)
}

// begin records that a call of tenant id starts now.
func (p *Progress) begin(id proto.Id, now time.Time) {
	w := p.words
	g := w[pwGen].Load()
	w[pwGen].Store(g + 1)
	w[pwCalls].Add(1)
	w[pwKind].Store(uint64(id.Kind) + 1)
	w[pwTenant].Store(id.ID)
	w[pwStart].Store(uint64(now.UnixNano()))
	w[pwStoreSince].Store(0)
	w[pwGen].Store(g + 2)
}

// end records that the running call has ended. Start and StoreSince stay
// as they were: they mean nothing while Kind is 0, and begin rewrites them.
func (p *Progress) end() {
	w := p.words
	g := w[pwGen].Load()
	w[pwGen].Store(g + 1)
	w[pwKind].Store(0)
	w[pwGen].Store(g + 2)
}

// storeWait records that the running call waits for the store from now
// (since non-zero) or no longer (zero). Single word: no lock needed.
func (p *Progress) storeWait(since time.Time) {
	v := uint64(0)
	if !since.IsZero() {
		v = uint64(since.UnixNano())
	}
	p.words[pwStoreSince].Store(v)
}

// ProgressSnapshot is one consistent reading of a Progress.
type ProgressSnapshot struct {
	// Calls is the number of calls the worker has started.
	Calls uint64
	// Running says whether a call is running; Tenant and Start describe it.
	Running bool
	Tenant  proto.Id
	Start   time.Time
	// StoreSince is when the running call began waiting for the store
	// (zero when it is not waiting): that wait is the store's time, not
	// the tenant's.
	StoreSince time.Time
}

// Own returns how long the running call has been executing on its own
// account at now: since its start, up to now or to the start of the store
// wait it is in.
func (s ProgressSnapshot) Own(now time.Time) time.Duration {
	if !s.Running {
		return 0
	}
	end := now
	if !s.StoreSince.IsZero() && s.StoreSince.Before(now) {
		end = s.StoreSince
	}
	return end.Sub(s.Start)
}

// Snapshot reads the record consistently (it retries while the writer is
// mid-update; a writer that died mid-update leaves what it wrote).
func (p *Progress) Snapshot() ProgressSnapshot {
	w := p.words
	var s ProgressSnapshot
	for try := 0; ; try++ {
		g := w[pwGen].Load()
		kind, id := w[pwKind].Load(), w[pwTenant].Load()
		start, store, calls := w[pwStart].Load(), w[pwStoreSince].Load(), w[pwCalls].Load()
		if (g%2 == 0 && w[pwGen].Load() == g) || try >= 1000 {
			s = ProgressSnapshot{Calls: calls, Running: kind != 0}
			if s.Running {
				s.Tenant = proto.Id{Kind: proto.Kind(kind - 1), ID: id}
				s.Start = time.Unix(0, int64(start))
				if store != 0 {
					s.StoreSince = time.Unix(0, int64(store))
				}
			}
			return s
		}
	}
}

// ProgressWatch measures the running call's own time from successive
// snapshots on the watcher's monotonic clock, so that a step of the wall
// clock (in which the record's times are written, to be comparable
// across processes) neither fakes an overrun nor hides one: only the
// time the call had run when the watcher first saw it comes from the
// record, and that is at most two periods of the watcher.
type ProgressWatch struct {
	// Period is how often the watcher takes a snapshot.
	Period time.Duration

	calls   uint64
	running bool
	own     time.Duration
	last    time.Time
}

// Observe takes snapshot s, read at now (time.Now()), and returns how long
// the running call has executed on its own account (0 when none runs).
// Time the call spends waiting for the store is not counted.
func (pw *ProgressWatch) Observe(s ProgressSnapshot, now time.Time) time.Duration {
	if !s.Running {
		pw.running = false
		return 0
	}
	if !pw.running || s.Calls != pw.calls {
		pw.running, pw.calls, pw.last = true, s.Calls, now
		pw.own = min(max(s.Own(now), 0), 2*pw.Period)
		return pw.own
	}
	if s.StoreSince.IsZero() {
		pw.own += now.Sub(pw.last)
	}
	pw.last = now
	return pw.own
}
