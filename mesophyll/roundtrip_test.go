package mesophyll

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/templateworker/templateworker/proto"
)

func TestDispatchRoundTrips(t *testing.T) {
	h := newHarness(t, ServerOptions{})
	hd := newFakeHandler()
	hd.nowait = make(chan proto.Event, 1)
	_, c, _ := h.worker(0, hd)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	g := proto.GuildID(42)

	author := "99"
	ev := proto.Event{Name: "echo", Author: &author, Data: proto.Value(`{"n":[1,2,"x"]}`)}
	res, err := c.DispatchEvent(ctx, g, ev)
	if err != nil || string(res) != `{"n":[1,2,"x"]}` {
		t.Fatalf("DispatchEvent: %s, %v", res, err)
	}

	_, err = c.DispatchEvent(ctx, g, proto.Event{Name: "fail"})
	wantCode(t, err, proto.CodeScriptError)
	if pe := proto.AsError(err); pe.Message != "boom" || string(pe.Results) != `{"a":1}` {
		t.Fatalf("script error lost its details: %+v", pe)
	}

	res, err = c.RunScript(ctx, g, "adhoc", "return 1", proto.Event{Name: "Run"})
	if err != nil {
		t.Fatal(err)
	}
	var rs map[string]string
	if err := json.Unmarshal(res, &rs); err != nil || rs["tenant"] != "guild:42" || rs["name"] != "adhoc" || rs["code"] != "return 1" || rs["event"] != "Run" {
		t.Fatalf("RunScript: %s, %v", res, err)
	}

	if err := c.DropTenant(ctx, g); err != nil {
		t.Fatal(err)
	}
	hd.mu.Lock()
	dropped := hd.dropped
	hd.mu.Unlock()
	if len(dropped) != 1 || dropped[0] != g {
		t.Fatalf("dropped %v, want [%v]", dropped, g)
	}
	if err := c.DropAll(ctx); err != nil {
		t.Fatal(err)
	}
	hd.mu.Lock()
	droppedAll := hd.droppedAll
	hd.mu.Unlock()
	if droppedAll != 1 {
		t.Fatalf("DropAll reached the handler %d times, want 1", droppedAll)
	}

	if err := c.DispatchEventNoWait(g, proto.Event{Name: "nowait", Data: proto.Value(`5`)}, 0); err == nil {
		t.Fatal("nowait event with seq 0 accepted")
	}
	if err := c.DispatchEventNoWait(g, proto.Event{Name: "nowait", Data: proto.Value(`5`)}, 17); err != nil {
		t.Fatal(err)
	}
	if got := <-hd.nowait; string(got.Data) != "5" {
		t.Fatalf("nowait event data %s", got.Data)
	}
	select {
	case seq := <-h.acks:
		if seq != 17 {
			t.Fatalf("Ack seq %d, want 17", seq)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no Ack")
	}
	if n := c.InFlight(); n != 0 {
		t.Fatalf("InFlight %d after every call finished", n)
	}

	// An event whose data is not JSON is refused before it is sent.
	_, err = c.DispatchEvent(ctx, g, proto.Event{Name: "echo", Data: proto.Value(`{bad`)})
	wantCode(t, err, proto.CodeBadRequest)
	if _, err := c.DispatchEvent(ctx, g, proto.Event{Name: "Ping"}); err != nil {
		t.Fatalf("connection broken by a refused event: %v", err)
	}
}

func TestStoreRoundTrips(t *testing.T) {
	h := newHarness(t, ServerOptions{})
	g := proto.GuildID(7)
	now := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	h.backend.templates[g] = []proto.Template{{Name: "a", Code: "return 1", Events: []string{"Ping"}, UpdatedAt: now}}
	h.backend.tenantsOf[1] = []proto.Id{proto.GuildID(1), proto.UserID(2)}
	cl, _, _ := h.worker(1, newFakeHandler())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	tpls, err := cl.Templates(ctx, g)
	if err != nil || !reflect.DeepEqual(tpls, h.backend.templates[g]) {
		t.Fatalf("Templates: %+v, %v", tpls, err)
	}
	if tpls, err := cl.Templates(ctx, proto.GuildID(8)); err != nil || len(tpls) != 0 {
		t.Fatalf("Templates of a tenant without any: %+v, %v", tpls, err)
	}
	ids, err := cl.TenantsFor(ctx, "OnStartup")
	if err != nil || !reflect.DeepEqual(ids, h.backend.tenantsOf[1]) {
		t.Fatalf("TenantsFor: %v, %v (the master must pass the worker id)", ids, err)
	}
	_, err = cl.TenantsWithEvent(ctx, "Other")
	wantCode(t, err, proto.CodeBadRequest)

	if v, found, err := cl.KvGet(ctx, g, "count"); err != nil || found || v != nil {
		t.Fatalf("KvGet of a missing key: %s %v %v", v, found, err)
	}
	if err := cl.KvSet(ctx, g, "count", json.RawMessage(`{"n":3}`)); err != nil {
		t.Fatal(err)
	}
	if err := cl.KvSet(ctx, g, "other", json.RawMessage(`"x"`)); err != nil {
		t.Fatal(err)
	}
	if v, found, err := cl.KvGet(ctx, g, "count"); err != nil || !found || string(v) != `{"n":3}` {
		t.Fatalf("KvGet: %s %v %v", v, found, err)
	}
	items, err := cl.KvFind(ctx, g, "cou")
	if err != nil || len(items) != 1 || items[0].Key != "count" || string(items[0].Value) != `{"n":3}` {
		t.Fatalf("KvFind: %+v %v", items, err)
	}
	if err := cl.KvDelete(ctx, g, "count"); err != nil {
		t.Fatal(err)
	}
	if _, found, err := cl.KvGet(ctx, g, "count"); err != nil || found {
		t.Fatalf("KvGet after delete: %v %v", found, err)
	}

	// Backend errors keep their code; others become store_unavailable.
	wantCode(t, cl.KvSet(ctx, g, "quota", json.RawMessage(`1`)), proto.CodeKVQuotaExceeded)
	wantCode(t, cl.KvDelete(ctx, g, "invalid"), proto.CodeInvalidKV)
	_, _, err = cl.KvGet(ctx, g, "down")
	wantCode(t, err, proto.CodeStoreUnavailable)
	_, err = cl.KvFind(ctx, g, "down")
	wantCode(t, err, proto.CodeStoreUnavailable)
}

func TestNoHeadOfLineBlocking(t *testing.T) {
	h := newHarness(t, ServerOptions{})
	hd := newFakeHandler()
	cl, c, _ := h.worker(0, hd)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	g := proto.GuildID(1)

	slowDispatch := make(chan error, 1)
	go func() {
		_, err := c.DispatchEvent(ctx, g, proto.Event{Name: "slow"})
		slowDispatch <- err
	}()
	slowStore := make(chan error, 1)
	go func() {
		_, _, err := cl.KvGet(ctx, g, "slow")
		slowStore <- err
	}()

	waitFor(t, func() bool { return c.InFlight() == 1 && cl.link.inFlight() == 1 })

	// While both slow calls are in flight, many others complete.
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 100 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			data := proto.Value(fmt.Sprintf(`{"i":%d}`, i))
			res, err := c.DispatchEvent(ctx, g, proto.Event{Name: "echo", Data: data})
			if err == nil && string(res) != string(data) {
				err = fmt.Errorf("response %s to request %s", res, data)
			}
			errs <- err
		}()
		go func() {
			defer wg.Done()
			key := fmt.Sprintf("k%d", i)
			err := cl.KvSet(ctx, g, key, json.RawMessage(fmt.Sprint(i)))
			if err == nil {
				var v json.RawMessage
				v, _, err = cl.KvGet(ctx, g, key)
				if err == nil && string(v) != fmt.Sprint(i) {
					err = fmt.Errorf("KvGet %s = %s", key, v)
				}
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-slowDispatch:
		t.Fatalf("slow dispatch finished early: %v", err)
	case err := <-slowStore:
		t.Fatalf("slow store call finished early: %v", err)
	default:
	}
	if n := c.InFlight(); n != 1 {
		t.Fatalf("InFlight %d, want 1 (the slow dispatch)", n)
	}
	close(hd.release)
	close(h.backend.release)
	if err := <-slowDispatch; err != nil {
		t.Fatal(err)
	}
	if err := <-slowStore; err != nil {
		t.Fatal(err)
	}
}

func TestContextTimeout(t *testing.T) {
	h := newHarness(t, ServerOptions{})
	hd := newFakeHandler()
	cl, c, _ := h.worker(0, hd)
	g := proto.GuildID(1)

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.DispatchEvent(ctx, g, proto.Event{Name: "slow"})
	wantCode(t, err, proto.CodeTimeout)
	if n := c.InFlight(); n != 0 {
		t.Fatalf("InFlight %d after a timeout: pending entry kept", n)
	}
	_, _, err = cl.KvGet(ctx, g, "slow")
	wantCode(t, err, proto.CodeTimeout)
	if n := cl.link.inFlight(); n != 0 {
		t.Fatalf("client has %d pending store calls after a timeout", n)
	}

	// The late response is dropped and the connection keeps working.
	close(hd.release)
	close(h.backend.release)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	if res, err := c.DispatchEvent(ctx2, g, proto.Event{Name: "Ping"}); err != nil || string(res) != `{"ok":true}` {
		t.Fatalf("after a timeout: %s %v", res, err)
	}
}

func TestConnectionLossFailsCalls(t *testing.T) {
	h := newHarness(t, ServerOptions{})
	hd := newFakeHandler()
	cl, c, served := h.worker(0, hd)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	g := proto.GuildID(1)

	results := make(chan error, 3)
	for range 3 {
		go func() {
			_, err := c.DispatchEvent(ctx, g, proto.Event{Name: "slow"})
			results <- err
		}()
	}
	waitFor(t, func() bool { return c.InFlight() == 3 })
	storeResult := make(chan error, 1)
	go func() {
		_, _, err := cl.KvGet(ctx, g, "slow")
		storeResult <- err
	}()
	waitFor(t, func() bool { return cl.link.inFlight() == 1 })

	cl.Close() // the worker goes away with calls in flight
	for range 3 {
		wantCode(t, <-results, proto.CodeWorkerUnavailable)
	}
	wantCode(t, <-storeResult, proto.CodeStoreUnavailable)
	if err := <-served; err == nil {
		t.Fatal("Serve returned nil after the connection was lost")
	}
	h.waitDisconnected(0)
	_, err := c.DispatchEvent(ctx, g, proto.Event{Name: "Ping"})
	wantCode(t, err, proto.CodeWorkerUnavailable)
	if err := c.DispatchEventNoWait(g, proto.Event{Name: "Ping"}, 1); proto.CodeOf(err) != proto.CodeWorkerUnavailable {
		t.Fatalf("nowait on a closed connection: %v", err)
	}
	if h.srv.Conn(0) != nil {
		t.Fatal("Server.Conn returns a closed connection")
	}
}

func TestMasterCloseFailsCalls(t *testing.T) {
	h := newHarness(t, ServerOptions{})
	_, c, served := h.worker(0, newFakeHandler())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	result := make(chan error, 1)
	go func() {
		_, err := c.DispatchEvent(ctx, proto.GuildID(1), proto.Event{Name: "slow"})
		result <- err
	}()
	waitFor(t, func() bool { return c.InFlight() == 1 })
	c.Close("test")
	wantCode(t, <-result, proto.CodeWorkerUnavailable)
	if err := <-served; err == nil {
		t.Fatal("Serve returned nil although the master closed without Shutdown")
	}
}

func TestShutdown(t *testing.T) {
	h := newHarness(t, ServerOptions{})
	hd := newFakeHandler()
	_, c, served := h.worker(0, hd)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	g := proto.GuildID(1)

	slow := make(chan error, 1)
	go func() {
		_, err := c.DispatchEvent(ctx, g, proto.Event{Name: "slow"})
		slow <- err
	}()
	waitFor(t, func() bool { return c.InFlight() == 1 })
	if err := c.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	// Requests after Shutdown are refused; the one in flight finishes.
	_, err := c.DispatchEvent(ctx, g, proto.Event{Name: "Ping"})
	wantCode(t, err, proto.CodeShuttingDown)
	select {
	case err := <-served:
		t.Fatalf("Serve returned %v before the request in flight finished", err)
	default:
	}
	close(hd.release)
	if err := <-slow; err != nil {
		t.Fatalf("request in flight at Shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve after Shutdown: %v", err)
	}
	if err := h.waitDisconnected(0); err != nil {
		t.Fatalf("OnDisconnect after Shutdown: %v", err)
	}
}

// waitFor polls cond until it holds, failing after a generous minute.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition never held")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestStoreConcurrencyBound(t *testing.T) {
	const beat = 200 * time.Millisecond
	h := newHarness(t, ServerOptions{HeartbeatInterval: beat})
	cl, c, _ := h.worker(0, newFakeHandler())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	g := proto.GuildID(1)

	const n = storeConcurrency + 6
	errs := make(chan error, n)
	for range n {
		go func() {
			_, _, err := cl.KvGet(ctx, g, "slow")
			errs <- err
		}()
	}
	waitFor(t, func() bool { return h.backend.slow.Load() == storeConcurrency && cl.link.inFlight() == n })
	// Reading waits for a free slot longer than 3 heartbeat intervals: the
	// worker is not hung for that. (While reading waits, the worker's
	// heartbeats are not read either, so only the clock can count the
	// intervals; waiting longer on a busy machine only makes the check
	// stricter.)
	time.Sleep(4 * beat)
	select {
	case id := <-h.hung:
		t.Fatalf("worker %d reported hung while the master's store was slow", id)
	default:
	}
	close(h.backend.release)
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if m := h.backend.maxSlow.Load(); m > storeConcurrency {
		t.Fatalf("%d store requests ran at once, bound is %d", m, storeConcurrency)
	}
	if _, err := c.DispatchEvent(ctx, g, proto.Event{Name: "Ping"}); err != nil {
		t.Fatal(err)
	}
}
