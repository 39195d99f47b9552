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
	if err := vm.pushTemplate(t); err != nil {
		return nil, err
	}
	return vm.callPushed(ctx, ev)
}

// runCode compiles code (not cached) and runs it like a template.
func (vm *VM) runCode(ctx context.Context, name, code string, ev proto.Event) (proto.Value, error) {
	if vm.broken {
		return nil, proto.Errorf(proto.CodeTenantBroken, "tenant %s VM was dropped", vm.tenant)
	}
	if err := vm.load(name, code); err != nil {
		return nil, err
	}
	return vm.callPushed(ctx, ev)
}

// callPushed calls the function on top of the stack with (event, ctx).
func (vm *VM) callPushed(ctx context.Context, ev proto.Event) (proto.Value, error) {
	l := vm.l
	base := l.Top() - 1
	defer l.SetTop(base)
	if err := vm.pushEvent(ev); err != nil {
		return nil, proto.Errorf(proto.CodeBadRequest, "event: %v", err)
	}
	l.RawGetValue(lua.RegistryIndex, ctxKeyValue)
	vm.begin(ctx)
	err := vm.invoke(2)
	if err == nil {
		var b []byte
		b, err = encodeJSON(l, -1, vm.limits.MaxString)
		if err != nil {
			err = errors.New("result cannot be encoded as JSON: " + err.Error())
		} else {
			vm.end()
			return b, nil
		}
	}
	vm.end()
	return nil, err
}

// Registry keys under which newVM keeps the event table's field names.
var (
	eventKeyName   any = "templateworker.key.name"
	eventKeyAuthor any = "templateworker.key.author"
	eventKeyData   any = "templateworker.key.data"
)

// registerEventKeys keeps the event table's field names in the registry,
// so that pushEvent pushes them without allocating.
func registerEventKeys(l *lua.State) {
	for _, k := range [...]struct {
		key  any
		name string
	}{{eventKeyName, "name"}, {eventKeyAuthor, "author"}, {eventKeyData, "data"}} {
		l.PushString(k.name)
		l.SetField(lua.RegistryIndex, k.key.(string))
	}
}

// pushEvent pushes the event table {name=, author=, data=}.
func (vm *VM) pushEvent(ev proto.Event) error {
	l := vm.l
	l.CreateTable(0, 3)
	// The keys come boxed from the registry: PushString would allocate
	// each one again on every call.
	l.RawGetValue(lua.RegistryIndex, eventKeyName)
	l.PushString(ev.Name)
	l.RawSet(-3)
	if ev.Author != nil {
		l.RawGetValue(lua.RegistryIndex, eventKeyAuthor)
		l.PushString(*ev.Author)
		l.RawSet(-3)
	}
	l.RawGetValue(lua.RegistryIndex, eventKeyData)
	if err := pushJSON(l, ev.Data); err != nil {
		l.Pop(2)
		return err
	}
	l.RawSet(-3)
	return nil
}
