package master

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
)

// Quarantine keeps hostile tenants away from the workers: a tenant that
// hits a fatal limit, or is in flight when its worker process dies, After
// times within Window is quarantined for Window. Its calls then fail at
// once with 423 tenant_quarantined; operators list and lift quarantines
// through the API. With a store (Restore), quarantines outlive a restart
// of the master; strikes below the threshold do not.
type Quarantine struct {
	After  int
	Window time.Duration
	// OnQuarantine, if set, is called (outside the lock) when a tenant
	// becomes quarantined; the process pool drops its held nowait events.
	OnQuarantine func(id proto.Id)
	now          func() time.Time

	store QuarantineStore // nil: quarantines live in memory only
	log   zerolog.Logger

	mu      sync.Mutex
	strikes map[proto.Id][]strike
	active  map[proto.Id]QuarantineEntry
}

type strike struct {
	at     time.Time
	reason string
}

// QuarantineEntry describes one quarantined tenant.
type QuarantineEntry = proto.Quarantine

// QuarantineStore keeps quarantines across restarts of the master; the
// store (store.Store) is one.
type QuarantineStore interface {
	SaveQuarantine(ctx context.Context, q proto.Quarantine) error
	LiftQuarantine(ctx context.Context, tenant proto.Id) error
	Quarantines(ctx context.Context, now time.Time) ([]proto.Quarantine, error)
}

// quarantineStoreTimeout bounds one write of a quarantine to the store.
const quarantineStoreTimeout = 5 * time.Second

// Restore loads the quarantines kept in st that have not ended, of the
// tenants owns accepts (all when owns is nil: a master of a cluster
// restores only its own shards'), and keeps the quarantines of this master
// in st from now on. Call it before the quarantine is used.
func (q *Quarantine) Restore(ctx context.Context, st QuarantineStore, owns func(proto.Id) bool, log zerolog.Logger) error {
	list, err := st.Quarantines(ctx, q.now())
	if err != nil {
		return fmt.Errorf("load quarantines: %w", err)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.store, q.log = st, log
	n := 0
	for _, e := range list {
		if owns == nil || owns(e.Tenant) {
			q.active[e.Tenant] = e
			n++
		}
	}
	if n > 0 {
		log.Warn().Int("tenants", n).Msg("quarantines restored from the store")
	}
	return nil
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
	e := QuarantineEntry{Tenant: id, Since: now, Until: now.Add(q.Window),
		Reason: itoa(len(list)) + " fatal incidents within " + q.Window.String() + ", last: " + reason}
	q.active[id] = e
	st, log := q.store, q.log
	q.mu.Unlock()
	if st != nil {
		ctx, cancel := context.WithTimeout(context.Background(), quarantineStoreTimeout)
		if err := st.SaveQuarantine(ctx, e); err != nil {
			log.Warn().Str("tenant", id.String()).Err(err).Msg("quarantine not saved: a restart of the master would lift it")
		}
		cancel()
	}
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

// Lift ends a tenant's quarantine, in the store first, and forgets its
// strikes. It reports whether the tenant was quarantined; when the store
// cannot be written, the quarantine stays and the error says why.
func (q *Quarantine) Lift(ctx context.Context, id proto.Id) (bool, error) {
	if q == nil {
		return false, nil
	}
	q.mu.Lock()
	delete(q.strikes, id)
	e, ok := q.active[id]
	if !ok || q.now().After(e.Until) {
		delete(q.active, id)
		q.mu.Unlock()
		return false, nil
	}
	st := q.store
	q.mu.Unlock()
	if st != nil {
		ctx, cancel := context.WithTimeout(ctx, quarantineStoreTimeout)
		defer cancel()
		if err := st.LiftQuarantine(ctx, id); err != nil {
			return false, err
		}
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	_, ok = q.active[id]
	delete(q.active, id)
	delete(q.strikes, id)
	return ok, nil
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

// observe counts a fatal limit of the tenant's own execution as a strike.
// A call that ended because its caller's deadline passed (ctx) is not
// one: its time went waiting behind other calls, and the call that made it
// wait is the one the watchdog blames.
func (g guarded) observe(ctx context.Context, id proto.Id, err error) error {
	if err == nil {
		return nil
	}
	if c := proto.CodeOf(err); fatalCode(c) && !callerExpired(ctx) {
		g.q.Strike(id, c)
	}
	return err
}

// callerExpired reports whether ctx's deadline has passed.
func callerExpired(ctx context.Context) bool {
	d, ok := ctx.Deadline()
	return (ok && !time.Now().Before(d)) || ctx.Err() != nil
}

func (g guarded) DispatchEvent(ctx context.Context, id proto.Id, ev proto.Event) (proto.Value, error) {
	if err := g.q.Check(id); err != nil {
		return nil, err
	}
	v, err := g.WorkerLike.DispatchEvent(ctx, id, ev)
	return v, g.observe(ctx, id, err)
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
	return v, g.observe(ctx, id, err)
}
