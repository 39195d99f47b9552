package main

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/templateworker/templateworker/internal/pgtest"
	"github.com/templateworker/templateworker/internal/syncbuf"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/templateworker/templateworker/master"
	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/store"
)

// databaseURLEnv is how a master is given its database.
const databaseURLEnv = "TEMPLATEWORKER_DATABASE_URL"

// pgTestDatabase returns the test database URL and its password, skipping
// the test without one (failing it under CI=true, where it must run).
func pgTestDatabase(t *testing.T) (base, password string) {
	t.Helper()
	base = pgtest.URL(t)
	cfg, err := pgx.ParseConfig(base)
	if err != nil {
		t.Fatalf("parse %s: %v", pgtest.Env, store.RedactURL(err.Error()))
	}
	if cfg.Password == "" {
		// .ci/postgres.sh gives its role a password: in CI the redaction
		// checks must check something.
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s has no password: the redaction checks would prove nothing", pgtest.Env)
		}
		t.Logf("%s has no password: the redaction checks prove nothing", pgtest.Env)
	}
	return base, cfg.Password
}

// startPostgresMaster starts a master whose database URL is in its
// environment, never in its argv.
func startPostgresMaster(t *testing.T, dsn string, args ...string) *runningMaster {
	t.Helper()
	t.Setenv(databaseURLEnv, dsn)
	return startMaster(t, "", args...)
}

// noPassword fails the test when password appears in s.
func noPassword(t *testing.T, where, s, password string) {
	t.Helper()
	if password != "" && strings.Contains(s, password) {
		t.Fatalf("the database password appears in %s", where)
	}
}

