package lua

// Compile cache patch: a compiled main chunk whose prototypes every State
// may share. Many tenants run the same template source; compiling it once
// per process instead of once per VM saves the parse and keeps one copy of
// its code and constants instead of one per VM.
//
// A shared prototype is never written again: its closure cache (Lua 5.2's
// reuse of the last closure built from a prototype, which would hand one
// State's closure, and its upvalues, to another) is off, and the
// ReachableBytes walk dedupes it with a map of the walk instead of the
// prototype's epoch mark. Each State that loads it is charged its size as
// if it had compiled it (MaxMemory and the pool see the same figures).

// Chunk is a compiled main chunk, shared by the States that load it with
// LoadChunk. It is safe for concurrent use.
type Chunk struct{ p *prototype }

// ShareChunk returns the chunk of the Lua function at index, a main chunk
// just loaded (by Load or LoadBuffer) and not yet run, and marks its
// prototypes shared: from now on their closures are not cached. It returns
// nil when the value is not a Lua function.
func ShareChunk(l *State, index int) *Chunk {
	c, ok := l.indexToValue(index).(*luaClosure)
	if !ok {
		return nil
	}
	markShared(c.prototype)
	return &Chunk{p: c.prototype}
}

func markShared(p *prototype) {
	p.shared = true
	p.cache = nil
	for i := range p.prototypes {
		markShared(&p.prototypes[i])
	}
}

// Bytes is the size a State that loads c is charged (its prototypes, code
// and constants).
func (c *Chunk) Bytes() int64 { return prototypeBytes(c.p) }

// LoadChunk pushes a new function of c, as Load pushes the function of a
// chunk it compiled: its one upvalue is the globals of l, and l is charged
// the prototypes' size.
func LoadChunk(l *State, c *Chunk) {
	cl := l.newLuaClosure(c.p)
	for i := range cl.upValues {
		cl.upValues[i] = l.newUpValue()
	}
	l.apiPush(cl)
	if cl.upValueCount() == 1 {
		cl.setUpValue(0, l.global.registry.atInt(RegistryIndexGlobals))
	}
	l.global.allocatedBytes += prototypeBytes(c.p)
}
