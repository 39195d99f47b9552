package master

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/store"
	"github.com/templateworker/templateworker/worker"
)

// httpClients is the number of concurrent keep-alive clients of the HTTP
// benchmarks, whatever GOMAXPROCS is (see setCallers).
const httpClients = 64

// httpTenants spread the HTTP load over both workers.
const httpTenants = 64

// echoTemplate is the template the HTTP benchmarks dispatch to.
const echoTemplate = `local event = ... return { hello = event.data.who }`

// constBody is what the floor server answers: the same shape as a
// dispatch result.
var constBody = []byte(`{"result":{"echo":{"hello":"ops"}}}` + "\n")

// serveLoopback serves h on 127.0.0.1:0 until b ends and returns its URL.
func serveLoopback(b *testing.B, h http.Handler) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}

// benchHTTP posts an event to path(i) from httpClients concurrent
// keep-alive clients and reports requests/s.
func benchHTTP(b *testing.B, base, token string, path func(i int) string) {
	tr := &http.Transport{MaxIdleConns: httpClients, MaxIdleConnsPerHost: httpClients, MaxConnsPerHost: httpClients}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	body := []byte(`{"name":"Ping","author":null,"data":{"who":"ops"}}`)
	post := func(i int) error { return postEvent(client, base+path(i), token, body) }
	for i := range httpTenants { // load every tenant, open connections
		if err := post(i); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	callers := setCallers(b, httpClients)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			if err := post(i); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
	b.ReportMetric(float64(callers), "callers")
}

// postEvent posts body to url with the bearer token and checks that the
// answer is constBody.
func postEvent(client *http.Client, url, token string, body []byte) error {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, constBody) {
		return fmt.Errorf("status %d: %s", resp.StatusCode, got)
	}
	return nil
}

// BenchmarkHTTPConst is the HTTP floor: a net/http server answering every
// request with a constant JSON body, after reading the request body.
func BenchmarkHTTPConst(b *testing.B) {
	base := serveLoopback(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(constBody)))
		_, _ = w.Write(constBody)
	}))
	benchHTTP(b, base, "", func(int) string { return "/" })
}

// httpTenant is the i-th tenant of the HTTP benchmarks; consecutive
// tenants go to different workers.
func httpTenant(i int) proto.Id { return proto.GuildID(uint64(i%httpTenants+1) << 22) }

// BenchmarkHTTPDispatch is POST /v1/tenants/{tenant}/events through the
// real API (token check, JSON decode, quarantine, metrics, dispatch,
// JSON reply) over the SQLite store, thread and process topologies with 2
// workers.
func BenchmarkHTTPDispatch(b *testing.B) {
	for _, topo := range []struct {
		name  string
		start func(b *testing.B, st store.Store) *Pool
	}{
		{"thread", func(b *testing.B, st store.Store) *Pool {
			p, err := newThreadPool(2, worker.Options{Store: threadStore(st, nil, 0), Logger: zerolog.Nop(), NoStartup: true})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = p.Kill(context.Background()) })
			return p
		}},
		{"process", func(b *testing.B, st store.Store) *Pool {
			return startBenchPool(b, st, benchProcessConfig(b)).Pool
		}},
	} {
		b.Run(topo.name, func(b *testing.B) {
			st := openTestStore(b)
			for i := range httpTenants {
				put(b, st, httpTenant(i), "echo", echoTemplate, "Ping")
			}
			pool := topo.start(b, st)
			q := NewQuarantine(3, time.Minute)
			api := &API{
				Store: st, Workers: pool, Quarantine: q, Metrics: NewMetrics(topo.name, pool, q),
				Token: "bench-token", CallTimeout: 10 * time.Second, Log: zerolog.Nop(),
			}
			base := serveLoopback(b, api.Handler())
			benchHTTP(b, base, api.Token, func(i int) string {
				id := httpTenant(i)
				return "/v1/tenants/guild/" + strconv.FormatUint(id.ID, 10) + "/events"
			})
		})
	}
}