// kvList reads a tenant's KV through `templateworker kv list`.
func (m *runningMaster) kvList(t *testing.T, id proto.Id) map[string]string {
	t.Helper()
	out, errOut, code := m.cli("kv", "list", "--tenant", "guild:"+strconv.FormatUint(id.ID, 10))
	if code != 0 {
		t.Fatalf("kv list: exit %d: %s", code, errOut)
	}
	var res struct {
		Items []proto.KVItem `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("kv list output %q: %v", out, err)
	}
	kv := map[string]string{}
	for _, it := range res.Items {
		kv[it.Key] = string(it.Value)
	}
	return kv
}

// TestPostgresMasterProcessWorkersRestart runs the real master with two
// process workers on PostgreSQL, writes KV from templates on both workers,
// restarts the master (with a new data dir: the state is in the database)
// and reads the KV back, through the CLI and through the templates.
func TestPostgresMasterProcessWorkersRestart(t *testing.T) {
	base, password := pgTestDatabase(t)
	dsn, _, _ := pgtest.Schema(t, base)
	m := startPostgresMaster(t, dsn, "--process-workers", "2")
	rows := m.waitReady(t)
	if len(rows) != 2 {
		t.Fatalf("want 2 workers, got %+v", rows)
	}
	for _, r := range rows {
		if v := procEnv(r.PID, databaseURLEnv); v != "" {
			t.Fatalf("worker %d has %s in its environment", r.ID, databaseURLEnv)
		}
		noPassword(t, fmt.Sprintf("the argv of worker %d", r.ID), strings.Join(procCmdline(r.PID), " "), password)
	}
	ctx := context.Background()
	salt := rand.Uint64N(1 << 20)
	tenants := []proto.Id{tenantOn(0, 2, salt), tenantOn(1, 2, salt)}
	for i, id := range tenants {
		if err := m.api.PutTemplate(ctx, id, "greet", greetLua, []string{"Ping"}); err != nil {
			t.Fatal(err)
		}
		for n := 1; n <= 2; n++ {
			who := fmt.Sprintf("w%d", i)
			v, err := m.api.Dispatch(ctx, id, proto.Event{Name: "Ping", Data: proto.Value(`{"who":"` + who + `"}`)})
			want := fmt.Sprintf(`{"greet":{"count":%d,"hello":"%s"}}`, n, who)
			if err != nil || string(v) != want {
				t.Fatalf("dispatch %d on worker %d: %s, %v; want %s", n, i, v, err, want)
			}
		}
	}
	for _, id := range tenants {
		if kv := m.kvList(t, id); kv["count"] != "2" || len(kv) != 1 {
			t.Fatalf("kv of %v before the restart: %v", id, kv)
		}
	}
	if r := m.do(t, "GET", "/v1/workers", ""); r.status != 200 {
		t.Fatalf("/v1/workers: %d %s", r.status, r.body)
	} else {
		noPassword(t, "/v1/workers", r.body, password)
	}
	m.stop(syscall.SIGTERM)
	if code := m.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("master exit code %d after SIGTERM", code)
	}
	noPassword(t, "the first master's output", m.out.String(), password)
	if !strings.Contains(m.out.String(), "xxxxx") {
		t.Errorf("the master did not log its (redacted) database URL:\n%s", tail(m.out.String(), 2000))
	}

	m2 := startPostgresMaster(t, dsn, "--process-workers", "2")
	m2.waitReady(t)
	for i, id := range tenants {
		if kv := m2.kvList(t, id); kv["count"] != "2" || len(kv) != 1 {
			t.Fatalf("kv of %v after the restart: %v", id, kv)
		}
		v, err := m2.api.Dispatch(ctx, id, proto.Event{Name: "Ping", Data: proto.Value(`{"who":"again"}`)})
		if err != nil || string(v) != `{"greet":{"count":3,"hello":"again"}}` {
			t.Fatalf("dispatch on worker %d after the restart: %s, %v", i, v, err)
		}
	}
	noPassword(t, "the second master's output", m2.out.String(), password)
}

// TestPostgresDatabaseGoneE2E cuts a running master off its database:
// a template already loaded that touches no KV keeps serving, calls that
// need the store fail with 503 store_unavailable, and once the database is
// back the pool reconnects by itself, with no restart. Backends killed with
// pg_terminate_backend are replaced the same way.
func TestPostgresDatabaseGoneE2E(t *testing.T) {
	base, password := pgTestDatabase(t)
	dsn, schema, admin := pgtest.Schema(t, base)
	px := pgtest.NewProxy(t, base)
	m := startPostgresMaster(t, pgtest.WithParams(t, dsn, map[string]string{"host": px.Addr(), "connect_timeout": "3"}),
		"--process-workers", "1")
	rows := m.waitReady(t)
	ctx := context.Background()
	id := tenantOn(0, 1, rand.Uint64N(1<<20))
	const counter = `local event, ctx = ...
local n = (ctx.kv.get("n") or 0) + 1
ctx.kv.set("n", n)
return n`
	if err := m.api.PutTemplate(ctx, id, "pure", `return "pong"`, []string{"Ping"}); err != nil {
		t.Fatal(err)
	}
	if err := m.api.PutTemplate(ctx, id, "counter", counter, []string{"Count"}); err != nil {
		t.Fatal(err)
	}
	dispatch := func(event string) httpResult {
		return m.do(t, "POST", "/v1/tenants/"+id.Path()+"/events", `{"name":"`+event+`"}`)
	}
	if r := dispatch("Ping"); r.status != 200 || r.body != `{"result":{"pure":"pong"}}` {
		t.Fatalf("Ping: %d %s", r.status, r.body)
	}
	if r := dispatch("Count"); r.status != 200 || r.body != `{"result":{"counter":1}}` {
		t.Fatalf("Count: %d %s", r.status, r.body)
	}

	px.Cut()
	wantUnavailable := func(what string, r httpResult) {
		t.Helper()
		var e struct {
			Error proto.Error `json:"error"`
		}
		if r.status != 503 || json.Unmarshal([]byte(r.body), &e) != nil || e.Error.Code != proto.CodeStoreUnavailable {
			t.Fatalf("%s with the database gone: %d %s; want 503 store_unavailable", what, r.status, r.body)
		}
		noPassword(t, what+"'s error", r.body, password)
	}
	for range 3 {
		if r := dispatch("Ping"); r.status != 200 || r.body != `{"result":{"pure":"pong"}}` {
			t.Fatalf("Ping (no KV) with the database gone: %d %s", r.status, r.body)
		}
		wantUnavailable("Count (KV)", dispatch("Count"))
		wantUnavailable("GET kv", m.do(t, "GET", "/v1/tenants/"+id.Path()+"/kv", ""))
		wantUnavailable("PUT template", m.do(t, "PUT", "/v1/tenants/"+id.Path()+"/templates/other",
			`{"code":"return 1","events":["Other"]}`))
	}
	if r := m.doAuth(t, "GET", "/readyz", "", false); r.status != 503 {
		t.Fatalf("/readyz with the database gone: %d %s", r.status, r.body)
	} else {
		noPassword(t, "/readyz", r.body, password)
	}
	if _, errOut, code := m.cli("kv", "list", "--tenant", "guild:"+strconv.FormatUint(id.ID, 10)); code == 0 ||
		!strings.Contains(errOut, proto.CodeStoreUnavailable) {
		t.Fatalf("kv list with the database gone: exit %d, %q", code, errOut)
	} else {
		noPassword(t, "kv list's error", errOut, password)
	}

	px.Start()
	// The pool dials again by itself: no call needs more than the first
	// one after the database is back.
	if r := dispatch("Count"); r.status != 200 || r.body != `{"result":{"counter":2}}` {
		t.Fatalf("Count once the database is back: %d %s", r.status, r.body)
	}

	// Every backend of the master killed on the server side: the next calls
	// run on fresh connections.
	for round := 3; round <= 5; round++ {
		var n int
		if err := admin.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid, 10000)) FROM pg_stat_activity
			WHERE application_name = $1`, schema).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			t.Fatal("no backend of the master to terminate")
		}
		if r := dispatch("Count"); r.status != 200 || r.body != fmt.Sprintf(`{"result":{"counter":%d}}`, round) {
			t.Fatalf("Count after pg_terminate_backend (round %d): %d %s", round, r.status, r.body)
		}
	}
	if r := m.doAuth(t, "GET", "/readyz", "", false); r.status != 200 {
		t.Fatalf("/readyz once the database is back: %d %s", r.status, r.body)
	}
	if kv := m.kvList(t, id); kv["n"] != "5" {
		t.Fatalf("kv after the outage: %v", kv)
	}
	// Nothing crashed or restarted.
	select {
	case <-m.exited:
		t.Fatal("the master exited")
	default:
	}
	if r := m.workers(t)[0]; r.PID != rows[0].PID || r.Restarts != 0 {
		t.Fatalf("the worker was disturbed: %+v, was %+v", r, rows[0])
	}
	out := m.out.String()
	if !strings.Contains(out, "postgres unreachable") || !strings.Contains(out, "postgres reachable again") {
		t.Errorf("the master did not log the outage and the recovery:\n%s", tail(out, 3000))
	}
	noPassword(t, "the master's output", out, password)
}

