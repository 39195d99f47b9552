package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/templateworker/templateworker/client"
	"github.com/templateworker/templateworker/master"
	"github.com/templateworker/templateworker/proto"
)

// clientFlags are the flags of every subcommand that talks to a master.
func clientFlags(extra ...cli.Flag) []cli.Flag {
	return append([]cli.Flag{
		&cli.StringFlag{Name: "addr", Usage: "master API address (default: the running master's in --data-dir, else http://127.0.0.1:7878)", EnvVars: envVars("addr")},
		&cli.StringFlag{Name: "data-dir", Value: "./data", Usage: "data directory of the master, for its token and address", EnvVars: envVars("data-dir")},
		&cli.StringFlag{Name: "api-token", Usage: "API bearer token (default: read from --data-dir)", EnvVars: envVars("api-token")},
		&cli.DurationFlag{Name: "timeout", Value: 60 * time.Second, Usage: "how long to wait for the answer"},
	}, extra...)
}

func tenantFlag() cli.Flag {
	return &cli.StringFlag{Name: "tenant", Usage: "tenant as guild:<id> or user:<id> (required)"}
}

// apiClient builds the client from the flags.
func apiClient(c *cli.Context) (*client.Client, error) {
	dir := c.String("data-dir")
	addr := c.String("addr")
	if addr == "" {
		if b, err := os.ReadFile(filepath.Join(dir, master.AddrFile)); err == nil {
			addr = strings.TrimSpace(string(b))
		} else {
			addr = "http://127.0.0.1:7878"
		}
	}
	token := c.String("api-token")
	if token == "" {
		b, err := os.ReadFile(filepath.Join(dir, master.TokenFile))
		if err != nil {
			return nil, fmt.Errorf("no API token: give --api-token or run where --data-dir (%s) holds the master's %s", dir, master.TokenFile)
		}
		token = strings.TrimSpace(string(b))
	}
	return client.New(addr, token), nil
}

func tenantArg(c *cli.Context) (proto.Id, error) {
	if c.String("tenant") == "" {
		return proto.Id{}, errors.New("missing --tenant (guild:<id> or user:<id>)")
	}
	id, err := proto.ParseId(c.String("tenant"))
	if err != nil {
		return proto.Id{}, fmt.Errorf("bad --tenant: %w", err)
	}
	return id, nil
}

// required checks flags that must be given, with one readable line (the
// CLI library's own check prints the whole help instead).
func required(c *cli.Context, names ...string) error {
	for _, n := range names {
		if c.String(n) == "" {
			return fmt.Errorf("missing --%s", n)
		}
	}
	return nil
}

func eventUsage(required bool) string {
	if required {
		return "event name (required)"
	}
	return "event name"
}

// withClient wraps an action that needs a client, a tenant-less context
// with the --timeout.
func withClient(f func(ctx context.Context, c *cli.Context, api *client.Client) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		api, err := apiClient(c)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
		defer cancel()
		return f(ctx, c, api)
	}
}

// withTenant is withClient for subcommands about one tenant: it parses
// --tenant first.
func withTenant(f func(ctx context.Context, c *cli.Context, api *client.Client, id proto.Id) error) cli.ActionFunc {
	return withClient(func(ctx context.Context, c *cli.Context, api *client.Client) error {
		id, err := tenantArg(c)
		if err != nil {
			return err
		}
		return f(ctx, c, api, id)
	})
}

// readSource reads a file argument, or stdin for "-".
func readSource(c *cli.Context, what string) (string, error) {
	if c.Args().Len() != 1 {
		return "", fmt.Errorf("want exactly one %s file argument (or - for stdin), got %d", what, c.Args().Len())
	}
	p := c.Args().First()
	var b []byte
	var err error
	if p == "-" {
		b, err = io.ReadAll(os.Stdin)
	} else {
		b, err = os.ReadFile(p)
	}
	if err != nil {
		return "", fmt.Errorf("read %s: %w", what, err)
	}
	return string(b), nil
}

