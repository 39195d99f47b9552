package proto

import (
	"encoding/json"
	"time"
)

// Template is one Lua template of a tenant: its source and the events it
// subscribes to.
type Template struct {
	// Name identifies the template within its tenant; results are keyed by it.
	Name string `json:"name"`
	// Code is the Lua source.
	Code string `json:"code"`
	// Events lists the event names the template runs on.
	Events []string `json:"events"`
	// UpdatedAt is when the template was last written.
	UpdatedAt time.Time `json:"updated_at"`
}

// KVItem is one key-value pair of a tenant's store.
type KVItem struct {
	Key   string          `json:"key"`
	Value json.RawMessage `json:"value"`
}

// Limits of the key-value store, identical for every store implementation.
const (
	// MaxKeyBytes is the longest key, in bytes; keys are at least 1 byte.
	MaxKeyBytes = 512
	// MaxValueBytes is the largest encoded JSON value.
	MaxValueBytes = 256 << 10
)