// runBinary runs the templateworker binary with extra environment.
func runBinary(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, args...)
	cmd.Env = append(os.Environ(), env...)
	var o, e syncbuf.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %v: %v", args, err)
	}
	return o.String(), e.String(), code
}

// TestPostgresMigrateCommand runs `templateworker migrate` on an empty
// database and again, then on a database a newer binary migrated, which
// it and the master refuse naming both versions.
func TestPostgresMigrateCommand(t *testing.T) {
	base, password := pgTestDatabase(t)
	dsn, schema, admin := pgtest.Schema(t, base)
	env := []string{databaseURLEnv + "=" + dsn}
	want := fmt.Sprintf("schema version %d\n", store.SchemaVersion)
	for range 2 {
		out, errOut, code := runBinary(t, env, "migrate")
		if code != 0 || out != want {
			t.Fatalf("migrate: exit %d, %q, %q; want %q", code, out, errOut, want)
		}
		noPassword(t, "migrate's output", out+errOut, password)
	}

	newer := store.SchemaVersion + 1
	if _, err := admin.Exec(context.Background(), `INSERT INTO `+pgx.Identifier{schema, "schema_version"}.Sanitize()+
		` (version) VALUES ($1)`, newer); err != nil {
		t.Fatal(err)
	}
	wantRefusal := func(what, out string) {
		t.Helper()
		if !strings.Contains(out, fmt.Sprintf("database schema version %d is newer than this binary supports (%d)", newer, store.SchemaVersion)) {
			t.Fatalf("%s on a newer database: %q", what, tail(out, 2000))
		}
		noPassword(t, what+"'s output", out, password)
	}
	out, errOut, code := runBinary(t, env, "migrate")
	if code == 0 {
		t.Fatalf("migrate on a newer database succeeded: %q", out)
	}
	wantRefusal("migrate", out+errOut)

	t.Setenv(databaseURLEnv, dsn)
	m := startMasterNoWait(t, "--thread-workers", "1")
	select {
	case <-m.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("the master started on a database newer than its binary")
	}
	if m.cmd.ProcessState.ExitCode() == 0 {
		t.Fatal("the master exited 0 on a database newer than its binary")
	}
	wantRefusal("master", m.out.String())

	// A wrong password fails without showing it.
	const wrong = "wr0ng-Pa55w0rd"
	bad := pgtest.WithParams(t, dsn, map[string]string{"password": wrong})
	out, errOut, code = runBinary(t, []string{databaseURLEnv + "=" + bad}, "migrate")
	if code == 0 || strings.Contains(out+errOut, wrong) {
		t.Fatalf("migrate with a wrong password: exit %d, %q, %q", code, out, errOut)
	}
}

