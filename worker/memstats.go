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
