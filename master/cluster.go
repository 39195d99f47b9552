package master

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/cluster"
	"github.com/templateworker/templateworker/proto"
)

// ClusterConfig splits the tenants between several masters sharing one
// PostgreSQL. The zero value turns clustering off: the master owns every
// tenant.
type ClusterConfig struct {
	// Shards > 0 turns clustering on: tenant id belongs to shard
	// (id >> 22) % Shards.
	Shards int
	// Range is the shards this master owns.
	Range cluster.Range
	// Name identifies this master in the masters table (default: the
	// hostname).
	Name string
	// AdvertiseURL is where the other masters reach this master's API
	// (default: http://<listen address>, the hostname for a wildcard).
	AdvertiseURL string
	// Peers overrides the URL of named masters.
	Peers map[string]string
}

// Cluster routes tenants between masters; API.Cluster is nil when
// clustering is off.
type Cluster interface {
	// Forward serves r on the master owning tenant id when that is not
	// this one, reporting whether it did.
	Forward(w http.ResponseWriter, r *http.Request, id proto.Id) (bool, error)
	// TemplatesChanged tells every master that id's templates changed.
	TemplatesChanged(ctx context.Context, id proto.Id)
	// Check returns nil when every shard has exactly one live owner.
	Check() error
}

// clusterNode is the Cluster of a running master.
type clusterNode struct {
	reg *cluster.Registry
	lis *cluster.Listener
	fwd *cluster.Forwarder
	log zerolog.Logger
}

// startCluster registers this master, refusing an overlapping range, and
// listens for template changes; it returns nil when clustering is off.
func startCluster(ctx context.Context, cfg Config, addr net.Addr, pool *Pool, callTimeout time.Duration, log zerolog.Logger) (*clusterNode, error) {
	cc := cfg.Cluster
	if cc.Shards == 0 {
		return nil, nil
	}
	if cfg.DatabaseURL == "" {
		return nil, errors.New("clustering (--shards) needs a shared PostgreSQL: give --database-url")
	}
	if cc.Name == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("name this master: %w (give --master-name)", err)
		}
		cc.Name = h
	}
	if cc.AdvertiseURL == "" {
		u, err := advertiseURL(addr)
		if err != nil {
			return nil, err
		}
		cc.AdvertiseURL = u
	}
	self := cluster.Member{Name: cc.Name, URL: cc.AdvertiseURL, Range: cc.Range, Shards: cc.Shards}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	reg, err := cluster.Register(rctx, cluster.Config{DatabaseURL: cfg.DatabaseURL, Self: self, Peers: cc.Peers, Log: log})
	if err != nil {
		return nil, err
	}
	n := &clusterNode{reg: reg, fwd: cluster.NewForwarder(cc.Name, callTimeout+2*time.Second), log: log}
	n.lis = cluster.Listen(cluster.ListenConfig{
		DatabaseURL: cfg.DatabaseURL,
		Self:        cc.Name,
		OnChange: func(id proto.Id) {
			if !reg.Local(cluster.ShardOf(id.ID, cc.Shards)) {
				return
			}
			dctx, cancel := context.WithTimeout(context.Background(), callTimeout)
			defer cancel()
			if err := pool.DropTenant(dctx, id); err != nil {
				log.Warn().Err(err).Str("tenant", id.String()).Msg("drop tenant after a template change on another master")
			}
		},
		OnReconnect: func() {
			// Changes notified while the listener was away are lost: drop
			// every VM so that the next calls load current templates.
			log.Warn().Msg("cluster: template notifications may have been missed while the listener was disconnected; dropping every tenant VM")
			dctx, cancel := context.WithTimeout(context.Background(), callTimeout)
			defer cancel()
			if err := pool.DropAll(dctx); err != nil {
				log.Warn().Err(err).Msg("drop every tenant VM after the listener reconnected")
			}
		},
		Log: log,
	})
	if err := n.lis.WaitListening(rctx); err != nil {
		n.Close()
		return nil, err
	}
	log.Info().Str("master", cc.Name).Str("url", cc.AdvertiseURL).Str("shard_range", cc.Range.String()).
		Int("shards", cc.Shards).Msg("cluster: registered")
	if err := reg.Problem(); err != nil {
		log.Error().Str("problem", err.Error()).Msg("cluster is inconsistent at start (other masters may still be starting)")
	}
	return n, nil
}

// advertiseURL derives the URL peers use from the API's bound address.
func advertiseURL(addr net.Addr) (string, error) {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return "", fmt.Errorf("derive --advertise-url from %s: give --advertise-url", addr)
	}
	host := tcp.IP.String()
	if tcp.IP.IsUnspecified() {
		h, err := os.Hostname()
		if err != nil {
			return "", fmt.Errorf("derive --advertise-url: %w (give --advertise-url)", err)
		}
		host = h
	}
	return "http://" + net.JoinHostPort(host, strconv.Itoa(tcp.Port)), nil
}

// Forward implements Cluster.
func (n *clusterNode) Forward(w http.ResponseWriter, r *http.Request, id proto.Id) (bool, error) {
	shard := cluster.ShardOf(id.ID, n.reg.Shards())
	if n.reg.Local(shard) {
		return false, nil
	}
	owner, err := n.reg.Owner(shard)
	if err != nil {
		return true, err
	}
	return true, n.fwd.Forward(w, r, shard, owner)
}

// TemplatesChanged implements Cluster.
func (n *clusterNode) TemplatesChanged(ctx context.Context, id proto.Id) {
	if err := n.reg.Notify(ctx, id); err != nil {
		n.log.Warn().Err(err).Str("tenant", id.String()).Msg("cluster: notify other masters of a template change")
	}
}

// Check implements Cluster.
func (n *clusterNode) Check() error { return n.reg.Problem() }

// Close stops listening and deregisters this master.
func (n *clusterNode) Close() {
	n.lis.Close()
	if err := n.reg.Close(); err != nil {
		n.log.Warn().Err(err).Msg("cluster: deregister")
	}
}

// routed forwards tenant routes to their owner when clustering is on.
func (a *API) routed(h func(w http.ResponseWriter, r *http.Request) error) func(w http.ResponseWriter, r *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		if a.Cluster == nil || r.PathValue("kind") == "" {
			return h(w, r)
		}
		id, err := tenant(r)
		if err != nil {
			return err
		}
		if done, err := a.Cluster.Forward(w, r, id); done {
			return err
		}
		return h(w, r)
	}
}