// TestPostgresMastersStartTogether starts two masters at the same moment on
// one empty database: the advisory lock makes them migrate one after the
// other, both come up, and they share the state.
func TestPostgresMastersStartTogether(t *testing.T) {
	base, _ := pgTestDatabase(t)
	dsn, schema, admin := pgtest.Schema(t, base)
	t.Setenv(databaseURLEnv, dsn)
	ms := []*runningMaster{
		startMasterNoWait(t, "--thread-workers", "1"),
		startMasterNoWait(t, "--thread-workers", "1"),
	}
	for i, m := range ms {
		waitFor(t, 30*time.Second, func() bool {
			select {
			case <-m.exited:
				t.Fatalf("master %d exited:\n%s", i, tail(m.out.String(), 3000))
			default:
			}
			b, err := os.ReadFile(filepath.Join(m.dataDir, master.AddrFile))
			return err == nil && len(b) > 0
		})
	}
	var versions []int
	rows, err := admin.Query(context.Background(), `SELECT version FROM `+
		pgx.Identifier{schema, "schema_version"}.Sanitize()+` ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		versions = append(versions, v)
	}
	if rows.Err() != nil || len(versions) != store.SchemaVersion || versions[len(versions)-1] != store.SchemaVersion {
		t.Fatalf("schema_version rows %v (%v), want 1..%d once each", versions, rows.Err(), store.SchemaVersion)
	}
	// What one master writes, the other reads.
	id := proto.GuildID(rand.Uint64N(1<<40) + 1)
	tenant := "guild:" + strconv.FormatUint(id.ID, 10)
	src := filepath.Join(t.TempDir(), "greet.lua")
	if err := os.WriteFile(src, []byte(greetLua), 0o600); err != nil {
		t.Fatal(err)
	}
	a, b := ms[0], ms[1]
	if _, errOut, code := a.cli("template", "put", "--tenant", tenant, "--name", "greet", "--events", "Ping", src); code != 0 {
		t.Fatalf("template put: %s", errOut)
	}
	if out, errOut, code := b.cli("dispatch", "--tenant", tenant, "--event", "Ping", "--data", `{"who":"b"}`); code != 0 ||
		strings.TrimSpace(out) != `{"greet":{"count":1,"hello":"b"}}` {
		t.Fatalf("dispatch on the other master: exit %d, %q, %q", code, out, errOut)
	}
}
