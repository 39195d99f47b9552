package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/templateworker/templateworker/client"
	"github.com/templateworker/templateworker/proto"
)

// deadLetterPage is the most dead letters one page of a list holds.
const deadLetterPage = 10000

func deadLettersCommand() *cli.Command {
	selectFlags := func() []cli.Flag {
		return clientFlags(
			&cli.StringFlag{Name: "tenant", Usage: "every dead letter of this tenant (guild:<id> or user:<id>) instead of IDs"},
			&cli.BoolFlag{Name: "all", Usage: "every dead letter instead of IDs"})
	}
	return &cli.Command{
		Name:  "dead-letters",
		Usage: "list, retry and purge events that failed --event-max-attempts times",
		Subcommands: []*cli.Command{
			{
				Name:  "list",
				Usage: "list dead letters, oldest first: id, tenant, event, attempts, when, last error",
				Flags: clientFlags(
					&cli.StringFlag{Name: "tenant", Usage: "only this tenant's (guild:<id> or user:<id>)"},
					&cli.IntFlag{Name: "limit", Value: 1000, Usage: "list at most this many (1 to 10000)"},
					&cli.StringFlag{Name: "after", Usage: "list those after this dead letter ID (the last one of the page before)"},
					&cli.BoolFlag{Name: "json", Usage: "print the raw JSON, with each event's data"}),
				Action: withClient(func(ctx context.Context, c *cli.Context, api *client.Client) error {
					tenant, err := optionalTenant(c)
					if err != nil {
						return err
					}
					if n := c.Int("limit"); n < 1 || n > deadLetterPage {
						return fmt.Errorf("bad --limit %d: want 1 to %d", n, deadLetterPage)
					}
					list, more, err := api.DeadLetters(ctx, tenant, c.String("after"), c.Int("limit"))
					if err != nil {
						return err
					}
					if c.Bool("json") {
						return printJSON(map[string]any{"dead_letters": nonNil(list), "more": more})
					}
					if err := printDeadLetters(os.Stdout, list); err != nil {
						return err
					}
					if more {
						fmt.Printf("more dead letters follow: list them with --after %s\n", list[len(list)-1].ID)
					}
					return nil
				}),
			},
			{
				Name:      "retry",
				Usage:     "put dead letters back into their tenant's queue, attempts reset: by ID, or --tenant / --all",
				ArgsUsage: "[ID...]",
				Flags:     selectFlags(),
				Action: withClient(func(ctx context.Context, c *cli.Context, api *client.Client) error {
					return eachDeadLetter(ctx, c, api, "requeued", func(ctx context.Context, id string) (string, error) {
						ev, err := api.RetryDeadLetter(ctx, id)
						return ev.Tenant.String() + " " + ev.Event.Name, err
					})
				}),
			},
			{
				Name:      "purge",
				Usage:     "delete dead letters for good: by ID, or --tenant / --all",
				ArgsUsage: "[ID...]",
				Flags:     selectFlags(),
				Action: withClient(func(ctx context.Context, c *cli.Context, api *client.Client) error {
					return eachDeadLetter(ctx, c, api, "purged", func(ctx context.Context, id string) (string, error) {
						return "", api.DeleteDeadLetter(ctx, id)
					})
				}),
			},
		},
	}
}

// optionalTenant parses --tenant when it is given.
func optionalTenant(c *cli.Context) (*proto.Id, error) {
	if c.String("tenant") == "" {
		return nil, nil
	}
	id, err := tenantArg(c)
	if err != nil {
		return nil, err
	}
	return &id, nil
}

// eachDeadLetter applies do to the dead letters the arguments select (IDs,
// --tenant or --all, exactly one of them), printing a line for each on
// stdout, and fails (one line on stderr) when any failed: the others are
// still done.
func eachDeadLetter(ctx context.Context, c *cli.Context, api *client.Client, done string, do func(ctx context.Context, id string) (string, error)) error {
	ids := c.Args().Slice()
	tenant, err := optionalTenant(c)
	if err != nil {
		return err
	}
	chosen := 0
	for _, b := range []bool{len(ids) > 0, tenant != nil, c.Bool("all")} {
		if b {
			chosen++
		}
	}
	if chosen != 1 {
		return errors.New("give dead letter IDs, or --tenant guild:<id>, or --all (exactly one of them)")
	}
	if len(ids) == 0 {
		if ids, err = deadLetterIDs(ctx, api, tenant); err != nil {
			return err
		}
		if len(ids) == 0 {
			fmt.Println("no dead letters")
			return nil
		}
	}
	return applyEach(ids, "dead letter", done, func(id string) (string, error) { return do(ctx, id) })
}

// deadLetterIDs lists the IDs of every dead letter (of tenant when not
// nil), page by page: a page ends at the master's byte bound as well as at
// deadLetterPage, and the next one starts after its last ID.
func deadLetterIDs(ctx context.Context, api *client.Client, tenant *proto.Id) ([]string, error) {
	var ids []string
	after := ""
	for {
		list, more, err := api.DeadLetters(ctx, tenant, after, deadLetterPage)
		if err != nil {
			return nil, err
		}
		for _, e := range list {
			ids = append(ids, e.ID)
		}
		if !more || len(list) == 0 {
			return ids, nil
		}
		after = list[len(list)-1].ID
	}
}

// printDeadLetters renders dead letters as a table.
func printDeadLetters(w io.Writer, list []client.Event) error {
	if len(list) == 0 {
		fmt.Fprintln(w, "no dead letters")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTENANT\tEVENT\tATTEMPTS\tACCEPTED\tDEAD\tLAST ERROR")
	for _, e := range list {
		dead, last := "-", lastErrorCell(e)
		if e.DeadAt != nil {
			dead = e.DeadAt.Local().Format(time.DateTime)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", e.ID, e.Tenant, oneLine(e.Event.Name, 64), e.Attempts,
			e.AcceptedAt.Local().Format(time.DateTime), dead, last)
	}
	return tw.Flush()
}
