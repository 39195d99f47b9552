package storetest

import (
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/store"
)

var concurrencyTests = []test{
	{"ConcurrentDistinctKeys", testConcurrentDistinctKeys},
	{"ConcurrentSameKey", testConcurrentSameKey},
	{"ConcurrentQuota", testConcurrentQuota},
}

const (
	goroutines = 8
	perG       = 50
)

// parallel runs f(g, i) for g in [0, goroutines) and i in [0, n), each g in
// its own goroutine, and returns the errors.
func parallel(n int, f func(g, i int) error) []error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for g := range goroutines {
		wg.Go(func() {
			for i := range n {
				if err := f(g, i); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return errs
}

func testConcurrentDistinctKeys(t *testing.T, open Opener) {
	// The quota is exactly what the writers need: an accounting race would
	// reject a write or let a later one through.
	s := open(t, store.Quota{MaxKeys: goroutines * perG})
	c := ctx(t)
	errs := parallel(perG, func(g, i int) error {
		return s.KvSet(c, guild, fmt.Sprintf("g%d/k%02d", g, i), json.RawMessage(fmt.Sprintf(`[%d,%d]`, g, i)))
	})
	for _, err := range errs {
		t.Error(err)
	}
	items, err := s.KvFind(c, guild, "g")
	must(t, err)
	if len(items) != goroutines*perG {
		t.Fatalf("%d keys after %d concurrent writes", len(items), goroutines*perG)
	}
	for _, it := range items {
		var g, i int
		fmt.Sscanf(it.Key, "g%d/k%d", &g, &i)
		if want := fmt.Sprintf(`[%d,%d]`, g, i); string(it.Value) != want {
			t.Errorf("%s = %s, want %s", it.Key, it.Value, want)
		}
	}
	wantCode(t, s.KvSet(c, guild, "one more", json.RawMessage(`1`)), proto.CodeKVQuotaExceeded)
}

func testConcurrentSameKey(t *testing.T, open Opener) {
	s := open(t, store.Quota{})
	c := ctx(t)
	const n = 20
	var written []string
	for g := range goroutines {
		for i := range n {
			written = append(written, fmt.Sprintf(`{"g":%d,"i":%d,"pad":"%*s"}`, g, i, g*10, ""))
		}
	}
	errs := parallel(n, func(g, i int) error {
		return s.KvSet(c, guild, "same", json.RawMessage(written[g*n+i]))
	})
	for _, err := range errs {
		t.Error(err)
	}
	if v := get(t, s, guild, "same"); !slices.Contains(written, v) {
		t.Fatalf("value after concurrent writes = %s, not one of the written values", v)
	}

	// The tenant's usage must count the key once: with a one-key quota,
	// replacing it works and adding another does not.
	h := harness(t, s)
	s1, err := h.Reopen(c, store.Quota{MaxKeys: 1})
	must(t, err)
	defer s1.Close()
	must(t, s1.KvSet(c, guild, "same", json.RawMessage(`0`)))
	wantCode(t, s1.KvSet(c, guild, "other", json.RawMessage(`0`)), proto.CodeKVQuotaExceeded)
}

func testConcurrentQuota(t *testing.T, open Opener) {
	const max = 10
	s := open(t, store.Quota{MaxKeys: max})
	c := ctx(t)
	var (
		mu sync.Mutex
		ok int
	)
	errs := parallel(5, func(g, i int) error {
		err := s.KvSet(c, guild, fmt.Sprintf("g%d-%d", g, i), json.RawMessage(`1`))
		if err == nil {
			mu.Lock()
			ok++
			mu.Unlock()
		} else if proto.CodeOf(err) == proto.CodeKVQuotaExceeded {
			return nil
		}
		return err
	})
	for _, err := range errs {
		t.Error(err)
	}
	if ok != max {
		t.Errorf("%d concurrent writes succeeded, want exactly the quota of %d", ok, max)
	}
	if n := len(keys(t, s, guild, "")); n != max {
		t.Errorf("%d keys stored, want %d", n, max)
	}
}
