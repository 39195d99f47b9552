package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/templateworker/templateworker/proto"
)

const greetLua = `local event, ctx = ...
local n = (ctx.kv.get("count") or 0) + 1
ctx.kv.set("count", n)
return {hello = event.data.who, count = n}
`

// TestThreadMasterEndToEnd drives a real master in thread mode only
// through the CLI and the HTTP API, restarts it and reads the KV back.
func TestThreadMasterEndToEnd(t *testing.T) {
	m := startMaster(t, "", "--thread-workers", "2")
	dir := t.TempDir()
	src := filepath.Join(dir, "greet.lua")
	if err := os.WriteFile(src, []byte(greetLua), 0o600); err != nil {
		t.Fatal(err)
	}
	tenant := "guild:1234567890123456789"
	if out, errOut, code := m.cli("template", "put", "--tenant", tenant, "--name", "greet", "--events", "Ping", src); code != 0 {
		t.Fatalf("template put: %d %s %s", code, out, errOut)
	}
	out, errOut, code := m.cli("dispatch", "--tenant", tenant, "--event", "Ping", "--data", `{"who":"ops"}`)
	if code != 0 || strings.TrimSpace(out) != `{"greet":{"count":1,"hello":"ops"}}` {
		t.Fatalf("dispatch: code %d out %q err %q", code, out, errOut)
	}
	// Unregistered event: null.
	out, _, code = m.cli("dispatch", "--tenant", tenant, "--event", "Nobody")
	if code != 0 || strings.TrimSpace(out) != "null" {
		t.Fatalf("unregistered dispatch: %d %q", code, out)
	}
	// Nowait through HTTP: 202, then the count moves.
	resp := m.do(t, "POST", "/v1/tenants/guild/1234567890123456789/events?wait=false", `{"name":"Ping","author":null,"data":{"who":"bg"}}`)
	if resp.status != 202 || !strings.HasPrefix(resp.body, `{"accepted":true,"id":"`) {
		t.Fatalf("nowait: %d %s", resp.status, resp.body)
	}
	waitFor(t, 10*time.Second, func() bool {
		out, _, _ := m.cli("kv", "list", "--tenant", tenant)
		return strings.Contains(out, `"value": 2`)
	})
	// run via stdin.
	cmdOut, errOut, code := m.cliStdin("return {tenant = select(2, ...).tenant.id, two = 1 + 1}", "run", "--tenant", tenant, "-")
	if code != 0 || strings.TrimSpace(cmdOut) != `{"tenant":"1234567890123456789","two":2}` {
		t.Fatalf("run: %d %q %q", code, cmdOut, errOut)
	}
	if _, errOut, code := m.cli("drop", "--tenant", tenant); code != 0 {
		t.Fatalf("drop: %s", errOut)
	}
	out, _, code = m.cli("workers", "--json")
	if code != 0 || !strings.Contains(out, `"state": "running"`) {
		t.Fatalf("workers: %s", out)
	}
	// Errors are one line and exit 1.
	_, errOut, code = m.cli("dispatch", "--tenant", "guild:abc", "--event", "Ping")
	if code != 1 || !strings.Contains(errOut, "bad --tenant") || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
		t.Fatalf("bad tenant: %d %q", code, errOut)
	}
	bad := filepath.Join(dir, "bad.lua")
	os.WriteFile(bad, []byte("return (\n"), 0o600)
	_, errOut, code = m.cli("template", "put", "--tenant", tenant, "--name", "bad", "--events", "Ping", bad)
	if code != 1 || !strings.Contains(errOut, "compile_error") || !strings.Contains(errOut, "bad:") {
		t.Fatalf("compile error: %d %q", code, errOut)
	}

	// Restart: templates and KV are still there.
	m.stop(syscall.SIGTERM)
	m2 := startMaster(t, m.dataDir, "--thread-workers", "2")
	out, _, code = m2.cli("dispatch", "--tenant", tenant, "--event", "Ping", "--data", `{"who":"again"}`)
	if code != 0 || strings.TrimSpace(out) != `{"greet":{"count":3,"hello":"again"}}` {
		t.Fatalf("after restart: %d %q", code, out)
	}
}

