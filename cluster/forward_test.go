package cluster_test

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/templateworker/templateworker/cluster"
	"github.com/templateworker/templateworker/proto"
)

// forward runs one request through a Forwarder to owner and returns the
// answer, or the error Forward returned.
func forward(t *testing.T, f *cluster.Forwarder, owner cluster.Member, req *http.Request) (*httptest.ResponseRecorder, error) {
	t.Helper()
	w := httptest.NewRecorder()
	err := f.Forward(w, req, 17, owner)
	return w, err
}

func TestForwardCopiesCallAndAnswer(t *testing.T) {
	owner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Retry-After", "3")
		w.Header().Set("X-Not-Copied", "1")
		w.WriteHeader(http.StatusAccepted)
		_ = json.NewEncoder(w).Encode(map[string]string{
			"method": r.Method, "uri": r.URL.RequestURI(), "body": string(body),
			"auth": r.Header.Get("Authorization"), "by": r.Header.Get(cluster.ForwardedHeader),
		})
	}))
	defer owner.Close()
	f := cluster.NewForwarder("a", time.Minute)
	req := httptest.NewRequest("POST", "/v1/tenants/guild/1/events?wait=false", strings.NewReader(`{"name":"Ping"}`))
	req.Header.Set("Authorization", "Bearer tok")
	w, err := forward(t, f, cluster.Member{Name: "b", URL: owner.URL + "/"}, req)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]string
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"method": "POST", "uri": "/v1/tenants/guild/1/events?wait=false", "body": `{"name":"Ping"}`, "auth": "Bearer tok", "by": "a"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("owner saw %s = %q, want %q", k, got[k], v)
		}
	}
	if w.Code != http.StatusAccepted || w.Header().Get("Retry-After") != "3" || w.Header().Get(cluster.OwnerHeader) != "b" ||
		w.Header().Get("Content-Type") != "application/json" || w.Header().Get("X-Not-Copied") != "" {
		t.Fatalf("answer: %d %v", w.Code, w.Header())
	}
}

func TestForwardUnreachableOwner(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there any more
	f := cluster.NewForwarder("a", time.Minute)
	w, err := forward(t, f, cluster.Member{Name: "b", URL: dead}, httptest.NewRequest("GET", "/v1/tenants/guild/1/kv", nil))
	e := proto.AsError(err)
	if e == nil || e.Code != proto.CodeShardUnavailable || !strings.Contains(e.Message, "shard 17 (owner b at "+dead+") is unreachable") {
		t.Fatalf("Forward to a dead owner: %v", err)
	}
	if w.Body.Len() != 0 {
		t.Fatalf("Forward wrote %q before failing", w.Body.String())
	}
}

func TestForwardHungOwnerIsBounded(t *testing.T) {
	release := make(chan struct{})
	owner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer owner.Close()
	defer close(release)
	f := cluster.NewForwarder("a", 200*time.Millisecond)
	_, err := forward(t, f, cluster.Member{Name: "b", URL: owner.URL}, httptest.NewRequest("GET", "/v1/tenants/guild/1/kv", nil))
	if e := proto.AsError(err); e == nil || e.Code != proto.CodeShardUnavailable || !strings.Contains(e.Message, "no answer before the call's deadline") {
		t.Fatalf("Forward to a hung owner: %v", err)
	}
}

func TestForwardNeverTwice(t *testing.T) {
	f := cluster.NewForwarder("b", time.Second)
	req := httptest.NewRequest("GET", "/v1/tenants/guild/1/kv", nil)
	req.Header.Set(cluster.ForwardedHeader, "a")
	_, err := forward(t, f, cluster.Member{Name: "c", URL: "http://127.0.0.1:1"}, req)
	if e := proto.AsError(err); e == nil || e.Code != proto.CodeShardUnavailable || !strings.Contains(e.Message, "the masters disagree on shard ranges") {
		t.Fatalf("re-forward: %v", err)
	}
}
