package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/templateworker/templateworker/cluster"
	"github.com/templateworker/templateworker/master"
)

// clusterFlags are the master's flags for splitting shards between masters.
func clusterFlags() []cli.Flag {
	return []cli.Flag{
		&cli.IntFlag{Name: "shards", Usage: "split tenants into N shards, (id >> 22) % N, shared with other masters on the same --database-url (0: this master owns every tenant)", EnvVars: envVars("shards")},
		&cli.StringFlag{Name: "shard-range", Usage: "the shards this master owns, lo-hi inclusive, e.g. 0-15 (default: all of --shards)", EnvVars: envVars("shard-range")},
		&cli.StringFlag{Name: "peers", Usage: "name=url,... : reach these masters at these URLs instead of the ones they advertise", EnvVars: envVars("peers")},
		&cli.StringFlag{Name: "advertise-url", Usage: "the URL other masters use to reach this master's API (default: http://<listen address>)", EnvVars: envVars("advertise-url")},
		&cli.StringFlag{Name: "master-name", Usage: "this master's name in the cluster (default: the hostname)", EnvVars: envVars("master-name")},
	}
}

// clusterConfig reads the cluster flags; the zero config turns it off.
func clusterConfig(c *cli.Context) (master.ClusterConfig, error) {
	var cc master.ClusterConfig
	shards := c.Int("shards")
	if shards == 0 {
		for _, f := range []string{"shard-range", "peers", "advertise-url", "master-name"} {
			if c.String(f) != "" {
				return cc, fmt.Errorf("--%s needs --shards", f)
			}
		}
		return cc, nil
	}
	if shards < 0 || shards > cluster.MaxShards {
		return cc, fmt.Errorf("--shards must be within 1..%d, got %d", cluster.MaxShards, shards)
	}
	cc.Shards, cc.Range = shards, cluster.FullRange(shards)
	if s := c.String("shard-range"); s != "" {
		r, err := cluster.ParseRange(s, shards)
		if err != nil {
			return cc, fmt.Errorf("--shard-range: %w", err)
		}
		cc.Range = r
	}
	peers, err := parsePeers(c.String("peers"))
	if err != nil {
		return cc, err
	}
	cc.Peers = peers
	cc.AdvertiseURL = c.String("advertise-url")
	if cc.AdvertiseURL != "" {
		if err := checkHTTPURL(cc.AdvertiseURL); err != nil {
			return cc, fmt.Errorf("--advertise-url: %w", err)
		}
	}
	cc.Name = c.String("master-name")
	return cc, nil
}

// parsePeers parses "name=url,name=url".
func parsePeers(s string) (map[string]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	out := map[string]string{}
	for _, p := range strings.Split(s, ",") {
		name, u, ok := strings.Cut(strings.TrimSpace(p), "=")
		if !ok || name == "" {
			return nil, fmt.Errorf("bad --peers entry %q: want name=url", p)
		}
		if err := checkHTTPURL(u); err != nil {
			return nil, fmt.Errorf("bad --peers entry %q: %w", p, err)
		}
		out[name] = u
	}
	return out, nil
}

func checkHTTPURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("want an http(s)://host:port URL, got %q", s)
	}
	return nil
}

func clusterCommand() *cli.Command {
	return &cli.Command{
		Name:  "cluster",
		Usage: "print the masters sharing --database-url: their shard ranges, heartbeats, gaps and overlaps",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "database-url", Usage: "the masters' shared PostgreSQL URL", EnvVars: envVars("database-url")},
		},
		Action: func(c *cli.Context) error {
			if err := required(c, "database-url"); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			members, err := cluster.List(ctx, c.String("database-url"))
			if err != nil {
				return err
			}
			return printCluster(os.Stdout, members)
		},
	}
}

// printCluster writes the masters table and its problems; it returns an
// error (exit code 1) when the live masters do not cover every shard
// exactly once.
func printCluster(w io.Writer, members []cluster.Member) error {
	if len(members) == 0 {
		fmt.Fprintln(w, "no masters registered")
		return fmt.Errorf("no masters registered")
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tURL\tSHARDS\tRANGE\tHEARTBEAT\tSTATE")
	counts := map[int]int{}
	for _, m := range members {
		state := "live"
		if !m.Live(cluster.DefaultTTL) {
			state = "gone"
		} else {
			counts[m.Shards]++
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s ago\t%s\n", m.Name, m.URL, m.Shards, m.Range, m.Age.Round(100*time.Millisecond), state)
	}
	_ = tw.Flush()
	// Check against the shard count most live masters use.
	shards, best := members[0].Shards, -1
	for n, c := range counts {
		if c > best || (c == best && n < shards) {
			shards, best = n, c
		}
	}
	rep := cluster.Check(members, shards, cluster.DefaultTTL)
	gaps, overlaps := "none", "none"
	if len(rep.Gaps) > 0 {
		var s []string
		for _, g := range rep.Gaps {
			s = append(s, g.String())
		}
		gaps = strings.Join(s, ", ")
	}
	if len(rep.Overlaps) > 0 {
		var s []string
		for _, o := range rep.Overlaps {
			s = append(s, o.Range.String()+" ("+strings.Join(o.Owners, ", ")+")")
		}
		overlaps = strings.Join(s, ", ")
	}
	fmt.Fprintf(w, "shards: %d\ngaps: %s\noverlaps: %s\n", shards, gaps, overlaps)
	if len(rep.Mismatched) > 0 {
		fmt.Fprintf(w, "mismatched --shards: %s\n", strings.Join(rep.Mismatched, ", "))
	}
	if err := rep.Err(); err != nil {
		return fmt.Errorf("cluster is inconsistent: %w", err)
	}
	return nil
}
