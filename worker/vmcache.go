package worker

import (
	"sync/atomic"
	"time"

	"github.com/templateworker/templateworker/proto"
)

// CacheOptions bound how many tenants a worker keeps loaded. A worker
// holds the templates and VM of at most MaxTenants tenants; the least
// recently used idle tenant is evicted to make room, and a tenant idle for
// longer than IdleTTL is evicted by the next sweep. An evicted tenant's
// next event loads its templates and builds a fresh VM: its Lua globals
// and upvalues are lost (as after a drop or a worker restart), its KV is
// not.
type CacheOptions struct {
	// MaxTenants is the most tenants (and so VMs) kept loaded
	// (--vm-cache-max); DefaultVMCacheMax when zero, unlimited when
	// negative.
	MaxTenants int
	// IdleTTL evicts a tenant unused for this long (--vm-idle-ttl);
	// DefaultVMIdleTTL when zero, never when negative.
	IdleTTL time.Duration
}

// Defaults of CacheOptions.
const (
	DefaultVMCacheMax = 20000
	DefaultVMIdleTTL  = 15 * time.Minute
)

// withDefaults resolves the zero and negative values of c.
func (c CacheOptions) withDefaults() CacheOptions {
	switch {
	case c.MaxTenants == 0:
		c.MaxTenants = DefaultVMCacheMax
	case c.MaxTenants < 0:
		c.MaxTenants = 0 // unlimited
	}
	switch {
	case c.IdleTTL == 0:
		c.IdleTTL = DefaultVMIdleTTL
	case c.IdleTTL < 0:
		c.IdleTTL = 0 // never
	}
	return c
}

// Eviction reasons, as in templateworker_vm_evictions_total{reason}.
const (
	EvictLRU    = "lru"
	EvictIdle   = "idle"
	EvictMemory = "memory"
)

// CacheStats counts what a worker's tenant cache did. The fields are read
// by other goroutines (status, heartbeats) while the worker runs.
type CacheStats struct {
	vms        atomic.Int64
	coldStarts atomic.Int64
	evictLRU   atomic.Int64
	evictIdle  atomic.Int64
	evictMem   atomic.Int64
}

// Snapshot copies the counters.
func (s *CacheStats) Snapshot() proto.CacheStats {
	return proto.CacheStats{
		VMs:             s.vms.Load(),
		ColdStarts:      s.coldStarts.Load(),
		EvictionsLRU:    s.evictLRU.Load(),
		EvictionsIdle:   s.evictIdle.Load(),
		EvictionsMemory: s.evictMem.Load(),
	}
}

// clock reads m.now, or time.Now without one.
func (m *Manager) clock() time.Time {
	if m.now != nil {
		return m.now()
	}
	return time.Now()
}

// touch marks t as used at at (zero: now; m.mu held), inserting it into
// the recency list.
func (m *Manager) touch(t *tenant, at time.Time) {
	if at.IsZero() || m.now != nil {
		at = m.clock()
	}
	t.lastUsed = at
	if t.elem == nil {
		t.elem = m.lru.PushFront(t)
		return
	}
	m.lru.MoveToFront(t.elem)
}

// makeRoom evicts least recently used idle tenants until one more fits
// (m.mu held).
func (m *Manager) makeRoom() {
	max := m.cache.MaxTenants
	if max <= 0 {
		return
	}
	for e := m.lru.Back(); e != nil && m.lru.Len() >= max; {
		t := e.Value.(*tenant)
		prev := e.Prev()
		if t.busy == 0 {
			m.evict(t, EvictLRU)
		}
		e = prev
	}
}

// Sweep evicts the tenants idle for longer than the cache's IdleTTL and
// returns how many it evicted. The worker's goroutine calls it
// periodically.
func (m *Manager) Sweep() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	ttl := m.cache.IdleTTL
	if ttl <= 0 {
		return 0
	}
	cutoff := m.clock().Add(-ttl)
	n := 0
	for e := m.lru.Back(); e != nil; {
		t := e.Value.(*tenant)
		if t.lastUsed.After(cutoff) {
			break // the rest were used more recently
		}
		prev := e.Prev()
		if t.busy == 0 {
			m.evict(t, EvictIdle)
			n++
		}
		e = prev
	}
	return n
}

// EvictForMemory evicts least recently used idle tenants until the VMs
// evicted account for at least need bytes (by each VM's own estimate of
// its live size) or no idle tenant is left. It returns how many tenants it
// evicted and the bytes their VMs held.
func (m *Manager) EvictForMemory(need int64) (n int, freed int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for e := m.lru.Back(); e != nil && freed < need; {
		t := e.Value.(*tenant)
		prev := e.Prev()
		if t.busy == 0 {
			if t.vm != nil {
				freed += t.vm.liveBytes()
			}
			m.evict(t, EvictMemory)
			n++
		}
		e = prev
	}
	return n, freed
}

// evict forgets tenant t: its VM and its cached templates.
func (m *Manager) evict(t *tenant, reason string) {
	switch reason {
	case EvictLRU:
		m.stats.evictLRU.Add(1)
	case EvictIdle:
		m.stats.evictIdle.Add(1)
	case EvictMemory:
		m.stats.evictMem.Add(1)
	}
	m.forget(t)
}

// forget removes t from the cache, discarding its VM — when its call ends
// if it is busy (m.mu held).
func (m *Manager) forget(t *tenant) {
	if t.busy > 0 {
		t.dropped = true
	} else {
		m.setVM(t, nil)
	}
	if t.elem != nil {
		m.lru.Remove(t.elem)
		t.elem = nil
	}
	delete(m.tenants, t.id)
}

// setVM replaces t's VM (m.mu held), keeping the live-VM count; a replaced VM is
// closed (marked broken, so any holder sees a clear error, and out of the
// worker's memory pool).
func (m *Manager) setVM(t *tenant, vm *VM) {
	if t.vm != nil {
		t.vm.close()
		m.stats.vms.Add(-1)
	}
	t.vm = vm
	if vm != nil {
		m.stats.vms.Add(1)
		m.stats.coldStarts.Add(1)
	}
}

// Stats returns the cache's counters (safe to read from any goroutine).
func (m *Manager) Stats() *CacheStats { return &m.stats }

// sweepEvery is how often a worker sweeps for idle tenants.
func sweepEvery(ttl time.Duration) time.Duration {
	return min(max(ttl/4, time.Second), time.Minute)
}
