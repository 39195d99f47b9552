package worker

import (
	"crypto/sha256"
	"sync"

	lua "github.com/Shopify/go-lua"
)

// Many tenants run the same template source (a bot's default templates):
// a process compiles each distinct (name, source) once and every VM that
// loads it shares the compiled prototypes (lua.Chunk: immutable once
// shared, no closure cache across VMs). A cache hit still charges the VM
// the template's compiled size, as a compilation would.

// compileCacheMax bounds the distinct templates kept; past it an arbitrary
// entry makes room (the VMs holding its chunk keep it alive).
const compileCacheMax = 4096

// chunkKey identifies a template's compiled chunk: its name (the chunk's
// name in error messages) and its source.
type chunkKey [sha256.Size]byte

func newChunkKey(name, code string) chunkKey {
	h := sha256.New()
	h.Write([]byte(name))
	h.Write([]byte{0})
	h.Write([]byte(code))
	var k chunkKey
	h.Sum(k[:0])
	return k
}

// chunkCache is the process's compiled templates.
type chunkCache struct {
	mu     sync.Mutex
	chunks map[chunkKey]*lua.Chunk
	hits   int64 // loads served from the cache
}

var compiledTemplates = &chunkCache{chunks: map[chunkKey]*lua.Chunk{}}

func (c *chunkCache) get(k chunkKey) *lua.Chunk {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := c.chunks[k]
	if ch != nil {
		c.hits++
	}
	return ch
}

// reset empties the cache (benchmarks of the compilation) and returns the
// hits so far.
func (c *chunkCache) reset() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.chunks)
	return c.hits
}

func (c *chunkCache) put(k chunkKey, ch *lua.Chunk) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.chunks) >= compileCacheMax {
		for old := range c.chunks {
			delete(c.chunks, old)
			break
		}
	}
	c.chunks[k] = ch
}

// loadTemplate leaves the compiled function of a template on the stack:
// the process's shared chunk of the same name and source when there is
// one, else compiled (charged to the call's budget, as load) and shared.
// A source over the VM's limit is always compiled, to fail as load does.
func (vm *VM) loadTemplate(name, code string) error {
	if max := vm.limits.maxSource(); max > 0 && len(code) > max {
		return vm.load(name, code)
	}
	k := newChunkKey(name, code)
	if ch := compiledTemplates.get(k); ch != nil {
		lua.LoadChunk(vm.l, ch)
		return nil
	}
	if err := vm.load(name, code); err != nil {
		return err
	}
	if ch := lua.ShareChunk(vm.l, -1); ch != nil {
		compiledTemplates.put(k, ch)
	}
	return nil
}
