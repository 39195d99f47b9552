package worker

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	lua "github.com/Shopify/go-lua"
	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
)

// Store is what a worker needs from durable storage. The master's
// store.Store satisfies it in thread mode; in process mode the Mesophyll
// client proxies it to the master.
type Store interface {
	// Templates lists a tenant's templates, ordered by name.
	Templates(ctx context.Context, tenant proto.Id) ([]proto.Template, error)
	// TenantsWithEvent lists the tenants subscribed to event.
	TenantsWithEvent(ctx context.Context, event string) ([]proto.Id, error)
	KvGet(ctx context.Context, tenant proto.Id, key string) (json.RawMessage, bool, error)
	KvSet(ctx context.Context, tenant proto.Id, key string, value json.RawMessage) error
	KvDelete(ctx context.Context, tenant proto.Id, key string) error
	KvFind(ctx context.Context, tenant proto.Id, prefix string) ([]proto.KVItem, error)
	EventStore
}

// storeTimeout bounds one store call made by a script when the call itself
// has no deadline.
const storeTimeout = 10 * time.Second

// openJSON installs, in the shared libraries being built in l, the json
// library: encode, decode, null, array.
func openJSON(l *lua.State) {
	lua.NewLibrary(l, []lua.RegistryFunction{
		{Name: "encode", Function: func(l *lua.State) int {
			vm := hostVM(l)
			lua.CheckAny(l, 1)
			b, err := encodeJSON(l, 1, vm.limits.MaxString, vm.meterFn)
			if err != nil {
				vm.jsonFailed(l, "json.encode: ", err)
			}
			l.PushString(string(b))
			return 1
		}},
		{Name: "decode", Function: func(l *lua.State) int {
			vm := hostVM(l)
			s := lua.CheckString(l, 1)
			l.SetTop(1)
			if err := pushJSON(l, []byte(s), vm.meterFn); err != nil {
				vm.jsonFailed(l, "json.decode: ", err)
			}
			return 1
		}},
		{Name: "array", Function: func(l *lua.State) int {
			if l.IsNoneOrNil(1) {
				l.SetTop(0)
				l.NewTable()
			}
			lua.CheckType(l, 1, lua.TypeTable)
			l.SetTop(1)
			markArray(l)
			return 1
		}},
	})
	l.PushLightUserData(jsonNull)
	l.SetField(-2, "null")
	l.SetGlobal("json")
}

// jsonFailed raises a JSON encoding or decoding error: the call's limit
// error when the work ran out of budget, else prefix and err.
func (vm *VM) jsonFailed(l *lua.State, prefix string, err error) {
	if a := vm.call.abort; a != nil {
		vm.raise(l, a.Message)
	}
	vm.raise(l, prefix+err.Error())
}

// openCtx builds the ctx table handed to every template: ctx.tenant, and
// ctx.kv and ctx.log (the shared tables, whose functions act for the VM
// running them, so for this VM's tenant). It is kept in the registry and
// passed as the second chunk argument.
func (vm *VM) openCtx(libs *libraries) {
	l := vm.l
	l.CreateTable(0, 3)
	// ctx.tenant
	l.CreateTable(0, 2)
	l.PushString(vm.tenant.Kind.String())
	l.SetField(-2, "type")
	l.PushString(strconv.FormatUint(vm.tenant.ID, 10))
	l.SetField(-2, "id")
	l.SetField(-2, "tenant")
	l.PushShared(libs.kv)
	l.SetField(-2, "kv")
	l.PushShared(libs.log)
	l.SetField(-2, "log")
	// ctx.events
	vm.openEvents()
	l.SetField(-2, "events")
	l.SetField(lua.RegistryIndex, ctxKey)
}

// kvLibrary is ctx.kv, shared by every VM.
var kvLibrary = []lua.RegistryFunction{
	{Name: "get", Function: func(l *lua.State) int { return hostVM(l).kvGet(l) }},
	{Name: "set", Function: func(l *lua.State) int { return hostVM(l).kvSet(l) }},
	{Name: "delete", Function: func(l *lua.State) int { return hostVM(l).kvDelete(l) }},
	{Name: "find", Function: func(l *lua.State) int { return hostVM(l).kvFind(l) }},
}

// logLibrary is ctx.log, shared by every VM.
var logLibrary = []lua.RegistryFunction{
	{Name: "info", Function: logAt(zerolog.InfoLevel)},
	{Name: "warn", Function: logAt(zerolog.WarnLevel)},
	{Name: "error", Function: logAt(zerolog.ErrorLevel)},
}

const ctxKey = "templateworker.ctx"

func logAt(level zerolog.Level) lua.Function {
	return func(l *lua.State) int {
		vm := hostVM(l)
		msg, _ := lua.ToStringMeta(l, 1)
		var m messageBuilder
		m.WriteString(msg)
		vm.emitLog(l, level, &m)
		return 0
	}
}

// storeCtx returns the context for a store call made by the script.
func (vm *VM) storeCtx() (context.Context, context.CancelFunc) {
	ctx := vm.call.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, storeTimeout)
}