// applyEach applies do to each of ids (of a noun: "dead letter", "event"),
// printing "<noun> <id> <done>[ (what do returned)]" on stdout for each one
// done and a line for each one not, and fails (one line) when any failed:
// the others are still done. With one id its error is returned as it is.
func applyEach(ids []string, noun, done string, do func(id string) (string, error)) error {
	failed := 0
	var last error
	for _, id := range ids {
		what, err := do(id)
		if err != nil && len(ids) == 1 {
			return err
		}
		if err != nil {
			failed++
			last = err
			fmt.Printf("%s %s not %s: %s\n", noun, id, done, errorLine(err))
			continue
		}
		if what != "" {
			fmt.Printf("%s %s %s (%s)\n", noun, id, done, what)
		} else {
			fmt.Printf("%s %s %s\n", noun, id, done)
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d %ss not %s (last: %s)", failed, len(ids), noun, done, errorLine(last))
	}
	return nil
}

// oneLine is s for one cell of a table: newlines as spaces, at most max
// runes (cut ones end in "...").
func oneLine(s string, max int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if r := []rune(s); len(r) > max {
		return string(r[:max-3]) + "..."
	}
	return s
}

func printJSON(v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	fmt.Println(string(b))
	return nil
}

func templateCommand() *cli.Command {
	return &cli.Command{
		Name:  "template",
		Usage: "manage a tenant's templates",
		Subcommands: []*cli.Command{
			{
				Name:      "put",
				Usage:     "create or replace a template from a Lua file (- for stdin)",
				ArgsUsage: "FILE",
				Flags: clientFlags(tenantFlag(),
					&cli.StringFlag{Name: "name", Usage: "template name (required)"},
					&cli.StringSliceFlag{Name: "events", Usage: "events the template runs on (comma-separated or repeated)"}),
				Action: withTenant(func(ctx context.Context, c *cli.Context, api *client.Client, id proto.Id) error {
					if err := required(c, "name"); err != nil {
						return err
					}
					code, err := readSource(c, "template")
					if err != nil {
						return err
					}
					var events []string
					for _, e := range c.StringSlice("events") {
						for _, p := range strings.Split(e, ",") {
							if p = strings.TrimSpace(p); p != "" {
								events = append(events, p)
							}
						}
					}
					if err := api.PutTemplate(ctx, id, c.String("name"), code, events); err != nil {
						return err
					}
					fmt.Printf("template %s of %s saved (events: %s)\n", c.String("name"), id, strings.Join(events, ", "))
					return nil
				}),
			},
			{
				Name:  "list",
				Usage: "list a tenant's templates",
				Flags: clientFlags(tenantFlag()),
				Action: withTenant(func(ctx context.Context, c *cli.Context, api *client.Client, id proto.Id) error {
					tpls, err := api.Templates(ctx, id)
					if err != nil {
						return err
					}
					return printJSON(map[string]any{"templates": tpls})
				}),
			},
			{
				Name:  "delete",
				Usage: "delete a template",
				Flags: clientFlags(tenantFlag(), &cli.StringFlag{Name: "name", Usage: "template name (required)"}),
				Action: withTenant(func(ctx context.Context, c *cli.Context, api *client.Client, id proto.Id) error {
					if err := required(c, "name"); err != nil {
						return err
					}
					return api.DeleteTemplate(ctx, id, c.String("name"))
				}),
			},
		},
	}
}

// eventFromFlags builds an event from --event, --data and --author.
func eventFromFlags(c *cli.Context, defaultName string) (proto.Event, error) {
	ev := proto.Event{Name: c.String("event")}
	if ev.Name == "" {
		ev.Name = defaultName
	}
	data := c.String("data")
	if data == "" {
		data = "null"
	}
	if !json.Valid([]byte(data)) {
		return ev, errors.New("bad --data: not valid JSON")
	}
	ev.Data = proto.Value(data)
	if c.IsSet("author") {
		a := c.String("author")
		ev.Author = &a
	}
	return ev, ev.Validate()
}

func eventFlags(required bool) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "event", Usage: eventUsage(required)},
		&cli.StringFlag{Name: "data", Usage: "event data as JSON"},
		&cli.StringFlag{Name: "author", Usage: "event author"},
	}
}

