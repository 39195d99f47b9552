package cluster_test

import (
	"strings"
	"testing"
	"time"

	"github.com/templateworker/templateworker/cluster"
)

func TestShardOf(t *testing.T) {
	for _, c := range []struct {
		id     uint64
		shards int
		want   int
	}{
		{0, 32, 0},
		{5 << 22, 32, 5},
		{(40 << 22) | 12345, 32, 8},
		{1234567890123456789, 32, int((1234567890123456789 >> 22) % 32)},
		{1<<22 - 1, 7, 0},
		{^uint64(0), 1, 0},
	} {
		if got := cluster.ShardOf(c.id, c.shards); got != c.want {
			t.Errorf("ShardOf(%d, %d) = %d, want %d", c.id, c.shards, got, c.want)
		}
	}
}

func TestParseRange(t *testing.T) {
	for _, c := range []struct {
		in   string
		want cluster.Range
		str  string
	}{
		{"0-15", cluster.Range{Lo: 0, Hi: 15}, "0-15"},
		{" 16 - 31 ", cluster.Range{Lo: 16, Hi: 31}, "16-31"},
		{"7", cluster.Range{Lo: 7, Hi: 7}, "7"},
	} {
		got, err := cluster.ParseRange(c.in, 32)
		if err != nil || got != c.want || got.String() != c.str {
			t.Errorf("ParseRange(%q) = %v (%q), %v; want %v", c.in, got, got.String(), err, c.want)
		}
	}
	for _, in := range []string{"", "a-b", "16-15", "0-32", "-1-3", "3-", "1-2-3"} {
		if r, err := cluster.ParseRange(in, 32); err == nil {
			t.Errorf("ParseRange(%q) = %v, want an error", in, r)
		}
	}
	if _, err := cluster.ParseRange("0-1", 0); err == nil {
		t.Error("ParseRange with 0 shards: want an error")
	}
	r := cluster.Range{Lo: 4, Hi: 8}
	if !r.Contains(4) || !r.Contains(8) || r.Contains(3) || r.Contains(9) {
		t.Errorf("Contains of %v is wrong", r)
	}
	if !r.Overlaps(cluster.Range{Lo: 8, Hi: 9}) || r.Overlaps(cluster.Range{Lo: 9, Hi: 12}) || !r.Overlaps(cluster.Range{Lo: 0, Hi: 31}) {
		t.Errorf("Overlaps of %v is wrong", r)
	}
}

func member(name string, lo, hi, shards int, age time.Duration) cluster.Member {
	return cluster.Member{Name: name, URL: "http://" + name, Range: cluster.Range{Lo: lo, Hi: hi}, Shards: shards, Age: age}
}

func TestCheck(t *testing.T) {
	ttl := 5 * time.Second
	for _, c := range []struct {
		name    string
		shards  int
		members []cluster.Member
		want    string
	}{
		{"split", 32, []cluster.Member{member("a", 0, 15, 32, 0), member("b", 16, 31, 32, time.Second)}, "all 32 shards have exactly one owner"},
		{"alone", 32, []cluster.Member{member("a", 0, 31, 32, 0)}, "all 32 shards have exactly one owner"},
		{"overlap", 32, []cluster.Member{member("b", 8, 31, 32, 0), member("a", 0, 15, 32, 0)}, "shards 8-15 are claimed by a and b (overlap)"},
		{"gap", 32, []cluster.Member{member("a", 0, 15, 32, 0)}, "shards 16-31 have no live owner (gap)"},
		{"stale owner is a gap", 32, []cluster.Member{member("a", 0, 15, 32, 0), member("b", 16, 31, 32, 6*time.Second)}, "shards 16-31 have no live owner (gap)"},
		{"stale owner overlaps nothing", 32, []cluster.Member{member("a", 0, 31, 32, 0), member("b", 16, 31, 32, time.Minute)}, "all 32 shards have exactly one owner"},
		{"gaps", 16, []cluster.Member{member("a", 0, 3, 16, 0), member("b", 8, 9, 16, 0)}, "shards 4-7, 10-15 have no live owner (gap)"},
		{"one shard overlap", 32, []cluster.Member{member("a", 0, 31, 32, 0), member("c", 20, 20, 32, 0)}, "shards 20 are claimed by a and c (overlap)"},
		{"three owners", 8, []cluster.Member{member("a", 0, 7, 8, 0), member("b", 0, 7, 8, 0), member("c", 4, 7, 8, 0)},
			"shards 0-3 are claimed by a and b (overlap); shards 4-7 are claimed by a and b and c (overlap)"},
		{"mismatch", 32, []cluster.Member{member("a", 0, 31, 32, 0), member("b", 0, 15, 16, 0)}, "masters b (--shards 16) use another --shards than 32"},
		{"nobody", 4, nil, "shards 0-3 have no live owner (gap)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			rep := cluster.Check(c.members, c.shards, ttl)
			if got := rep.String(); got != c.want {
				t.Fatalf("Check = %q, want %q", got, c.want)
			}
			if healthy := strings.HasPrefix(c.want, "all "); rep.Healthy() != healthy || (rep.Err() == nil) != healthy {
				t.Fatalf("Healthy = %v, Err = %v; want healthy %v", rep.Healthy(), rep.Err(), healthy)
			}
		})
	}
}