// checkKey validates a KV key argument.
func (vm *VM) checkKey(l *lua.State, fn string) string {
	if l.TypeOf(1) != lua.TypeString {
		vm.raise(l, "ctx.kv."+fn+": key must be a string, got "+lua.TypeNameOf(l, 1))
	}
	key, _ := l.ToString(1)
	if len(key) == 0 || len(key) > proto.MaxKeyBytes {
		vm.raise(l, "ctx.kv."+fn+": key must be 1 to "+strconv.Itoa(proto.MaxKeyBytes)+" bytes, got "+strconv.Itoa(len(key)))
	}
	if !utf8.ValidString(key) || strings.IndexByte(key, 0) >= 0 {
		vm.raise(l, "ctx.kv."+fn+": key must be valid UTF-8 without NUL bytes")
	}
	return key
}

// storeFailed raises a store error as a Lua error, remembering it so an
// unhandled one reaches the caller with its own code.
func (vm *VM) storeFailed(l *lua.State, fn string, err error) {
	vm.hostFailed(l, "ctx.kv."+fn, err)
}

// storeBytesPerStep is how many bytes a store call carries (a value set,
// an answer read) per step charged to the call, besides the JSON work on
// them: the master reads or writes them in the store and both processes
// copy them through a Mesophyll frame, which costs about as much CPU per
// byte as a VM instruction (measured on 2 busy cores: 37-58 ns per byte
// for ctx.kv.find and ctx.kv.set loops, 40 ns or more per instruction).
const storeBytesPerStep = 1

// chargeStore charges a store call that carries n bytes.
func (vm *VM) chargeStore(l *lua.State, n int) {
	vm.charge(l, n/storeBytesPerStep)
}

// hostFailed is storeFailed for the host function named fn. An answer
// the master refused as over a frame (kv_result_too_large) is charged
// first, as a frame's worth of answer would be (Limits.StoreAnswer):
// a template looping over refused finds spends its budget as fast as one
// looping over the largest finds that fit, not the master's time for free.
func (vm *VM) hostFailed(l *lua.State, fn string, err error) {
	if proto.CodeOf(err) == proto.CodeKVResultTooLarge {
		vm.chargeStore(l, vm.limits.storeAnswer())
	}
	e := proto.AsError(err)
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		e = proto.Errorf(proto.CodeTimeout, "store call timed out")
	}
	if e.Code == proto.CodeInternal {
		e = proto.Errorf(proto.CodeStoreUnavailable, "%v", err)
	}
	if e.Code != proto.CodeInvalidKV && e.Code != proto.CodeBadRequest {
		// Infrastructure and quota failures keep their own code if the
		// script does not handle them; a bad argument is a script error.
		vm.call.hostErr = e
	}
	vm.raise(l, fn+": "+e.Code+": "+e.Message)
}

func (vm *VM) kvGet(l *lua.State) int {
	vm.charge(l, storeCallSteps)
	key := vm.checkKey(l, "get")
	ctx, cancel := vm.storeCtx()
	v, ok, err := vm.store.KvGet(ctx, vm.tenant, key)
	cancel()
	if err != nil {
		vm.storeFailed(l, "get", err)
	}
	if !ok {
		l.PushNil()
		return 1
	}
	vm.chargeStore(l, len(v))
	if err := pushJSON(l, v, vm.meterFn); err != nil {
		vm.jsonFailed(l, "ctx.kv.get: stored value is not valid JSON: ", err)
	}
	return 1
}

func (vm *VM) kvSet(l *lua.State) int {
	vm.charge(l, storeCallSteps)
	key := vm.checkKey(l, "set")
	if l.IsNone(2) {
		vm.raise(l, "ctx.kv.set: missing value (use ctx.kv.delete to remove a key)")
	}
	b, err := encodeJSON(l, 2, proto.MaxValueBytes+1, vm.meterFn)
	if err != nil && !errors.Is(err, errTooLong) {
		vm.jsonFailed(l, "ctx.kv.set: value cannot be stored: ", err)
	}
	if errors.Is(err, errTooLong) || len(b) > proto.MaxValueBytes {
		vm.raise(l, "ctx.kv.set: value is larger than "+strconv.Itoa(proto.MaxValueBytes)+" bytes encoded")
	}
	vm.chargeStore(l, len(key)+len(b))
	ctx, cancel := vm.storeCtx()
	err = vm.store.KvSet(ctx, vm.tenant, key, b)
	cancel()
	if err != nil {
		vm.storeFailed(l, "set", err)
	}
	return 0
}

func (vm *VM) kvDelete(l *lua.State) int {
	vm.charge(l, storeCallSteps)
	key := vm.checkKey(l, "delete")
	ctx, cancel := vm.storeCtx()
	err := vm.store.KvDelete(ctx, vm.tenant, key)
	cancel()
	if err != nil {
		vm.storeFailed(l, "delete", err)
	}
	return 0
}

func (vm *VM) kvFind(l *lua.State) int {
	vm.charge(l, storeCallSteps)
	prefix := lua.OptString(l, 1, "")
	ctx, cancel := vm.storeCtx()
	items, err := vm.store.KvFind(ctx, vm.tenant, prefix)
	cancel()
	if err != nil {
		vm.storeFailed(l, "find", err)
	}
	n := 0
	for i := range items {
		n += len(items[i].Key) + len(items[i].Value)
	}
	vm.chargeStore(l, n)
	l.CreateTable(len(items), 0)
	for i, it := range items {
		l.CreateTable(0, 2)
		l.PushString(it.Key)
		l.SetField(-2, "key")
		if err := pushJSON(l, it.Value, vm.meterFn); err != nil {
			vm.jsonFailed(l, "ctx.kv.find: stored value is not valid JSON: ", err)
		}
		l.SetField(-2, "value")
		l.RawSetInt(-2, i+1)
	}
	return 1
}
