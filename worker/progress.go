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

// Progress is the record of the calls a worker is running: for each of
// its slots (--worker-concurrency), which tenant, since when, and how many
// calls the slot has started. The goroutine that runs a call writes its
// slot at the start and end of the call (a few atomic stores); the
// supervisor reads it to tell a worker that makes progress from one whose
// call never ends — a VM whose count hook never fires cannot fake it —
// and, after a crash, to blame the tenants that were running and nobody
// else.
//
// In a process worker the record lives in a page of memory shared with the
// master (ProgressFile, OpenProgress), so it survives the process: the
// master reads what the worker was doing when it died. In the thread
// topology it is ordinary memory (NewProgress).
type Progress struct {
	words []atomic.Uint64
}

// Word offsets of the record: a header, then MaxConcurrency slots of
// slotWords each. A slot's gen is a sequence lock: odd while its writer is
// between the two halves of an update.
const (
	pwCalls = iota // calls started, all slots together
	pwSlots        // slots the worker uses (its concurrency)
	headerWords
)

// Word offsets within a slot.
const (
	psGen = iota
	psCalls
	psKind // 0: idle; else the tenant's proto.Kind + 1
	psTenant
	psStart      // unix nanoseconds the running call started
	psStoreSince // unix nanoseconds the running call began waiting for the store; 0 when not
	slotWords
)

// MaxConcurrency is the most calls one worker may run at once
// (--worker-concurrency): the slots of its progress record.
const MaxConcurrency = 64

const progressWords = headerWords + MaxConcurrency*slotWords

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

// setSlots records how many slots the worker uses.
func (p *Progress) setSlots(n int) { p.words[pwSlots].Store(uint64(n)) }

// slot returns the words of slot i.
func (p *Progress) slot(i int) []atomic.Uint64 {
	o := headerWords + i*slotWords
	return p.words[o : o+slotWords : o+slotWords]
}

// begin records that a call of tenant id starts now in slot i.
func (p *Progress) begin(i int, id proto.Id, now time.Time) {
	w := p.slot(i)
	g := w[psGen].Load()
	w[psGen].Store(g + 1)
	w[psCalls].Add(1)
	w[psKind].Store(uint64(id.Kind) + 1)
	w[psTenant].Store(id.ID)
	w[psStart].Store(uint64(now.UnixNano()))
	w[psStoreSince].Store(0)
	w[psGen].Store(g + 2)
	p.words[pwCalls].Add(1)
}

// end records that the call running in slot i has ended. Start and
// StoreSince stay as they were: they mean nothing while Kind is 0, and
// begin rewrites them.
func (p *Progress) end(i int) {
	w := p.slot(i)
	g := w[psGen].Load()
	w[psGen].Store(g + 1)
	w[psKind].Store(0)
	w[psGen].Store(g + 2)
}

// storeWait records that the call running in slot i waits for the store
// from now (since non-zero) or no longer (zero). Single word: no lock
// needed.
func (p *Progress) storeWait(i int, since time.Time) {
	v := uint64(0)
	if !since.IsZero() {
		v = uint64(since.UnixNano())
	}
	p.slot(i)[psStoreSince].Store(v)
}

// ProgressSnapshot is one consistent reading of a slot of a Progress, or
// (Snapshot) of the whole record.
type ProgressSnapshot struct {
	// Slot is the slot read (Snapshot: the slot of the call described).
	Slot int
	// Calls is the number of calls the slot has started (Snapshot: the
	// worker, all slots together).
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

// Snapshot reads the record: the calls the worker has started and, of
// the calls running, the one that started first (Running false when none
// runs). Running lists them all.
func (p *Progress) Snapshot() ProgressSnapshot {
	s := ProgressSnapshot{Calls: p.words[pwCalls].Load()}
	for i := range p.slots() {
		if r := p.readSlot(i); r.Running && (!s.Running || r.Start.Before(s.Start)) {
			s.Running, s.Slot, s.Tenant, s.Start, s.StoreSince = true, i, r.Tenant, r.Start, r.StoreSince
		}
	}
	return s
}

// Running returns the calls running now, one per busy slot, in slot
// order; nil when none runs.
func (p *Progress) Running() []ProgressSnapshot {
	var out []ProgressSnapshot
	for i := range p.slots() {
		if r := p.readSlot(i); r.Running {
			out = append(out, r)
		}
	}
	return out
}

// Slots returns every slot of the record, running or not (for watchers
// that follow each slot: see ProgressWatch).
func (p *Progress) Slots() []ProgressSnapshot {
	out := make([]ProgressSnapshot, p.slots())
	for i := range out {
		out[i] = p.readSlot(i)
	}
	return out
}

// slots returns the number of slots in use (at least 1, at most
// MaxConcurrency, whatever a dying writer left).
func (p *Progress) slots() int {
	return int(min(max(p.words[pwSlots].Load(), 1), MaxConcurrency))
}

// readSlot reads slot i consistently (it retries while the writer is
// mid-update; a writer that died mid-update leaves what it wrote).
func (p *Progress) readSlot(i int) ProgressSnapshot {
	w := p.slot(i)
	for try := 0; ; try++ {
		g := w[psGen].Load()
		kind, id := w[psKind].Load(), w[psTenant].Load()
		start, store, calls := w[psStart].Load(), w[psStoreSince].Load(), w[psCalls].Load()
		if (g%2 == 0 && w[psGen].Load() == g) || try >= 1000 {
			s := ProgressSnapshot{Slot: i, Calls: calls, Running: kind != 0}
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

// ProgressWatch measures the own time of the call running in one slot
// from successive snapshots of that slot on the watcher's monotonic clock, so that a step of the wall
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
