package main

import (
	"reflect"
	"testing"

	"github.com/urfave/cli/v2"
)

// TestEveryFlagHasItsEnvVar: each flag of each subcommand, whatever its
// type, can also be set as TEMPLATEWORKER_<FLAG>.
func TestEveryFlagHasItsEnvVar(t *testing.T) {
	var walk func(prefix string, cmds []*cli.Command)
	n := 0
	walk = func(prefix string, cmds []*cli.Command) {
		for _, c := range cmds {
			for _, f := range c.Flags {
				env := reflect.ValueOf(f).Elem().FieldByName("EnvVars")
				if !env.IsValid() {
					t.Errorf("%s%s --%s: flag type %T has no EnvVars", prefix, c.Name, f.Names()[0], f)
					continue
				}
				want := envVars(f.Names()[0])[0]
				got := env.Interface().([]string)
				if len(got) == 0 || got[0] != want {
					t.Errorf("%s%s --%s: env vars %v, want %s", prefix, c.Name, f.Names()[0], got, want)
				}
				n++
			}
			walk(prefix+c.Name+" ", c.Subcommands)
		}
	}
	walk("", newApp().Commands)
	if n < 20 {
		t.Fatalf("only %d flags seen", n)
	}
	if got := envVars("lua-max-worker-memory")[0]; got != "TEMPLATEWORKER_LUA_MAX_WORKER_MEMORY" {
		t.Fatalf("envVars = %s", got)
	}
}
