// Command templateworker runs the multi-tenant Lua template runtime: the
// master (HTTP API, store, worker supervision), its process workers, and
// the client subcommands operators use against a running master.
package main

import (
	"errors"
	"fmt"
	"os"
	"reflect"

	"github.com/urfave/cli/v2"

	"github.com/templateworker/templateworker/proto"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	app := newApp()
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "templateworker: "+errorLine(err))
		os.Exit(1)
	}
}

// errorLine renders err as one readable line.
func errorLine(err error) string {
	var pe *proto.Error
	if errors.As(err, &pe) {
		return pe.Code + ": " + pe.Message
	}
	return err.Error()
}

func newApp() *cli.App {
	app := &cli.App{
		Name:                 "templateworker",
		Usage:                "multi-tenant Lua template runtime",
		Version:              version,
		EnableBashCompletion: false,
		HideHelpCommand:      true,
		Flags:                workerProcessFlags(),
		Action:               runWorkerProcessOrHelp,
		Commands: []*cli.Command{
			masterCommand(),
			templateCommand(),
			dispatchCommand(),
			runCommand(),
			dropCommand(),
			kvCommand(),
			workersCommand(),
			restartWorkersCommand(),
			quarantineCommand(),
			eventsCommand(),
			deadLettersCommand(),
			migrateCommand(),
			clusterCommand(),
			drillCommand(),
			{
				Name:  "version",
				Usage: "print the version",
				Action: func(c *cli.Context) error {
					fmt.Println("templateworker " + version)
					return nil
				},
			},
		},
		ExitErrHandler: func(c *cli.Context, err error) {},
		OnUsageError:   usageError,
	}
	setUsageError(app.Commands)
	setEnvVars(app.Commands)
	return app
}

// setEnvVars gives every subcommand flag that has none the environment
// variable TEMPLATEWORKER_<FLAG>, so that each can be set either way. Every
// flag type of urfave/cli keeps its variables in an EnvVars field.
func setEnvVars(cmds []*cli.Command) {
	for _, c := range cmds {
		for _, f := range c.Flags {
			v := reflect.ValueOf(f)
			if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
				continue
			}
			env := v.Elem().FieldByName("EnvVars")
			if env.IsValid() && env.CanSet() && env.Len() == 0 {
				env.Set(reflect.ValueOf(envVars(f.Names()[0])))
			}
		}
		setEnvVars(c.Subcommands)
	}
}

// usageError turns a flag error into one readable line instead of the
// library's help page.
func usageError(c *cli.Context, err error, _ bool) error {
	name := c.App.Name
	if c.Command != nil && c.Command.HelpName != "" {
		name = c.Command.HelpName
	}
	return fmt.Errorf("%w (see %s --help)", err, name)
}

func setUsageError(cmds []*cli.Command) {
	for _, c := range cmds {
		c.OnUsageError = usageError
		setUsageError(c.Subcommands)
	}
}

// envVars names the environment variable of a flag: TEMPLATEWORKER_<FLAG>.
func envVars(flag string) []string {
	b := []byte("TEMPLATEWORKER_")
	for _, c := range flag {
		switch {
		case c == '-':
			b = append(b, '_')
		case c >= 'a' && c <= 'z':
			b = append(b, byte(c-'a'+'A'))
		default:
			b = append(b, byte(c))
		}
	}
	return []string{string(b)}
}
