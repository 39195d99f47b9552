// Package cluster lets several masters share one PostgreSQL and split the
// tenants between them. Tenants are spread over a fixed number of shards
// with Discord's formula, shard = (id >> 22) % shards; every master owns
// one contiguous range of shards, registers it with its address and a
// heartbeat in the templateworker_masters table (Registry), forwards calls
// for tenants it does not own to their owner (Forwarder), and tells the
// other masters about template changes with LISTEN/NOTIFY (Notify,
// Listener). All tenant state lives in PostgreSQL, so moving a range from
// one master to another needs no data migration.
package cluster

import (
	"fmt"
	"strconv"
	"strings"
)

// MaxShards bounds the number of shards a cluster may be split into.
const MaxShards = 1 << 16

// ShardOf returns the shard of the snowflake id among shards shards:
// (id >> 22) % shards. shards must be positive.
func ShardOf(id uint64, shards int) int {
	return int((id >> 22) % uint64(shards))
}

// Range is an inclusive range of shards, Lo..Hi.
type Range struct {
	Lo, Hi int
}

// FullRange is every shard of a cluster of shards shards.
func FullRange(shards int) Range { return Range{Lo: 0, Hi: shards - 1} }

// ParseRange parses "lo-hi" (inclusive) or a single shard "n", checking
// that it lies within 0..shards-1.
func ParseRange(s string, shards int) (Range, error) {
	if shards <= 0 || shards > MaxShards {
		return Range{}, fmt.Errorf("shard count %d out of range 1..%d", shards, MaxShards)
	}
	lo, hi, ok := strings.Cut(strings.TrimSpace(s), "-")
	if !ok {
		hi = lo
	}
	l, err1 := strconv.Atoi(strings.TrimSpace(lo))
	h, err2 := strconv.Atoi(strings.TrimSpace(hi))
	if err1 != nil || err2 != nil {
		return Range{}, fmt.Errorf("bad shard range %q: want lo-hi, e.g. 0-15", s)
	}
	r := Range{Lo: l, Hi: h}
	if err := r.Validate(shards); err != nil {
		return Range{}, fmt.Errorf("bad shard range %q: %w", s, err)
	}
	return r, nil
}

// Validate checks that r is non-empty and within 0..shards-1.
func (r Range) Validate(shards int) error {
	switch {
	case r.Lo < 0 || r.Hi < 0:
		return fmt.Errorf("shards are never negative")
	case r.Lo > r.Hi:
		return fmt.Errorf("%d is after %d", r.Lo, r.Hi)
	case r.Hi >= shards:
		return fmt.Errorf("shard %d does not exist: shards are 0..%d", r.Hi, shards-1)
	}
	return nil
}

// Contains reports whether shard lies in r.
func (r Range) Contains(shard int) bool { return shard >= r.Lo && shard <= r.Hi }

// Overlaps reports whether r and o share a shard.
func (r Range) Overlaps(o Range) bool { return r.Lo <= o.Hi && o.Lo <= r.Hi }

// String returns the "lo-hi" form ("n" for a single shard).
func (r Range) String() string {
	if r.Lo == r.Hi {
		return strconv.Itoa(r.Lo)
	}
	return strconv.Itoa(r.Lo) + "-" + strconv.Itoa(r.Hi)
}
