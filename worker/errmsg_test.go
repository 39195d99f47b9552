package worker

import (
	"context"
	"testing"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
)

// Template authors get the reference interpreter's messages, prefixed with
// the template's name and line ("name:LINE: message").
func TestTemplateErrorMessages(t *testing.T) {
	m := NewManager(0, 1, newMemStore(), DefaultLimits, zerolog.Nop())
	ctx := context.Background()
	for _, c := range []struct{ code, code2, want string }{
		{"x = 1\nreturn undefinedThing(1)", proto.CodeScriptError, "tpl:2: attempt to call global 'undefinedThing' (a nil value)"},
		{"local cfg = {}\nreturn cfg.db.host", proto.CodeScriptError, "tpl:2: attempt to index field 'db' (a nil value)"},
		{"local s = 'x'\nreturn s:rep()", proto.CodeScriptError, "tpl:2: bad argument #1 to 'rep' (number expected, got no value)"},
		{"return ('x'):find({})", proto.CodeScriptError, "tpl:1: bad argument #1 to 'find' (string expected, got table)"},
		{"local t = setmetatable({}, {__index = string})\nreturn t:upper()", proto.CodeScriptError, "tpl:2: calling 'upper' on bad self (string expected, got table)"},
		{"return {} < {}", proto.CodeScriptError, "tpl:1: attempt to compare two table values"},
		{"return collectgarbage('nooption')", proto.CodeScriptError, "tpl:1: bad argument #1 to 'collectgarbage' (invalid option 'nooption')"},
		{"return collectgarbage('collect')", proto.CodeScriptError, "tpl:1: collectgarbage: only \"count\" is allowed in templates"},
		{"local x = = 1", proto.CodeCompileError, "tpl:1: unexpected symbol near '='"},
		{"local x = 'abc\\q'", proto.CodeCompileError, "tpl:1: invalid escape sequence near '\\q'"},
		{"return 0x", proto.CodeCompileError, "tpl:1: malformed number near '0x'"},
		{"if x then\nreturn 1", proto.CodeCompileError, "tpl:2: 'end' expected (to close 'if' at line 1) near <eof>"},
	} {
		_, err := m.RunScript(ctx, proto.GuildID(1<<22), "tpl", c.code, ev("x", ""))
		pe := proto.AsError(err)
		want := c.want
		if c.code2 == proto.CodeScriptError {
			want = `script "tpl": ` + want // as the Manager reports runtime errors
		}
		if err == nil || pe.Code != c.code2 || pe.Message != want {
			t.Errorf("%q\n got: %v\nwant: %s: %s", c.code, err, c.code2, want)
		}
	}
}
