package worker

import (
	"context"
	"runtime/debug"
	"time"
)

// Without --worker-memory-max, a process worker whose VM cache is bounded
// (--vm-cache-max) sets its Go soft memory limit from the cache's size, so
// that its RSS tracks the live heap of a full cache instead of growing to
// twice it (GOGC 100 lets the heap double before collecting).

const (
	// vmHeapEstimate is the Go heap one cached idle tenant VM keeps, with
	// margin: BenchmarkIdleTenantHeap measures about 9.6 KiB, the workers of
	// BenchmarkManyTenants about 9.3 KiB per cached VM.
	vmHeapEstimate = 10 << 10
	// baseHeapEstimate is the worker's heap besides its VMs.
	baseHeapEstimate = 40 << 20
	// limitHeadroom is the part of the live heap added above it when the
	// live heap outgrows the cache estimate (tenants holding data): the
	// collector then runs as with GOGC 25 instead of at its CPU cap.
	limitHeadroom = 4
	// tuneEvery is how often the limit follows the live heap.
	tuneEvery = time.Second
)

// CacheMemoryLimit is the soft memory limit a worker with a VM cache of
// cacheMax VMs starts with; 0 (no limit) when the cache is unbounded.
func CacheMemoryLimit(cacheMax int) int64 {
	if cacheMax <= 0 {
		return 0
	}
	return baseHeapEstimate + int64(cacheMax)*vmHeapEstimate
}

// TuneMemoryLimit sets the process's soft memory limit to floor and, until
// ctx ends, raises it to the live heap plus a quarter whenever that is
// higher (and back down to floor when it is not): the limit holds the RSS
// of a worker near its live heap without making the collector run
// continuously when tenants legitimately hold more (their memory is bounded
// by --lua-max-worker-memory). floor ≤ 0 does nothing.
func TuneMemoryLimit(ctx context.Context, floor int64) {
	if floor <= 0 {
		return
	}
	debug.SetMemoryLimit(floor)
	go func() {
		t := time.NewTicker(tuneEvery)
		defer t.Stop()
		last := floor
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if l := tunedLimit(floor, gcLiveHeap()); l != last {
				debug.SetMemoryLimit(l)
				last = l
			}
		}
	}()
}

// tunedLimit is the limit for a live heap of live bytes.
func tunedLimit(floor, live int64) int64 {
	return max(floor, live+live/limitHeadroom)
}
