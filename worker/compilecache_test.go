package worker

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
)

// TestTemplateChunkShared: tenants with the same template share its
// compiled chunk, yet each VM has its own globals and its own closures of
// the template's functions, also when they run at once (-race).
func TestTemplateChunkShared(t *testing.T) {
	const code = `local g = function() return 1 end
n = (n or 0) + g()
return tostring(g) .. "|" .. n`
	s := newMemStore()
	ids := []proto.Id{proto.GuildID(1 << 22), proto.GuildID(2 << 22), proto.GuildID(3 << 22)}
	for _, id := range ids {
		s.put(id, "shared-chunk-test", code, "Ping")
	}
	m := NewManager(0, 1, s, DefaultLimits, zerolog.Nop())
	closures := make([]map[string]bool, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		closures[i] = map[string]bool{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for call := 1; call <= 20; call++ {
				v, err := m.Dispatch(context.Background(), id, ev("Ping", "{}"))
				if err != nil {
					t.Error(err)
					return
				}
				var out map[string]string
				if err := json.Unmarshal(v, &out); err != nil {
					t.Errorf("%s: %v", v, err)
					return
				}
				name, n, _ := strings.Cut(out["shared-chunk-test"], "|")
				if want := strconv.Itoa(call); n != want {
					t.Errorf("tenant %d call %d: n = %s (another VM's globals?)", i, call, n)
				}
				closures[i][name] = true
			}
		}()
	}
	wg.Wait()
	if compiledTemplates.get(newChunkKey("shared-chunk-test", code)) == nil {
		t.Fatal("the template's chunk is not in the process's cache")
	}
	owner := map[string]int{}
	for i, cs := range closures {
		for c := range cs {
			if j, ok := owner[c]; ok {
				t.Fatalf("tenants %d and %d got the same closure %s", j, i, c)
			}
			owner[c] = i
		}
	}
}

// TestCompileCacheBounded: the process's compiled templates stay within
// compileCacheMaxBytes however many large distinct templates tenants load,
// a template compiled past compileCacheEntryMax is not kept, and the VMs
// still run every template.
func TestCompileCacheBounded(t *testing.T) {
	compiledTemplates.reset()
	defer compiledTemplates.reset()
	s := newMemStore()
	// About 40 KiB of constants each: 1,000 distinct ones are ~40 MiB,
	// more than the cache may keep.
	body := `return #"` + strings.Repeat("x", 40<<10) + `"`
	const n = 1000
	for i := range n {
		s.put(proto.GuildID(uint64(i+1)<<22), "big", body+" + "+strconv.Itoa(i), "Ping")
	}
	huge := `return #"` + strings.Repeat("y", compileCacheEntryMax+1) + `"`
	s.put(proto.GuildID(uint64(n+1)<<22), "huge", huge, "Ping")
	limits := DefaultLimits
	m := NewManager(0, 1, s, limits, zerolog.Nop())
	for i := range n + 1 {
		id := proto.GuildID(uint64(i+1) << 22)
		if _, err := m.Dispatch(context.Background(), id, ev("Ping", "{}")); err != nil {
			t.Fatalf("tenant %d: %v", i, err)
		}
		m.Drop(id) // the cache, not the VMs, is what is measured
		if _, b := compiledTemplates.size(); b > compileCacheMaxBytes {
			t.Fatalf("after %d templates the cache holds %d bytes, over its bound %d", i+1, b, compileCacheMaxBytes)
		}
	}
	entries, b := compiledTemplates.size()
	if entries == 0 || entries >= n || b < compileCacheMaxBytes/2 {
		t.Fatalf("cache holds %d entries, %d bytes: want it full to about its byte bound, not every template", entries, b)
	}
	if compiledTemplates.get(newChunkKey("huge", huge)) != nil {
		t.Fatalf("a template compiled past compileCacheEntryMax was kept")
	}
}
