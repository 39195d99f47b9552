package proto

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// Event is what a template runs on (CreateEvent in the original system):
// {"name": "Ping", "author": "123" | null, "data": <any JSON>}.
type Event struct {
	// Name is the event name templates subscribe to, e.g. "Ping".
	Name string `json:"name"`
	// Author is who caused the event, if anyone.
	Author *string `json:"author"`
	// Data is the event's payload, any JSON value (null when absent).
	Data Value `json:"data"`
	// ID is set on an event delivered from the master's durable queue
	// (nowait, delayed, scheduled): the same for every delivery of one
	// event, so that a template can recognise a redelivery. Waited
	// dispatches have none.
	ID string `json:"id,omitempty"`
}

// Validate reports whether the event can be dispatched.
func (e Event) Validate() error {
	if e.Name == "" {
		return errors.New("event name must not be empty")
	}
	if len(e.Name) > 128 {
		return fmt.Errorf("event name is %d bytes, at most 128 allowed", len(e.Name))
	}
	return nil
}

// NewEvent builds an event whose data is v encoded as JSON.
func NewEvent(name string, data any) (Event, error) {
	b, err := json.Marshal(data)
	if err != nil {
		return Event{}, fmt.Errorf("encode event data: %w", err)
	}
	return Event{Name: name, Data: Value(b)}, nil
}

// Value is any JSON value, kept encoded. The zero Value is JSON null.
type Value []byte

// Null is the JSON null value.
var Null = Value("null")

// IsNull reports whether v is JSON null (or empty).
func (v Value) IsNull() bool {
	return len(v) == 0 || string(bytes.TrimSpace(v)) == "null"
}

// MarshalJSON returns v itself, or null for the zero Value.
func (v Value) MarshalJSON() ([]byte, error) {
	if len(v) == 0 {
		return []byte("null"), nil
	}
	return v, nil
}

// UnmarshalJSON stores a copy of the raw JSON.
func (v *Value) UnmarshalJSON(b []byte) error {
	*v = append((*v)[:0], b...)
	return nil
}

// String returns the JSON text.
func (v Value) String() string {
	if len(v) == 0 {
		return "null"
	}
	return string(v)
}
