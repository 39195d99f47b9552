package master

import (
	"context"

	"github.com/templateworker/templateworker/mesophyll"
	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/store"
	"github.com/templateworker/templateworker/worker"
)

// boundedStore is the store as workers see it, in both topologies: what a
// tenant's templates or one ctx.kv.find return must fit in a Mesophyll
// frame (--mesophyll-max-frame minus proto.FrameReserve), checked before
// anything is sent. Over it the request fails with template_too_large or
// kv_result_too_large naming the limit; the worker and its connection are
// unharmed. The thread topology applies the same bound, so a tenant sees
// the same behaviour whichever topology serves it.
type boundedStore struct {
	store.Store
	// budget is the most bytes of encoded value one answer may carry.
	budget int
}

// newBoundedStore bounds st's answers to workers by frames of maxFrame.
func newBoundedStore(st store.Store, maxFrame int64) boundedStore {
	return boundedStore{Store: st, budget: proto.ValueBudget(frameLimit(maxFrame))}
}

// threadLimits are the limits of thread workers: a refused store answer is
// charged by the budget of frames of maxFrame, as process workers charge
// it by their frames' (worker.Limits.StoreAnswer).
func threadLimits(l worker.Limits, maxFrame int64) worker.Limits {
	if l == (worker.Limits{}) {
		l = worker.DefaultLimits // as worker.New would take them
	}
	l.StoreAnswer = proto.ValueBudget(frameLimit(maxFrame))
	return l
}

// frameLimit is maxFrame, or Mesophyll's default when unset.
func frameLimit(maxFrame int64) int64 {
	if maxFrame <= 0 {
		return mesophyll.DefaultMaxFrame
	}
	return maxFrame
}

// checkTemplate refuses a template whose code is over
// proto.MaxTemplateBytes, or that would make the tenant's template set
// (others, with t replacing the one of its name) too large for one
// answer to a worker.
func checkTemplate(others []proto.Template, id proto.Id, t proto.Template, maxFrame int64) error {
	if len(t.Code) > proto.MaxTemplateBytes {
		return proto.Errorf(proto.CodeTemplateTooLarge, "template %q is %d bytes, over the %d-byte limit of one template",
			t.Name, len(t.Code), proto.MaxTemplateBytes)
	}
	set := make([]proto.Template, 0, len(others)+1)
	for _, o := range others {
		if o.Name != t.Name {
			set = append(set, o)
		}
	}
	set = append(set, t)
	budget := proto.ValueBudget(frameLimit(maxFrame))
	if n := proto.TemplatesBound(set); n > budget {
		return templateSetTooLarge(id, n, budget)
	}
	return nil
}

// Templates lists the tenant's templates if they fit in one answer.
func (b boundedStore) Templates(ctx context.Context, id proto.Id) ([]proto.Template, error) {
	tpls, err := b.Store.Templates(ctx, id)
	if err != nil {
		return nil, err
	}
	if n := proto.TemplatesBound(tpls); n > b.budget {
		return nil, templateSetTooLarge(id, n, b.budget)
	}
	return tpls, nil
}

// KvFind lists the keys with prefix if they fit in one answer.
func (b boundedStore) KvFind(ctx context.Context, id proto.Id, prefix string) ([]proto.KVItem, error) {
	if bf, ok := b.Store.(store.BoundedFinder); ok {
		// Stop reading at the budget: reading the rest of the tenant's
		// KV to refuse the answer would be work it is not charged for.
		items, over, err := bf.KvFindBounded(ctx, id, prefix, b.budget)
		if err != nil {
			return nil, err
		}
		if over {
			return nil, proto.Errorf(proto.CodeKVResultTooLarge,
				"the keys with prefix %q take more than the %d bytes one find may return (past it after %d keys; --mesophyll-max-frame minus %d); use a longer prefix",
				truncate(prefix, 64), b.budget, len(items), proto.FrameReserve)
		}
		return items, nil
	}
	items, err := b.Store.KvFind(ctx, id, prefix)
	if err != nil {
		return nil, err
	}
	if n := proto.KVItemsBound(items); n > b.budget {
		return nil, proto.Errorf(proto.CodeKVResultTooLarge,
			"the %d keys with prefix %q hold about %d bytes, over the %d bytes one find may return (--mesophyll-max-frame minus %d); use a longer prefix",
			len(items), truncate(prefix, 64), n, b.budget, proto.FrameReserve)
	}
	return items, nil
}

// templateSetTooLarge is the error of a tenant's template set over budget.
func templateSetTooLarge(id proto.Id, size, budget int) *proto.Error {
	return proto.Errorf(proto.CodeTemplateTooLarge,
		"the templates of %s take %d bytes encoded, over the %d-byte limit of a tenant's template set (--mesophyll-max-frame minus %d); delete or shrink some",
		id, size, budget, proto.FrameReserve)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// fitsFrame refuses an event too large to be sent to a worker in one
// frame of maxFrame bytes.
func fitsFrame(ev proto.Event, maxFrame int64) error {
	if n, budget := worker.EventSize(ev), proto.ValueBudget(frameLimit(maxFrame)); n > int64(budget) {
		return proto.Errorf(proto.CodeTooLarge, "event is %d bytes, over the %d bytes a message to a worker may carry (--mesophyll-max-frame minus %d)",
			n, budget, proto.FrameReserve)
	}
	return nil
}