func dispatchCommand() *cli.Command {
	return &cli.Command{
		Name:  "dispatch",
		Usage: "dispatch an event to a tenant and print the results as JSON",
		Flags: clientFlags(append(eventFlags(true), tenantFlag(),
			&cli.BoolFlag{Name: "nowait", Usage: "queue the event and return without waiting"},
			&cli.DurationFlag{Name: "delay", Usage: "queue the event to run this long from now, e.g. 30s or 2h (implies --nowait)"})...),
		Action: withTenant(func(ctx context.Context, c *cli.Context, api *client.Client, id proto.Id) error {
			if err := required(c, "event"); err != nil {
				return err
			}
			ev, err := eventFromFlags(c, "")
			if err != nil {
				return err
			}
			if c.IsSet("delay") {
				a, err := api.DispatchDelayed(ctx, id, ev, c.Duration("delay"))
				if err != nil {
					return err
				}
				return printJSON(a)
			}
			if c.Bool("nowait") {
				eid, err := api.DispatchNoWaitID(ctx, id, ev)
				if err != nil {
					return err
				}
				return printJSON(map[string]any{"accepted": true, "id": eid})
			}
			v, err := api.Dispatch(ctx, id, ev)
			if err != nil {
				return err
			}
			fmt.Println(v.String())
			return nil
		}),
	}
}

func runCommand() *cli.Command {
	return &cli.Command{
		Name:      "run",
		Usage:     "run ad-hoc Lua in a tenant's VM from a file (- for stdin) and print its result",
		ArgsUsage: "FILE",
		Flags:     clientFlags(append(eventFlags(false), tenantFlag(), &cli.StringFlag{Name: "name", Value: "script", Usage: "script name (shown in errors)"})...),
		Action: withTenant(func(ctx context.Context, c *cli.Context, api *client.Client, id proto.Id) error {
			code, err := readSource(c, "script")
			if err != nil {
				return err
			}
			ev, err := eventFromFlags(c, "RunScript")
			if err != nil {
				return err
			}
			v, err := api.RunScript(ctx, id, c.String("name"), code, &ev)
			if err != nil {
				return err
			}
			fmt.Println(v.String())
			return nil
		}),
	}
}

func dropCommand() *cli.Command {
	return &cli.Command{
		Name:  "drop",
		Usage: "discard a tenant's VM (rebuilt on next use)",
		Flags: clientFlags(tenantFlag()),
		Action: withTenant(func(ctx context.Context, c *cli.Context, api *client.Client, id proto.Id) error {
			return api.DropTenant(ctx, id)
		}),
	}
}

func kvCommand() *cli.Command {
	return &cli.Command{
		Name:  "kv",
		Usage: "inspect a tenant's key-value store",
		Subcommands: []*cli.Command{{
			Name:  "list",
			Usage: "list keys and values, optionally with a prefix",
			Flags: clientFlags(tenantFlag(), &cli.StringFlag{Name: "prefix", Usage: "only keys starting with this"}),
			Action: withTenant(func(ctx context.Context, c *cli.Context, api *client.Client, id proto.Id) error {
				items, err := api.KV(ctx, id, c.String("prefix"))
				if err != nil {
					return err
				}
				return printJSON(map[string]any{"items": items})
			}),
		}},
	}
}

