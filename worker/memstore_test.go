package worker

import (
	"context"
	"encoding/json"
	"sort"
	"strings"
	"sync"

	"github.com/templateworker/templateworker/proto"
)

// memStore is an in-memory Store for tests. It counts template loads.
type memStore struct {
	mu        sync.Mutex
	templates map[proto.Id][]proto.Template
	kv        map[proto.Id]map[string]json.RawMessage
	loads     int
	fail      error
	// scheduled events (ctx.events), bounded per tenant by eventBound
	// when it is above 0.
	events     map[proto.Id][]proto.ScheduledEvent
	nextEvent  int
	eventBound int
}

func newMemStore() *memStore {
	return &memStore{templates: map[proto.Id][]proto.Template{}, kv: map[proto.Id]map[string]json.RawMessage{}}
}

func (s *memStore) put(id proto.Id, name, code string, events ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	list := s.templates[id]
	for i := range list {
		if list[i].Name == name {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	s.templates[id] = append(list, proto.Template{Name: name, Code: code, Events: events})
}

func (s *memStore) Templates(ctx context.Context, id proto.Id) ([]proto.Template, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loads++
	if s.fail != nil {
		return nil, s.fail
	}
	return append([]proto.Template(nil), s.templates[id]...), nil
}

func (s *memStore) TenantsWithEvent(ctx context.Context, event string) ([]proto.Id, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []proto.Id
	for id, list := range s.templates {
		for _, t := range list {
			for _, e := range t.Events {
				if e == event {
					ids = append(ids, id)
				}
			}
		}
	}
	return ids, nil
}

func (s *memStore) KvGet(ctx context.Context, id proto.Id, key string) (json.RawMessage, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return nil, false, s.fail
	}
	v, ok := s.kv[id][key]
	return v, ok, nil
}

func (s *memStore) KvSet(ctx context.Context, id proto.Id, key string, v json.RawMessage) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	if s.kv[id] == nil {
		s.kv[id] = map[string]json.RawMessage{}
	}
	s.kv[id][key] = append(json.RawMessage(nil), v...)
	return nil
}

func (s *memStore) KvDelete(ctx context.Context, id proto.Id, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.kv[id], key)
	return nil
}

func (s *memStore) KvFind(ctx context.Context, id proto.Id, prefix string) ([]proto.KVItem, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []proto.KVItem
	for k, v := range s.kv[id] {
		if strings.HasPrefix(k, prefix) {
			out = append(out, proto.KVItem{Key: k, Value: v})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}
