// Package syncbuf is a bytes buffer that many goroutines may write while a
// test reads it: the sink tests give a logger or a child process's output.
package syncbuf

import (
	"bytes"
	"sync"
)

// Buffer is a bytes.Buffer whose methods are safe for concurrent use. The
// zero Buffer is empty and ready to use.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Take returns what was written so far and empties the buffer.
func (s *Buffer) Take() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := bytes.Clone(s.b.Bytes())
	s.b.Reset()
	return out
}
