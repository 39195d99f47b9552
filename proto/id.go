package proto

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Kind says which Discord entity a tenant is.
type Kind uint8

const (
	// Guild is a Discord server.
	Guild Kind = iota
	// User is a single Discord user (user-installed apps).
	User
)

// String returns the JSON spelling of the kind: "Guild" or "User".
func (k Kind) String() string {
	switch k {
	case Guild:
		return "Guild"
	case User:
		return "User"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Id identifies a tenant: a Guild or User snowflake. Its JSON form is exactly
// {"type":"Guild","id":"123"}; the CLI and URL forms are "guild:123" and
// "guild/123".
type Id struct {
	Kind Kind
	ID   uint64
}

// GuildID returns the tenant id of a guild.
func GuildID(id uint64) Id { return Id{Kind: Guild, ID: id} }

// UserID returns the tenant id of a user.
func UserID(id uint64) Id { return Id{Kind: User, ID: id} }

// WorkerID returns the worker that owns this tenant in a pool of n workers,
// using Discord's sharding formula (id >> 22) % n. n must be positive.
func (id Id) WorkerID(n int) int {
	return int((id.ID >> 22) % uint64(n))
}

// String returns the CLI form, e.g. "guild:123".
func (id Id) String() string {
	return strings.ToLower(id.Kind.String()) + ":" + strconv.FormatUint(id.ID, 10)
}

// Path returns the URL form used by the HTTP API, e.g. "guild/123".
func (id Id) Path() string {
	return strings.ToLower(id.Kind.String()) + "/" + strconv.FormatUint(id.ID, 10)
}

// ParseKind parses "guild"/"Guild" or "user"/"User".
func ParseKind(s string) (Kind, error) {
	switch strings.ToLower(s) {
	case "guild":
		return Guild, nil
	case "user":
		return User, nil
	}
	return 0, fmt.Errorf("unknown tenant type %q (want guild or user)", s)
}

// ParseId parses the CLI form "guild:123" or "user:123" (the separator may
// also be '/', as in URLs).
func ParseId(s string) (Id, error) {
	i := strings.IndexAny(s, ":/")
	if i < 0 {
		return Id{}, fmt.Errorf("invalid tenant %q: want guild:<id> or user:<id>", s)
	}
	return ParseIdParts(s[:i], s[i+1:])
}

// ParseIdParts parses a tenant from its type and decimal snowflake.
func ParseIdParts(kind, id string) (Id, error) {
	k, err := ParseKind(kind)
	if err != nil {
		return Id{}, err
	}
	n, err := parseSnowflake(id)
	if err != nil {
		return Id{}, err
	}
	return Id{Kind: k, ID: n}, nil
}

func parseSnowflake(s string) (uint64, error) {
	if s == "" || len(s) > 20 || s[0] == '+' || s[0] == '-' {
		return 0, fmt.Errorf("invalid snowflake %q: want a decimal unsigned 64-bit integer", s)
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("invalid snowflake %q: want a decimal unsigned 64-bit integer above 0", s)
	}
	return n, nil
}

type idJSON struct {
	Type string          `json:"type"`
	ID   json.RawMessage `json:"id"`
}

// MarshalJSON encodes the id as {"type":"Guild","id":"123"}.
func (id Id) MarshalJSON() ([]byte, error) {
	return id.AppendJSON(make([]byte, 0, 48)), nil
}

// AppendJSON appends id as MarshalJSON spells it, for encoders that build
// a frame by hand.
func (id Id) AppendJSON(b []byte) []byte {
	b = append(b, `{"type":"`...)
	b = append(b, id.Kind.String()...)
	b = append(b, `","id":"`...)
	b = strconv.AppendUint(b, id.ID, 10)
	return append(b, `"}`...)
}

// parseCanonicalId parses the spelling MarshalJSON writes,
// {"type":"Guild","id":"123"} exactly, without reflection; ok is false
// for anything else (UnmarshalJSON then decodes it in full).
func parseCanonicalId(b []byte) (Id, bool) {
	var k Kind
	switch {
	case bytes.HasPrefix(b, []byte(`{"type":"Guild","id":"`)):
		k, b = Guild, b[len(`{"type":"Guild","id":"`):]
	case bytes.HasPrefix(b, []byte(`{"type":"User","id":"`)):
		k, b = User, b[len(`{"type":"User","id":"`):]
	default:
		return Id{}, false
	}
	digits, ok := bytes.CutSuffix(b, []byte(`"}`))
	if !ok || len(digits) == 0 || len(digits) > 20 {
		return Id{}, false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return Id{}, false
		}
	}
	n, err := parseSnowflake(string(digits))
	if err != nil {
		return Id{}, false
	}
	return Id{Kind: k, ID: n}, true
}

// UnmarshalJSON accepts {"type":"Guild","id":"123"}, and a JSON number for id
// when it is an exact integer.
func (id *Id) UnmarshalJSON(b []byte) error {
	if v, ok := parseCanonicalId(b); ok {
		*id = v
		return nil
	}
	return id.unmarshalSlow(b)
}

// unmarshalSlow is UnmarshalJSON for any spelling.
func (id *Id) unmarshalSlow(b []byte) error {
	var v idJSON
	if err := json.Unmarshal(b, &v); err != nil {
		return fmt.Errorf("invalid tenant id: %w", err)
	}
	if v.Type != "Guild" && v.Type != "User" {
		return fmt.Errorf("invalid tenant id: type must be \"Guild\" or \"User\", got %q", v.Type)
	}
	k, _ := ParseKind(v.Type)
	raw := strings.TrimSpace(string(v.ID))
	var digits string
	switch {
	case strings.HasPrefix(raw, `"`):
		if err := json.Unmarshal(v.ID, &digits); err != nil {
			return fmt.Errorf("invalid tenant id: %w", err)
		}
	case raw == "" || raw == "null":
		return fmt.Errorf("invalid tenant id: missing id")
	default:
		// A JSON number: only exact integers are accepted (no fraction,
		// no exponent), so that ids above 2^53 are never silently rounded.
		for _, c := range raw {
			if c < '0' || c > '9' {
				return fmt.Errorf("invalid tenant id: id %s is not an exact unsigned integer", raw)
			}
		}
		digits = raw
	}
	n, err := parseSnowflake(digits)
	if err != nil {
		return fmt.Errorf("invalid tenant id: %w", err)
	}
	*id = Id{Kind: k, ID: n}
	return nil
}
