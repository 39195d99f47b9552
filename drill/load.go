package drill

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/templateworker/templateworker/client"
	"github.com/templateworker/templateworker/proto"
)

// TemplateName and EventName are what the drill installs on its tenants.
const (
	TemplateName = "drill"
	EventName    = "DrillPing"
)

// templateCode writes one KV key per event, so that executed nowait
// events can be counted, and returns the key.
const templateCode = `local event, ctx = ...
ctx.kv.set(event.data.key, event.data.mode)
return event.data.key
`

// keyPrefix is the prefix of a run's KV keys.
func keyPrefix(runID string) string { return "drill:" + runID + ":" }

// load sends a light, bounded dispatch load: calls alternate between
// waited and nowait and go round-robin over the workers' tenants.
type load struct {
	api         *client.Client
	tenants     [][]proto.Id // by worker
	runID       string
	target      int // the worker being killed
	rps         int
	maxCalls    int
	callTimeout time.Duration

	wg       sync.WaitGroup
	mu       sync.Mutex
	sent     int
	failed   int
	failedOn map[int]int // by worker
	codes    map[failure]int
	accepted map[proto.Id][]string
	nAccept  int
}

func newLoad(api *client.Client, tenants [][]proto.Id, runID string, target, rps, maxCalls int) *load {
	return &load{
		api: api, tenants: tenants, runID: runID, target: target, rps: rps, maxCalls: maxCalls,
		callTimeout: 15 * time.Second,
		failedOn:    make(map[int]int),
		codes:       make(map[failure]int),
		accepted:    make(map[proto.Id][]string),
	}
}

// run sends calls at rps until stop is closed, ctx ends or maxCalls were
// sent, then waits for the calls in flight (each bounded by callTimeout).
func (l *load) run(ctx context.Context, stop <-chan struct{}) {
	n := len(l.tenants)
	// At most this many calls in flight: a stopped worker holds its calls
	// until the master notices, and the load must not pile up behind it.
	sem := make(chan struct{}, 4*l.rps+32)
	tick := time.NewTicker(time.Second / time.Duration(l.rps))
	defer tick.Stop()
	defer l.wg.Wait()
	for i := 0; i < l.maxCalls; i++ {
		select {
		case <-tick.C:
		case <-stop:
			return
		case <-ctx.Done():
			return
		}
		select {
		case sem <- struct{}{}:
		case <-stop:
			return
		case <-ctx.Done():
			return
		}
		w := i % n
		round := i / n
		id := l.tenants[w][(round/2)%len(l.tenants[w])]
		wait := round%2 == 0
		key := keyPrefix(l.runID) + strconv.Itoa(i)
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer func() { <-sem }()
			l.call(ctx, w, id, key, wait)
		}()
	}
}

// call sends one event and records its outcome.
func (l *load) call(ctx context.Context, w int, id proto.Id, key string, wait bool) {
	mode := "nowait"
	if wait {
		mode = "wait"
	}
	data, _ := json.Marshal(map[string]string{"key": key, "mode": mode})
	ev := proto.Event{Name: EventName, Data: proto.Value(data)}
	ctx, cancel := context.WithTimeout(ctx, l.callTimeout)
	defer cancel()
	var err error
	if wait {
		var v proto.Value
		v, err = l.api.Dispatch(ctx, id, ev)
		if err == nil {
			err = checkResult(v, key)
		}
	} else {
		err = l.api.DispatchNoWait(ctx, id, ev)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sent++
	if err == nil {
		if !wait {
			l.accepted[id] = append(l.accepted[id], key)
			l.nAccept++
		}
		return
	}
	l.failed++
	l.failedOn[w]++
	l.codes[failure{w, errorCode(ctx, err)}]++
}

// failure is a kind of failed call: on which worker, with which code.
type failure struct {
	worker int
	code   string
}

// checkResult checks a waited call's result: {"drill": key}.
func checkResult(v proto.Value, key string) error {
	var out map[string]string
	if err := json.Unmarshal(v, &out); err != nil || out[TemplateName] != key {
		return &proto.Error{Code: "bad_result", Message: fmt.Sprintf("want {%q: %q}, got %s", TemplateName, key, v)}
	}
	return nil
}

// errorCode names the kind of a failed call: the API's error code, or
// client_timeout / transport for calls that got no answer.
func errorCode(ctx context.Context, err error) string {
	var pe *proto.Error
	switch {
	case errors.As(err, &pe):
		return pe.Code
	case ctx.Err() != nil:
		return "client_timeout"
	}
	return "transport"
}

// stats is a snapshot of the load's counters.
type stats struct {
	sent, failed, failedOther, unexpectedOnTarget, accepted int
	codes                                                   []string // "worker N: code xK", sorted
}

func (l *load) stats() stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := stats{sent: l.sent, failed: l.failed, accepted: l.nAccept}
	for w, n := range l.failedOn {
		if w != l.target {
			s.failedOther += n
		}
	}
	for f, n := range l.codes {
		s.codes = append(s.codes, fmt.Sprintf("worker %d: %s x%d", f.worker, f.code, n))
		if f.worker == l.target && f.code != proto.CodeWorkerUnavailable {
			s.unexpectedOnTarget += n
		}
	}
	sort.Strings(s.codes)
	return s
}

// executed counts the accepted nowait events whose KV key exists, polling
// until all are there or ctx ends.
func (l *load) executed(ctx context.Context) (int, error) {
	l.mu.Lock()
	accepted := make(map[proto.Id][]string, len(l.accepted))
	for id, keys := range l.accepted {
		accepted[id] = append([]string(nil), keys...)
	}
	total := l.nAccept
	l.mu.Unlock()

	for {
		done := 0
		for id, keys := range accepted {
			items, err := l.api.KV(ctx, id, keyPrefix(l.runID))
			if err != nil {
				if ctx.Err() != nil {
					return done, nil
				}
				return done, fmt.Errorf("count executed events of %s: %w", id, err)
			}
			have := make(map[string]bool, len(items))
			for _, it := range items {
				have[it.Key] = true
			}
			for _, k := range keys {
				if have[k] {
					done++
				}
			}
		}
		if done >= total {
			return done, nil
		}
		select {
		case <-ctx.Done():
			return done, nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}
