package worker

import (
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/templateworker/templateworker/proto"
)

// TestProgressSharedPage maps a progress file twice, as the master (read)
// and its worker (write) do, and reads what the writer recorded.
func TestProgressSharedPage(t *testing.T) {
	f, master, err := ProgressFile()
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	fd, err := dupFD(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	worker, err := OpenProgress(fd)
	if err != nil {
		t.Fatal(err)
	}
	defer worker.Close()

	if s := master.Snapshot(); s.Running || s.Calls != 0 {
		t.Fatalf("fresh page: %+v", s)
	}
	id := proto.UserID(99)
	start := time.Now().Add(-2 * time.Second)
	worker.begin(0, id, start)
	s := master.Snapshot()
	if !s.Running || s.Tenant != id || s.Calls != 1 || !s.Start.Equal(time.Unix(0, start.UnixNano())) {
		t.Fatalf("running: %+v", s)
	}
	if own := s.Own(time.Now()); own < 2*time.Second {
		t.Fatalf("own time %v, want ≥ 2s", own)
	}
	worker.storeWait(0, start.Add(time.Second))
	if own := master.Snapshot().Own(time.Now()); own < time.Second || own > 1100*time.Millisecond {
		t.Fatalf("own time while waiting for the store %v, want 1s", own)
	}
	worker.end(0)
	if s := master.Snapshot(); s.Running || s.Calls != 1 || s.Own(time.Now()) != 0 {
		t.Fatalf("ended: %+v", s)
	}
}

// dupFD returns a new descriptor of f that outlives f.
func dupFD(f *os.File) (uintptr, error) {
	fd, err := syscall.Dup(int(f.Fd()))
	return uintptr(fd), err
}

// TestProgressWatchIgnoresWallClockSteps: a record whose start looks an
// hour old (the wall clock stepped) is not an overrun; the own time then
// grows on the watcher's clock, and not while the call waits for the store.
func TestProgressWatchIgnoresWallClockSteps(t *testing.T) {
	pw := ProgressWatch{Period: 100 * time.Millisecond}
	now := time.Now()
	s := ProgressSnapshot{Calls: 7, Running: true, Tenant: proto.GuildID(1), Start: now.Add(-time.Hour)}
	if own := pw.Observe(s, now); own > 200*time.Millisecond {
		t.Fatalf("first sight of a call that looks an hour old: own %v, want ≤ 2 periods", own)
	}
	first := pw.Observe(s, now)
	if own := pw.Observe(s, now.Add(time.Second)); own != first+time.Second {
		t.Fatalf("after 1s: own %v, want %v", own, first+time.Second)
	}
	s.StoreSince = now.Add(time.Second)
	if own := pw.Observe(s, now.Add(3*time.Second)); own != first+time.Second {
		t.Fatalf("while waiting for the store: own %v, want %v", own, first+time.Second)
	}
	s.StoreSince = time.Time{}
	if own := pw.Observe(s, now.Add(4*time.Second)); own != first+2*time.Second {
		t.Fatalf("after the store wait: own %v, want %v", own, first+2*time.Second)
	}
	// A new call starts afresh; no call: zero.
	s.Calls, s.Start = 8, now.Add(4*time.Second)
	if own := pw.Observe(s, now.Add(4*time.Second)); own != 0 {
		t.Fatalf("new call: own %v, want 0", own)
	}
	if own := pw.Observe(ProgressSnapshot{Calls: 8}, now.Add(5*time.Second)); own != 0 {
		t.Fatalf("idle: own %v", own)
	}
}

// TestProgressSlots: each slot records its own call; the master's reading
// lists every running call (the suspects of a crash), and Snapshot
// describes the one that started first, with the worker's total calls.
func TestProgressSlots(t *testing.T) {
	f, master, err := ProgressFile()
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	fd, err := dupFD(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	w, err := OpenProgress(fd)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.setSlots(4)
	a, b := proto.GuildID(1), proto.UserID(2)
	now := time.Now()
	w.begin(2, a, now.Add(-time.Second))
	w.begin(0, b, now)
	if r := master.Running(); len(r) != 2 || r[0].Slot != 0 || r[0].Tenant != b || r[1].Slot != 2 || r[1].Tenant != a {
		t.Fatalf("running %+v, want b in slot 0 and a in slot 2", r)
	}
	if s := master.Snapshot(); !s.Running || s.Tenant != a || s.Slot != 2 || s.Calls != 2 {
		t.Fatalf("snapshot %+v, want a (the oldest) and 2 calls", s)
	}
	if n := len(master.Slots()); n != 4 {
		t.Fatalf("%d slots, want 4", n)
	}
	w.storeWait(2, now)
	if s := master.Running()[1]; s.StoreSince.IsZero() || s.Own(now.Add(time.Hour)) > 1100*time.Millisecond {
		t.Fatalf("store wait of slot 2: %+v", s)
	}
	w.end(2)
	if r := master.Running(); len(r) != 1 || r[0].Tenant != b {
		t.Fatalf("after slot 2 ended: %+v", r)
	}
	w.end(0)
	if r := master.Running(); r != nil || master.Snapshot().Running || master.Slots()[0].Calls != 1 {
		t.Fatalf("all ended: %+v %+v", r, master.Snapshot())
	}
}
