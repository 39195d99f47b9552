package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/templateworker/templateworker/drill"
	"github.com/templateworker/templateworker/master"
)

func drillCommand() *cli.Command {
	return &cli.Command{
		Name:  "drill",
		Usage: "kill-and-watch drill: signal one worker process under a light load and check the pool recovers",
		Description: "Puts a light dispatch load (half waited, half nowait) on every worker through fresh drill\n" +
			"tenants, sends the signal to one worker's process, watches /v1/workers until the master has\n" +
			"replaced it, and prints a summary (the last line is JSON). It exits 0 only when the worker was\n" +
			"ready again within --timeout, no call failed on another worker and every accepted nowait\n" +
			"event ran. The master must run on this machine (loopback address) with --process-workers.\n" +
			"It leaves the KV keys drill:<run-id>:<n> in the drill tenants (range >= 2^63).",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "addr", Usage: "master API address, loopback only (default: the running master's in --data-dir, else http://127.0.0.1:7878)", EnvVars: envVars("addr")},
			&cli.StringFlag{Name: "data-dir", Value: "./data", Usage: "data directory of the master, for its token and address", EnvVars: envVars("data-dir")},
			&cli.StringFlag{Name: "api-token", Usage: "API bearer token (default: read from --data-dir)", EnvVars: envVars("api-token")},
			&cli.IntFlag{Name: "worker", Value: 0, Usage: "the worker to signal"},
			&cli.BoolFlag{Name: "random", Usage: "signal a random worker instead of --worker"},
			&cli.StringFlag{Name: "signal", Value: "KILL", Usage: "KILL, TERM or STOP (a stopped worker misses its heartbeats and is replaced)"},
			&cli.IntFlag{Name: "load", Value: 20, Usage: fmt.Sprintf("dispatch calls per second over all workers (1..%d)", drill.MaxRPS)},
			&cli.StringFlag{Name: "timeout", Value: "30", Usage: "seconds (or a duration such as 45s) the worker may take to recover; also bounds the wait for a ready pool and for the nowait events"},
		},
		Action: runDrill,
	}
}

func runDrill(c *cli.Context) error {
	if c.IsSet("worker") && c.Bool("random") {
		return errors.New("give --worker or --random, not both")
	}
	sig, err := drill.ParseSignal(c.String("signal"))
	if err != nil {
		return fmt.Errorf("bad --signal: %w", err)
	}
	timeout, err := parseSeconds(c.String("timeout"))
	if err != nil {
		return fmt.Errorf("bad --timeout: %w", err)
	}
	addr, token, err := masterEndpoint(c)
	if err != nil {
		return err
	}
	res, err := drill.Run(c.Context, drill.Config{
		Addr: addr, Token: token,
		Worker: c.Int("worker"), Random: c.Bool("random"),
		Signal: sig, RPS: c.Int("load"), Timeout: timeout,
		Progress: os.Stderr,
	})
	if err != nil {
		return fmt.Errorf("drill: %w", err)
	}
	if err := res.Print(os.Stdout); err != nil {
		return err
	}
	if !res.OK {
		return fmt.Errorf("drill failed: %s", res.Reason)
	}
	return nil
}

// masterEndpoint finds the master's address and token the way the client
// subcommands do: flags, else the files the master wrote in --data-dir.
func masterEndpoint(c *cli.Context) (addr, token string, err error) {
	dir := c.String("data-dir")
	addr = c.String("addr")
	if addr == "" {
		if b, err := os.ReadFile(filepath.Join(dir, master.AddrFile)); err == nil {
			addr = strings.TrimSpace(string(b))
		} else {
			addr = "http://127.0.0.1:7878"
		}
	}
	token = c.String("api-token")
	if token == "" {
		b, err := os.ReadFile(filepath.Join(dir, master.TokenFile))
		if err != nil {
			return "", "", fmt.Errorf("no API token: give --api-token or run where --data-dir (%s) holds the master's %s", dir, master.TokenFile)
		}
		token = strings.TrimSpace(string(b))
	}
	return addr, token, nil
}

// parseSeconds reads a number of seconds ("30", "2.5") or a Go duration.
func parseSeconds(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		f, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil {
			return 0, fmt.Errorf("%q is neither seconds nor a duration", s)
		}
		d = time.Duration(f * float64(time.Second))
	}
	if d <= 0 {
		return 0, fmt.Errorf("%q: want a positive time", s)
	}
	return d, nil
}