func workersCommand() *cli.Command {
	return &cli.Command{
		Name:  "workers",
		Usage: "show the workers: state, pid, uptime, restarts, failures, in-flight and queued calls, pending queued events",
		Flags: clientFlags(
			&cli.BoolFlag{Name: "json", Usage: "print the raw JSON"},
			&cli.BoolFlag{Name: "watch", Usage: "redraw the table every second until interrupted"}),
		Action: func(c *cli.Context) error {
			api, err := apiClient(c)
			if err != nil {
				return err
			}
			show := func() error {
				ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
				defer cancel()
				raw, err := api.Workers(ctx)
				if err != nil {
					return err
				}
				if c.Bool("json") {
					var v any
					_ = json.Unmarshal(raw, &v)
					return printJSON(v)
				}
				return printWorkers(os.Stdout, raw)
			}
			if !c.Bool("watch") {
				return show()
			}
			ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
			defer stop()
			for {
				fmt.Print("\033[H\033[2J") // home and clear the terminal
				fmt.Println(time.Now().Format("15:04:05"), "templateworker workers (Ctrl-C to stop)")
				if err := show(); err != nil {
					fmt.Println("error:", errorLine(err))
				}
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(time.Second):
				}
			}
		},
	}
}

// printWorkers renders /v1/workers as a table.
func printWorkers(w io.Writer, raw []byte) error {
	var out struct {
		Workers []master.WorkerStatus `json:"workers"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return fmt.Errorf("decode workers: %w", err)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tPID\tUPTIME\tRESTARTS\tFAILURES\tINFLIGHT\tQUEUED\tPENDING\tTENANTS\tEVICTED\tCOLD\tHEAP\tRSS\tLAST EXIT")
	for _, s := range out.Workers {
		pid := "-"
		if s.PID != 0 {
			pid = strconv.Itoa(s.PID)
		}
		evicted, cold := "-", "-"
		if cs := s.Cache; cs != nil {
			evicted = strconv.FormatInt(cs.EvictionsLRU+cs.EvictionsIdle+cs.EvictionsMemory, 10)
			cold = strconv.FormatInt(cs.ColdStarts, 10)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\n", s.ID, s.State, pid,
			(time.Duration(s.UptimeSeconds) * time.Second).String(), s.Restarts, s.ConsecutiveFailures,
			s.InFlight, s.Queued, s.Pending, s.Tenants, evicted, cold, mib(s.HeapBytes), mib(s.RSSBytes), s.LastExit)
	}
	return tw.Flush()
}

// mib renders a byte count in MiB for the workers table ("-" when unknown).
func mib(n int64) string {
	if n <= 0 {
		return "-"
	}
	return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + "MiB"
}

func restartWorkersCommand() *cli.Command {
	return &cli.Command{
		Name:  "restart-workers",
		Usage: "rolling restart: replace the worker processes one at a time without failing calls (as SIGHUP does)",
		Flags: clientFlags(),
		Action: withClient(func(ctx context.Context, c *cli.Context, api *client.Client) error {
			if err := api.RestartWorkers(ctx); err != nil {
				return err
			}
			fmt.Println("workers restarted")
			return nil
		}),
	}
}

func quarantineCommand() *cli.Command {
	return &cli.Command{
		Name:  "quarantine",
		Usage: "list and lift tenant quarantines",
		Subcommands: []*cli.Command{
			{
				Name:  "list",
				Usage: "list quarantined tenants, until when and why",
				Flags: clientFlags(),
				Action: withClient(func(ctx context.Context, c *cli.Context, api *client.Client) error {
					raw, err := api.Quarantined(ctx)
					if err != nil {
						return err
					}
					var v any
					_ = json.Unmarshal(raw, &v)
					return printJSON(v)
				}),
			},
			{
				Name:  "lift",
				Usage: "end a tenant's quarantine",
				Flags: clientFlags(tenantFlag()),
				Action: withTenant(func(ctx context.Context, c *cli.Context, api *client.Client, id proto.Id) error {
					if err := api.LiftQuarantine(ctx, id); err != nil {
						return err
					}
					fmt.Printf("quarantine of %s lifted\n", id)
					return nil
				}),
			},
		},
	}
}
