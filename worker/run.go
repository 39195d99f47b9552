package worker

import (
	"context"
	"errors"

	lua "github.com/Shopify/go-lua"

	"github.com/templateworker/templateworker/proto"
)

// runTemplate runs one compiled template with (event, ctx) and returns its
// first result as JSON.
func (vm *VM) runTemplate(ctx context.Context, t *proto.Template, ev proto.Event) (proto.Value, error) {
	if vm.broken {
		return nil, proto.Errorf(proto.CodeTenantBroken, "tenant %s VM was dropped", vm.tenant)
	}
	vm.begin(ctx) // compiling is charged to the call
	if err := vm.pushTemplate(t); err != nil {
		vm.end()
		return nil, err
	}
	return vm.callPushed(ctx, ev)
}

// runCode compiles code (not cached) and runs it like a template.
func (vm *VM) runCode(ctx context.Context, name, code string, ev proto.Event) (proto.Value, error) {
	if vm.broken {
		return nil, proto.Errorf(proto.CodeTenantBroken, "tenant %s VM was dropped", vm.tenant)
	}
	vm.begin(ctx) // compiling is charged to the call
	if err := vm.load(name, code); err != nil {
		vm.end()
		return nil, err
	}
	return vm.callPushed(ctx, ev)
}

// callPushed calls the function on top of the stack with (event, ctx),
// within the budget that begin started.
func (vm *VM) callPushed(ctx context.Context, ev proto.Event) (proto.Value, error) {
	l := vm.l
	base := l.Top() - 1
	defer func() {
		l.SetTop(base)
		// The event, its data and the result stay in the stack slots above
		// the top until overwritten: an idle VM must not keep them.
		lua.ClearStale(l)
	}()
	// The call's budget (begun before compiling) covers decoding the
	// event and encoding the result too.
	if err := vm.pushEvent(ev); err != nil {
		vm.end()
		if a := vm.call.abort; a != nil {
			return nil, a
		}
		return nil, proto.Errorf(proto.CodeBadRequest, "event: %v", err)
	}
	l.RawGetValue(lua.RegistryIndex, ctxKeyValue)
	err := vm.invoke(2)
	if err == nil {
		var b []byte
		limit, byResult := vm.limits.MaxString, false
		if r := vm.limits.MaxResult; r > 0 && (limit <= 0 || r < limit) {
			limit, byResult = r, true
		}
		b, err = encodeJSON(l, -1, limit, vm.meterFn)
		switch {
		case vm.call.abort != nil:
			err = vm.call.abort
		case byResult && errors.Is(err, errTooLong):
			err = resultTooLarge(0, vm.limits.MaxResult)
		case err != nil:
			err = errors.New("result cannot be encoded as JSON: " + err.Error())
		case vm.limits.MaxResult > 0 && len(b) > vm.limits.MaxResult:
			err = resultTooLarge(len(b), vm.limits.MaxResult)
		default:
			vm.end()
			return b, nil
		}
	}
	vm.end()
	return nil, err
}

// resultTooLarge is the error of a result over --max-result; size 0 when
// encoding stopped at the limit.
func resultTooLarge(size, limit int) *proto.Error {
	if size == 0 {
		return proto.Errorf(proto.CodeResultTooLarge, "result is larger than the %d-byte limit (--max-result)", limit)
	}
	return proto.Errorf(proto.CodeResultTooLarge, "result is %d bytes, over the %d-byte limit (--max-result)", size, limit)
}

// The event table's field names, boxed once: PushString would allocate
// each one again on every call.
var (
	eventKeyName   = lua.BoxString("name")
	eventKeyAuthor = lua.BoxString("author")
	eventKeyData   = lua.BoxString("data")
	eventKeyID     = lua.BoxString("id")
)

// pushEvent pushes the event table {name=, author=, data=, id=}.
func (vm *VM) pushEvent(ev proto.Event) error {
	l := vm.l
	l.CreateTable(0, 3)
	l.PushBoxedString(eventKeyName)
	l.PushString(ev.Name)
	l.RawSet(-3)
	if ev.Author != nil {
		l.PushBoxedString(eventKeyAuthor)
		l.PushString(*ev.Author)
		l.RawSet(-3)
	}
	l.PushBoxedString(eventKeyData)
	if err := pushJSON(l, ev.Data, vm.meterFn); err != nil {
		l.Pop(2)
		return err
	}
	l.RawSet(-3)
	if ev.ID != "" {
		l.PushBoxedString(eventKeyID)
		l.PushString(ev.ID)
		l.RawSet(-3)
	}
	return nil
}
