package worker

import (
	"context"
	"sort"
	"strconv"
	"time"

	"github.com/templateworker/templateworker/proto"
)

func (s *memStore) ScheduleEvent(ctx context.Context, id proto.Id, at time.Time, ev proto.Event) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return "", s.fail
	}
	if s.events == nil {
		s.events = map[proto.Id][]proto.ScheduledEvent{}
	}
	if s.eventBound > 0 && len(s.events[id]) >= s.eventBound {
		return "", &proto.Error{Code: proto.CodeBacklogFull, RetryAfter: 1,
			Message: "tenant " + id.String() + " has " + strconv.Itoa(s.eventBound) + " pending events (--event-backlog-tenant)"}
	}
	s.nextEvent++
	eid := strconv.Itoa(s.nextEvent)
	list := append(s.events[id], proto.ScheduledEvent{ID: eid, Event: ev, DeliverAt: at})
	sort.SliceStable(list, func(i, j int) bool { return list[i].DeliverAt.Before(list[j].DeliverAt) })
	s.events[id] = list
	return eid, nil
}

func (s *memStore) CancelEvent(ctx context.Context, id proto.Id, eventID string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return false, s.fail
	}
	list := s.events[id]
	for i := range list {
		if list[i].ID == eventID {
			s.events[id] = append(list[:i:i], list[i+1:]...)
			return true, nil
		}
	}
	return false, nil
}

func (s *memStore) ScheduledEvents(ctx context.Context, id proto.Id) ([]proto.ScheduledEvent, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return nil, s.fail
	}
	return append([]proto.ScheduledEvent(nil), s.events[id]...), nil
}
