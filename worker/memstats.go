package worker

import (
	"bytes"
	"os"
	"runtime/metrics"
	"strconv"
)

// ProcessMemory returns this process's live Go heap (bytes in heap
// objects, including garbage not yet collected) and its resident set size
// (0 where /proc is not available).
func ProcessMemory() (heap, rss int64) {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() == metrics.KindUint64 {
		heap = int64(s[0].Value.Uint64())
	}
	return heap, residentBytes()
}

// gcLiveHeap returns the Go heap the last garbage collection found live (the
// heap in objects, garbage included, when the runtime does not report it).
// Under a soft memory limit the collector runs more often as the heap
// nears the limit, so the figure stays fresh where it matters.
func gcLiveHeap() int64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() == metrics.KindUint64 && s[0].Value.Uint64() > 0 {
		return int64(s[0].Value.Uint64())
	}
	if s[1].Value.Kind() == metrics.KindUint64 {
		return int64(s[1].Value.Uint64())
	}
	return 0
}

// residentBytes reads the resident set size from /proc/self/statm.
func residentBytes() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := bytes.Fields(b)
	if len(f) < 2 {
		return 0
	}
	pages, err := strconv.ParseInt(string(f[1]), 10, 64)
	if err != nil {
		return 0
	}
	return pages * int64(os.Getpagesize())
}