// TestHTTPErrors checks the API's error answers for bad input.
func TestHTTPErrors(t *testing.T) {
	m := startMaster(t, "", "--thread-workers", "1")
	cases := []struct {
		method, path, body string
		noAuth             bool
		status             int
		code               string
	}{
		{"GET", "/v1/workers", "", true, 401, "unauthorized"},
		{"POST", "/v1/tenants/guild/1/events", `{"name":`, false, 400, "bad_request"},
		{"POST", "/v1/tenants/guild/x1/events", `{"name":"Ping"}`, false, 400, "bad_request"},
		{"POST", "/v1/tenants/channel/1/events", `{"name":"Ping"}`, false, 400, "bad_request"},
		{"POST", "/v1/tenants/guild/1/events", `{"name":""}`, false, 400, "bad_request"},
		{"POST", "/v1/tenants/guild/1/events", `{"name":"Ping","extra":1}`, false, 400, "bad_request"},
		{"POST", "/v1/tenants/guild/1/events?wait=maybe", `{"name":"Ping"}`, false, 400, "bad_request"},
		{"PUT", "/v1/tenants/guild/1/templates/bad%20name", `{"code":"return 1","events":[]}`, false, 400, "bad_request"},
		{"PUT", "/v1/tenants/guild/1/templates/ok", `{"events":[]}`, false, 400, "bad_request"},
		{"PUT", "/v1/tenants/guild/1/templates/ok", `{"code":"return (","events":["A"]}`, false, 400, "compile_error"},
		{"DELETE", "/v1/tenants/guild/1/templates/missing", ``, false, 404, "not_found"},
		{"GET", "/v1/nothing", ``, false, 404, "not_found"},
		{"GET", "/v1/tenants/guild/1/events", ``, false, 405, "method_not_allowed"},
		{"PATCH", "/v1/tenants/guild/1/templates/x", `{}`, false, 405, "method_not_allowed"},
		{"POST", "/v1/tenants/guild/1/events", `{"name":"Ping","data":"` + strings.Repeat("x", 1<<20) + `"}`, false, 400, "request_too_large"},
		{"POST", "/v1/tenants/guild/1/scripts", `{"code":"error('boom')"}`, false, 422, "script_error"},
	}
	for _, c := range cases {
		r := m.doAuth(t, c.method, c.path, c.body, !c.noAuth)
		var e struct {
			Error proto.Error `json:"error"`
		}
		if r.status != c.status || json.Unmarshal([]byte(r.body), &e) != nil || e.Error.Code != c.code || e.Error.Message == "" {
			t.Errorf("%s %s: got %d %s; want %d %s", c.method, c.path, r.status, tail(r.body, 200), c.status, c.code)
		}
	}
	if r := m.doAuth(t, "GET", "/healthz", "", false); r.status != 200 {
		t.Errorf("healthz %d", r.status)
	}
	if r := m.doAuth(t, "GET", "/readyz", "", false); r.status != 200 {
		t.Errorf("readyz %d %s", r.status, r.body)
	}
}

type httpResult struct {
	status int
	body   string
	header http.Header
}

func (m *runningMaster) do(t *testing.T, method, path, body string) httpResult {
	return m.doAuth(t, method, path, body, true)
}

func (m *runningMaster) doAuth(t *testing.T, method, path, body string, auth bool) httpResult {
	t.Helper()
	return m.doWithin(t, 30*time.Second, method, path, body, auth)
}

// doWithin is doAuth with the request's own time limit.
func (m *runningMaster) doWithin(t *testing.T, limit time.Duration, method, path, body string, auth bool) httpResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, method, m.addr+path, strings.NewReader(body))
	if auth {
		req.Header.Set("Authorization", "Bearer "+m.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return httpResult{status: resp.StatusCode, body: strings.TrimSpace(string(b)), header: resp.Header}
}

func waitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
