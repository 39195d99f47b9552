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
)

// eventsCommand is `templateworker events pending|cancel`: a tenant's
// durable queue as an operator sees it.
func eventsCommand() *cli.Command {
	return &cli.Command{
		Name:  "events",
		Usage: "list a tenant's pending events (immediate, delayed and scheduled) and cancel them",
		Subcommands: []*cli.Command{
			{
				Name:  "pending",
				Usage: "list a tenant's pending events in delivery order: id, event, due, attempts, last error",
				Flags: clientFlags(
					&cli.StringFlag{Name: "tenant", Usage: "the tenant (guild:<id> or user:<id>), required"},
					&cli.BoolFlag{Name: "scheduled", Usage: "only the events its templates scheduled (ctx.events.schedule)"},
					&cli.BoolFlag{Name: "json", Usage: "print the raw JSON, with each event's data"}),
				Action: withClient(func(ctx context.Context, c *cli.Context, api *client.Client) error {
					id, err := tenantArg(c)
					if err != nil {
						return err
					}
					list, err := api.PendingEvents(ctx, id, c.Bool("scheduled"))
					if err != nil {
						return err
					}
					if c.Bool("json") {
						list = nonNil(list)
						return printJSON(map[string]any{"tenant": id, "count": len(list), "pending": list})
					}
					return printPending(os.Stdout, list)
				}),
			},
			{
				Name:      "cancel",
				Usage:     "delete pending events of a tenant before they run (as ctx.events.cancel does)",
				ArgsUsage: "ID...",
				Flags: clientFlags(
					&cli.StringFlag{Name: "tenant", Usage: "the tenant (guild:<id> or user:<id>), required"}),
				Action: withClient(func(ctx context.Context, c *cli.Context, api *client.Client) error {
					id, err := tenantArg(c)
					if err != nil {
						return err
					}
					ids := c.Args().Slice()
					if len(ids) == 0 {
						return errors.New("give the IDs of the events to cancel (templateworker events pending lists them)")
					}
					return applyEach(ids, "event", "cancelled", func(e string) (string, error) {
						return "", api.CancelEvent(ctx, id, e)
					})
				}),
			},
		},
	}
}

// printPending renders pending events as a table.
func printPending(w io.Writer, list []client.Event) error {
	if len(list) == 0 {
		fmt.Fprintln(w, "no pending events")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tEVENT\tKIND\tDUE\tATTEMPTS\tLAST ERROR")
	for _, e := range list {
		kind, last := "event", lastErrorCell(e)
		switch {
		case e.Scheduled:
			kind = "scheduled"
		case e.DeliverAt.After(e.AcceptedAt):
			kind = "delayed"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", e.ID, oneLine(e.Event.Name, 64), kind,
			e.DeliverAt.Local().Format(time.DateTime), e.Attempts, last)
	}
	return tw.Flush()
}

// lastErrorCell is an event's last error as one table cell ("-" when none).
func lastErrorCell(e client.Event) string {
	if e.LastError == nil {
		return "-"
	}
	return oneLine(e.LastError.Code+": "+e.LastError.Message, 80)
}

// nonNil is list, or an empty list for nil, so that JSON prints [] rather
// than null.
func nonNil(list []client.Event) []client.Event {
	if list == nil {
		return []client.Event{}
	}
	return list
}
