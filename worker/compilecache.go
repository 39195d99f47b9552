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

// compileCacheMax and compileCacheMaxBytes bound the distinct templates
// kept and their compiled size together; past either, arbitrary entries
// make room (the VMs holding a chunk keep it alive, charged to them). A
// template compiled to more than compileCacheEntryMax is not kept: the
// cache is memory that no tenant is charged for once its VMs are evicted,
// so tenants uploading many large distinct templates must not grow it.
const (
	compileCacheMax      = 4096
	compileCacheMaxBytes = 32 << 20
	compileCacheEntryMax = 256 << 10
)

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
	chunks map[chunkKey]cachedChunk
	bytes  int64 // the chunks' sizes together
	hits   int64 // loads served from the cache
}

// cachedChunk is a compiled template and its size (lua.Chunk.Bytes).
type cachedChunk struct {
	ch    *lua.Chunk
	bytes int64
}

var compiledTemplates = &chunkCache{chunks: map[chunkKey]cachedChunk{}}

func (c *chunkCache) get(k chunkKey) *lua.Chunk {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.chunks[k]
	if ok {
		c.hits++
	}
	return e.ch
}

// reset empties the cache (benchmarks of the compilation) and returns the
// hits so far.
func (c *chunkCache) reset() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.chunks)
	c.bytes = 0
	return c.hits
}

func (c *chunkCache) put(k chunkKey, ch *lua.Chunk) {
	n := ch.Bytes()
	if n > compileCacheEntryMax {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.chunks[k]; ok {
		delete(c.chunks, k)
		c.bytes -= old.bytes
	}
	for old, e := range c.chunks {
		if len(c.chunks) < compileCacheMax && c.bytes+n <= compileCacheMaxBytes {
			break
		}
		delete(c.chunks, old)
		c.bytes -= e.bytes
	}
	c.chunks[k] = cachedChunk{ch: ch, bytes: n}
	c.bytes += n
}

// size returns the entries and their bytes.
func (c *chunkCache) size() (int, int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.chunks), c.bytes
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
