package master

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/templateworker/templateworker/proto"
)

// Quarantine keeps hostile tenants away from the workers: a tenant that
// hits a fatal limit, or is in flight when its worker process dies, After
// times within Window is quarantined for Window. Its calls then fail at
// once with 423 tenant_quarantined; operators list and lift quarantines
// through the API.
type Quarantine struct {
	After  int
	Window time.Duration
	// OnQuarantine, if set, is called (outside the lock) when a tenant
	// becomes quarantined; the process pool drops its held nowait events.
	OnQuarantine func(id proto.Id)
	now          func() time.Time

	mu      sync.Mutex
	strikes map[proto.Id][]strike
	active  map[proto.Id]QuarantineEntry
}

type strike struct {
	at     time.Time
	reason string
}

// QuarantineEntry describes one quarantined tenant.
type QuarantineEntry struct {
	Tenant proto.Id  `json:"tenant"`
	Since  time.Time `json:"since"`
	Until  time.Time `json:"until"`
	Reason string    `json:"reason"`
}

// NewQuarantine returns a quarantine with the given threshold and window.
func NewQuarantine(after int, window time.Duration) *Quarantine {
	return &Quarantine{
		After: after, Window: window, now: time.Now,
		strikes: make(map[proto.Id][]strike),
		active:  make(map[proto.Id]QuarantineEntry),
	}
}

// Check returns tenant_quarantined if id is quarantined.
func (q *Quarantine) Check(id proto.Id) error {
	if q == nil || q.After <= 0 {
		return nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	e, ok := q.active[id]
	if !ok {
		return nil
	}
	if q.now().After(e.Until) {
		delete(q.active, id)
		return nil
	}
	return &proto.Error{Code: proto.CodeTenantQuarantined,
		RetryAfter: int(time.Until(e.Until).Seconds()) + 1,
		Message:    "tenant " + id.String() + " is quarantined until " + e.Until.UTC().Format(time.RFC3339) + ": " + e.Reason}
}

// Strike records a fatal incident of tenant id and quarantines it when it
// reaches the threshold within the window. It reports whether the tenant
// is now quarantined.
func (q *Quarantine) Strike(id proto.Id, reason string) bool {
	if q == nil || q.After <= 0 {
		return false
	}
	q.mu.Lock()
	now := q.now()
	list := q.strikes[id][:0:0]
	for _, s := range q.strikes[id] {
		if now.Sub(s.at) < q.Window {
			list = append(list, s)
		}
	}
	list = append(list, strike{at: now, reason: reason})
	if len(list) < q.After {
		q.strikes[id] = list
		q.mu.Unlock()
		return false
	}
	delete(q.strikes, id)
	q.active[id] = QuarantineEntry{Tenant: id, Since: now, Until: now.Add(q.Window),
		Reason: itoa(len(list)) + " fatal incidents within " + q.Window.String() + ", last: " + reason}
	q.mu.Unlock()
	if q.OnQuarantine != nil {
		q.OnQuarantine(id)
	}
	return true
}

// List returns the active quarantines ordered by tenant.
func (q *Quarantine) List() []QuarantineEntry {
	out := []QuarantineEntry{}
	if q == nil {
		return out
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	now := q.now()
	for id, e := range q.active {
		if now.After(e.Until) {
			delete(q.active, id)
			continue
		}
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Tenant.String() < out[j].Tenant.String() })
	return out
}

// Lift ends a tenant's quarantine and forgets its strikes. It reports
// whether the tenant was quarantined.
func (q *Quarantine) Lift(id proto.Id) bool {
	if q == nil {
		return false
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	_, ok := q.active[id]
	delete(q.active, id)
	delete(q.strikes, id)
	return ok
}

// Count returns the number of quarantined tenants.
func (q *Quarantine) Count() int { return len(q.List()) }

// fatalCode reports whether an error code is a fatal limit that counts as
// a strike.
func fatalCode(code string) bool {
	switch code {
	case proto.CodeCPULimit, proto.CodeTimeout, proto.CodeMemoryLimit, proto.CodeStackOverflow:
		return true
	}
	return false
}

// guarded wraps a WorkerLike with the quarantine: quarantined tenants are
// refused before reaching a worker, and fatal limit errors are counted.
type guarded struct {
	WorkerLike
	q *Quarantine
}

func (g guarded) observe(id proto.Id, err error) error {
	if err != nil {
		if c := proto.CodeOf(err); fatalCode(c) {
			g.q.Strike(id, c)
		}
	}
	return err
}

func (g guarded) DispatchEvent(ctx context.Context, id proto.Id, ev proto.Event) (proto.Value, error) {
	if err := g.q.Check(id); err != nil {
		return nil, err
	}
	v, err := g.WorkerLike.DispatchEvent(ctx, id, ev)
	return v, g.observe(id, err)
}

func (g guarded) DispatchEventNoWait(id proto.Id, ev proto.Event) error {
	if err := g.q.Check(id); err != nil {
		return err
	}
	return g.WorkerLike.DispatchEventNoWait(id, ev)
}

func (g guarded) RunScript(ctx context.Context, id proto.Id, name, code string, ev proto.Event) (proto.Value, error) {
	if err := g.q.Check(id); err != nil {
		return nil, err
	}
	v, err := g.WorkerLike.RunScript(ctx, id, name, code, ev)
	return v, g.observe(id, err)
}
