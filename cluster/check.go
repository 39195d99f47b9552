package cluster

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Member is one master as registered in the masters table.
type Member struct {
	// Name identifies the master (--master-name, default the hostname).
	Name string `json:"name"`
	// URL is where the other masters reach its API (--advertise-url).
	URL string `json:"url"`
	// Range is the shards it owns.
	Range Range `json:"-"`
	// Shards is the cluster's shard count as this master sees it.
	Shards int `json:"shards"`
	// HeartbeatAt is the time of its last heartbeat (database clock).
	HeartbeatAt time.Time `json:"heartbeat_at"`
	// Age is how old that heartbeat was when it was read, measured on the
	// database clock so that the machines' clocks do not matter.
	Age time.Duration `json:"-"`
}

// Live reports whether m's heartbeat is younger than ttl.
func (m Member) Live(ttl time.Duration) bool { return m.Age < ttl }

// Overlap is a run of shards claimed by more than one live master.
type Overlap struct {
	Range  Range
	Owners []string
}

// Report is the result of checking the live masters' ranges.
type Report struct {
	// Shards is the shard count the check was made for.
	Shards int
	// Overlaps are shards claimed by several masters.
	Overlaps []Overlap
	// Gaps are shards no live master claims.
	Gaps []Range
	// Mismatched names masters configured with another shard count.
	Mismatched []string
}

// Healthy reports whether every shard has exactly one owner and every
// master agrees on the shard count.
func (r Report) Healthy() bool {
	return len(r.Overlaps) == 0 && len(r.Gaps) == 0 && len(r.Mismatched) == 0
}

// Err returns nil for a healthy report, else an error describing it.
func (r Report) Err() error {
	if r.Healthy() {
		return nil
	}
	return fmt.Errorf("%s", r.String())
}

// String describes the problems, or says "every shard has one owner".
func (r Report) String() string {
	if r.Healthy() {
		return fmt.Sprintf("all %d shards have exactly one owner", r.Shards)
	}
	var parts []string
	for _, o := range r.Overlaps {
		parts = append(parts, fmt.Sprintf("shards %s are claimed by %s (overlap)", o.Range, strings.Join(o.Owners, " and ")))
	}
	if len(r.Gaps) > 0 {
		gaps := make([]string, len(r.Gaps))
		for i, g := range r.Gaps {
			gaps[i] = g.String()
		}
		parts = append(parts, fmt.Sprintf("shards %s have no live owner (gap)", strings.Join(gaps, ", ")))
	}
	if len(r.Mismatched) > 0 {
		parts = append(parts, fmt.Sprintf("masters %s use another --shards than %d", strings.Join(r.Mismatched, ", "), r.Shards))
	}
	return strings.Join(parts, "; ")
}

// Check finds the overlaps and gaps among the members live within ttl,
// for a cluster of shards shards. Members with another shard count are
// reported as mismatched and left out of the coverage.
func Check(members []Member, shards int, ttl time.Duration) Report {
	rep := Report{Shards: shards}
	var live []Member
	for _, m := range members {
		if !m.Live(ttl) {
			continue
		}
		if m.Shards != shards {
			rep.Mismatched = append(rep.Mismatched, fmt.Sprintf("%s (--shards %d)", m.Name, m.Shards))
			continue
		}
		live = append(live, m)
	}
	slices.SortFunc(live, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	// Walk the shards, merging runs with the same owners. Only range
	// boundaries can change the owners, so walk from boundary to boundary.
	cuts := []int{0, shards}
	for _, m := range live {
		cuts = append(cuts, m.Range.Lo, m.Range.Hi+1)
	}
	slices.Sort(cuts)
	cuts = slices.Compact(cuts)
	for i := 0; i+1 < len(cuts) && cuts[i] < shards; i++ {
		seg := Range{Lo: cuts[i], Hi: min(cuts[i+1], shards) - 1}
		var owners []string
		for _, m := range live {
			if m.Range.Contains(seg.Lo) {
				owners = append(owners, m.Name)
			}
		}
		switch {
		case len(owners) == 0:
			if n := len(rep.Gaps); n > 0 && rep.Gaps[n-1].Hi+1 == seg.Lo {
				rep.Gaps[n-1].Hi = seg.Hi
			} else {
				rep.Gaps = append(rep.Gaps, seg)
			}
		case len(owners) > 1:
			if n := len(rep.Overlaps); n > 0 && rep.Overlaps[n-1].Range.Hi+1 == seg.Lo && slices.Equal(rep.Overlaps[n-1].Owners, owners) {
				rep.Overlaps[n-1].Range.Hi = seg.Hi
			} else {
				rep.Overlaps = append(rep.Overlaps, Overlap{Range: seg, Owners: owners})
			}
		}
	}
	return rep
}
