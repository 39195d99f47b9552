package drill

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"strings"
	"syscall"

	"github.com/templateworker/templateworker/client"
	"github.com/templateworker/templateworker/proto"
)

// ParseSignal parses the signal a drill sends: KILL, TERM or STOP (with or
// without the SIG prefix, any case).
func ParseSignal(s string) (syscall.Signal, error) {
	switch strings.TrimPrefix(strings.ToUpper(s), "SIG") {
	case "KILL":
		return syscall.SIGKILL, nil
	case "TERM":
		return syscall.SIGTERM, nil
	case "STOP":
		return syscall.SIGSTOP, nil
	}
	return 0, fmt.Errorf("bad signal %q: want KILL, TERM or STOP", s)
}

// signalName names the drill's signals as ParseSignal accepts them.
func signalName(sig syscall.Signal) string {
	switch sig {
	case syscall.SIGKILL:
		return "KILL"
	case syscall.SIGTERM:
		return "TERM"
	case syscall.SIGSTOP:
		return "STOP"
	}
	return sig.String()
}

// CheckLoopback returns an error unless addr (a URL or host:port) names
// this machine through a loopback address: the drill signals worker pids,
// which only means something on the master's own host, and its load must
// not leave the machine.
func CheckLoopback(addr string) error {
	s := addr
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("bad master address %q: %w", addr, err)
	}
	host := u.Hostname()
	if host == "" {
		return fmt.Errorf("bad master address %q: no host", addr)
	}
	if strings.EqualFold(host, "localhost") {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return fmt.Errorf("refusing master address %q: the drill only runs against a master on this machine; give a loopback address such as 127.0.0.1 or [::1]", addr)
	}
	if !ip.IsLoopback() {
		return fmt.Errorf("refusing master address %q: %s is not a loopback address; the drill signals local worker processes and only runs against a master on this machine", addr, ip)
	}
	return nil
}

// workerStatus is the part of a /v1/workers entry the drill reads.
type workerStatus struct {
	ID       int    `json:"id"`
	PID      int    `json:"pid"`
	State    string `json:"state"`
	Restarts int    `json:"restarts"`
	LastExit string `json:"last_exit"`
}

// Worker states the drill tells apart: a process worker that serves
// calls, and a thread worker (it runs inside the master: nothing to kill).
const (
	stateReady  = "ready"
	stateThread = "running"
)

// workers reads /v1/workers.
func workers(ctx context.Context, api *client.Client) ([]workerStatus, error) {
	raw, err := api.Workers(ctx)
	if err != nil {
		return nil, fmt.Errorf("read workers: %w", err)
	}
	var out struct {
		Workers []workerStatus `json:"workers"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("decode workers: %w", err)
	}
	if len(out.Workers) == 0 {
		return nil, fmt.Errorf("the master reports no workers")
	}
	for i, w := range out.Workers {
		if w.ID != i {
			return nil, fmt.Errorf("the master reports worker %d at position %d; want workers 0..%d in order", w.ID, i, len(out.Workers)-1)
		}
	}
	return out.Workers, nil
}

// TenantBase is the first snowflake of the drill's tenant range: ids with
// the top bit set, which belong to no real guild or user for decades
// (their timestamp bits point past 2084). Each run takes fresh tenants in
// this range, so runs never share KV keys, quota or quarantine strikes.
const TenantBase uint64 = 1 << 63

// newRunID returns a random run id (8 hex digits) and a random start for
// the run's tenants in the drill range.
func newRunID() (string, uint64, error) {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", 0, fmt.Errorf("random run id: %w", err)
	}
	// Leave room above the start for the run's tenants: the sharding bits
	// (id >> 22) of a drill tenant stay below 2^41 + 2^40.
	start := uint64(binary.BigEndian.Uint32(b[:])) << 8
	return hex.EncodeToString(b[:]), start, nil
}

// drillTenants returns perWorker guild tenants routed to each of n workers:
// out[w] are tenants whose (id >> 22) % n == w, in the drill range after
// start.
func drillTenants(start uint64, n, perWorker int) [][]proto.Id {
	out := make([][]proto.Id, n)
	for hi, filled := start, 0; filled < n*perWorker; hi++ {
		id := proto.GuildID(TenantBase | hi<<22)
		w := id.WorkerID(n)
		if len(out[w]) < perWorker {
			out[w] = append(out[w], id)
			filled++
		}
	}
	return out
}
