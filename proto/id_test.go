package proto

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestWorkerIDKnownValues(t *testing.T) {
	cases := []struct {
		id   uint64
		n    int
		want int
	}{
		{0, 1, 0},
		{1 << 22, 2, 1},
		{2 << 22, 2, 0},
		{(1 << 22) - 1, 8, 0}, // below 2^22 every id lands on worker 0
		{1234567890123456789, 1, 0},
		{1234567890123456789, 2, int((1234567890123456789 >> 22) % 2)},
		{1234567890123456789, 8, 7}, // (id >> 22) % 8, spelled out below
		{^uint64(0), 16, int((^uint64(0) >> 22) % 16)},
	}
	// Spell the formula out independently for the one value above.
	if got := (uint64(1234567890123456789) >> 22) % 8; got != 7 {
		t.Fatalf("test table is wrong: %d", got)
	}
	for _, c := range cases {
		for _, id := range []Id{GuildID(c.id), UserID(c.id)} {
			if got := id.WorkerID(c.n); got != c.want {
				t.Errorf("%v.WorkerID(%d) = %d, want %d", id, c.n, got, c.want)
			}
		}
	}
}

func TestIdJSON(t *testing.T) {
	b, _ := json.Marshal(GuildID(123))
	if string(b) != `{"type":"Guild","id":"123"}` {
		t.Fatalf("marshal: %s", b)
	}
	b, _ = json.Marshal(UserID(18446744073709551615))
	if string(b) != `{"type":"User","id":"18446744073709551615"}` {
		t.Fatalf("marshal max: %s", b)
	}
	good := map[string]Id{
		`{"type":"Guild","id":"123"}`:                        GuildID(123),
		`{"id":"5","type":"User"}`:                           UserID(5),
		`{"type":"Guild","id":123}`:                          GuildID(123),
		`{"type":"User","id":18446744073709551615}`:          UserID(18446744073709551615),
		`{"type":"Guild","id":"1234567890123456789"}`:        GuildID(1234567890123456789),
		` { "type" : "Guild" , "id" : "9007199254740993" } `: GuildID(9007199254740993),
	}
	for in, want := range good {
		var id Id
		if err := json.Unmarshal([]byte(in), &id); err != nil || id != want {
			t.Errorf("%s: got %v %v, want %v", in, id, err, want)
		}
	}
	bad := map[string]string{
		`{"type":"Channel","id":"1"}`:                  "type must be",
		`{"type":"guild","id":"1"}`:                    "type must be",
		`{"type":"Guild"}`:                             "missing id",
		`{"type":"Guild","id":null}`:                   "missing id",
		`{"type":"Guild","id":"abc"}`:                  "invalid snowflake",
		`{"type":"Guild","id":"-1"}`:                   "invalid snowflake",
		`{"type":"Guild","id":"0"}`:                    "invalid snowflake",
		`{"type":"Guild","id":1.5}`:                    "not an exact unsigned integer",
		`{"type":"Guild","id":1e3}`:                    "not an exact unsigned integer",
		`{"type":"Guild","id":18446744073709551616}`:   "invalid snowflake",
		`{"type":"Guild","id":"18446744073709551616"}`: "invalid snowflake",
		`[1]`: "invalid tenant id",
	}
	for in, want := range bad {
		var id Id
		err := json.Unmarshal([]byte(in), &id)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want error containing %q", in, err, want)
		}
	}
}

func TestParseId(t *testing.T) {
	for in, want := range map[string]Id{
		"guild:123": GuildID(123), "Guild:123": GuildID(123), "user:7": UserID(7), "guild/9": GuildID(9),
	} {
		got, err := ParseId(in)
		if err != nil || got != want {
			t.Errorf("%q: %v %v", in, got, err)
		}
	}
	for _, in := range []string{"", "guild", "guild:", "guild:x", "team:1", "guild:-1", "guild:1:2", "guild: 1"} {
		if _, err := ParseId(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
	if s := GuildID(42).String(); s != "guild:42" {
		t.Errorf("String %q", s)
	}
	if p := UserID(42).Path(); p != "user/42" {
		t.Errorf("Path %q", p)
	}
}

func TestEventJSON(t *testing.T) {
	var ev Event
	if err := json.Unmarshal([]byte(`{"name":"Ping","author":"42","data":{"a":[1,2]}}`), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Name != "Ping" || *ev.Author != "42" || string(ev.Data) != `{"a":[1,2]}` {
		t.Fatalf("%+v", ev)
	}
	b, _ := json.Marshal(Event{Name: "X"})
	if string(b) != `{"name":"X","author":null,"data":null}` {
		t.Fatalf("marshal: %s", b)
	}
	if (Event{}).Validate() == nil || (Event{Name: strings.Repeat("x", 129)}).Validate() == nil {
		t.Fatal("bad events validated")
	}
}

func TestCanonicalIdFastPathAgreesWithFullDecode(t *testing.T) {
	for _, in := range []string{
		`{"type":"Guild","id":"123"}`, `{"type":"User","id":"18446744073709551615"}`,
		`{"type":"Guild","id":"18446744073709551616"}`, `{"type":"Guild","id":"0"}`, `{"type":"Guild","id":"0123"}`,
		`{"type":"Guild","id":""}`, `{"type":"Guild","id":"12a"}`, `{"type":"Guild","id":"-1"}`, `{"type":"Guild","id":"+1"}`,
		`{"type":"Guild","id":"1"} `, `{"type":"Guild","id":"1","x":1}`, `{"type":"Bot","id":"1"}`, `{"type":"Guild","id":1}`,
		`{"id":"5","type":"User"}`, `{"type":"Guild","id":"123456789012345678901"}`, `{"type":"Guild","id":"1"}}`,
	} {
		var fast, slow Id
		errFast := fast.UnmarshalJSON([]byte(in))
		errSlow := slow.unmarshalSlow([]byte(in))
		if (errFast == nil) != (errSlow == nil) || fast != slow {
			t.Errorf("%s: UnmarshalJSON %v, %v; full decode %v, %v", in, fast, errFast, slow, errSlow)
		}
	}
}
