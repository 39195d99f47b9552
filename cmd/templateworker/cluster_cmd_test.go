package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/templateworker/templateworker/cluster"
)

func TestParsePeers(t *testing.T) {
	got, err := parsePeers(" a=http://10.0.0.1:7878, b=https://b.internal:443 ")
	if err != nil || len(got) != 2 || got["a"] != "http://10.0.0.1:7878" || got["b"] != "https://b.internal:443" {
		t.Fatalf("parsePeers = %v, %v", got, err)
	}
	if got, err := parsePeers(""); err != nil || got != nil {
		t.Fatalf("empty --peers = %v, %v", got, err)
	}
	for _, bad := range []string{"a", "=http://x:1", "a=ftp://x", "a=http://", "a=http://x:1,b"} {
		if _, err := parsePeers(bad); err == nil {
			t.Errorf("parsePeers(%q): want an error", bad)
		}
	}
}

func TestPrintCluster(t *testing.T) {
	m := func(name string, lo, hi int, age time.Duration) cluster.Member {
		return cluster.Member{Name: name, URL: "http://" + name + ":7878", Range: cluster.Range{Lo: lo, Hi: hi}, Shards: 32, Age: age}
	}
	var out bytes.Buffer
	if err := printCluster(&out, []cluster.Member{m("a", 0, 15, time.Second), m("b", 16, 31, 0)}); err != nil {
		t.Fatalf("healthy cluster: %v\n%s", err, out.String())
	}
	if s := out.String(); !strings.Contains(s, "gaps: none") || !strings.Contains(s, "overlaps: none") || !strings.Contains(s, "http://b:7878") {
		t.Fatalf("healthy cluster output:\n%s", s)
	}
	out.Reset()
	err := printCluster(&out, []cluster.Member{m("a", 0, 20, 0), m("b", 16, 31, time.Minute), m("c", 18, 25, 0)})
	if err == nil || !strings.Contains(out.String(), "gaps: 26-31") || !strings.Contains(out.String(), "overlaps: 18-20 (a, c)") ||
		!strings.Contains(out.String(), "gone") {
		t.Fatalf("broken cluster: %v\n%s", err, out.String())
	}
	out.Reset()
	if err := printCluster(&out, nil); err == nil || !strings.Contains(out.String(), "no masters registered") {
		t.Fatalf("no masters: %v %q", err, out.String())
	}
}
