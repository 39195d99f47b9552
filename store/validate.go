package store

import (
	"encoding/json"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/templateworker/templateworker/proto"
)

// checkKey enforces the key rules shared by every store: 1 to
// proto.MaxKeyBytes bytes of valid UTF-8 without NUL bytes.
func checkKey(key string) error {
	switch {
	case key == "":
		return proto.Errorf(proto.CodeInvalidKV, "key must not be empty")
	case len(key) > proto.MaxKeyBytes:
		return proto.Errorf(proto.CodeInvalidKV, "key is %d bytes, at most %d allowed", len(key), proto.MaxKeyBytes)
	case !utf8.ValidString(key):
		return proto.Errorf(proto.CodeInvalidKV, "key is not valid UTF-8")
	case strings.IndexByte(key, 0) >= 0:
		return proto.Errorf(proto.CodeInvalidKV, "key must not contain NUL bytes")
	}
	return nil
}

// checkValue enforces the value rules shared by every store: valid JSON in
// valid UTF-8, at most proto.MaxValueBytes bytes as given.
func checkValue(value json.RawMessage) error {
	switch {
	case len(value) > proto.MaxValueBytes:
		return proto.Errorf(proto.CodeInvalidKV, "value is %d bytes, at most %d allowed", len(value), proto.MaxValueBytes)
	case !json.Valid(value):
		return proto.Errorf(proto.CodeInvalidKV, "value is not valid JSON")
	case !utf8.Valid(value):
		return proto.Errorf(proto.CodeInvalidKV, "value is not valid UTF-8")
	}
	return nil
}

// checkPrefix validates a KvFind prefix. It reports false when no key can
// start with prefix (it is longer than any key), so the caller may answer
// with an empty list without asking the database.
func checkPrefix(prefix string) (possible bool, err error) {
	if !utf8.ValidString(prefix) {
		return false, proto.Errorf(proto.CodeInvalidKV, "prefix is not valid UTF-8")
	}
	if strings.IndexByte(prefix, 0) >= 0 {
		return false, proto.Errorf(proto.CodeInvalidKV, "prefix must not contain NUL bytes")
	}
	return len(prefix) <= proto.MaxKeyBytes, nil
}

// prefixEnd returns the smallest valid UTF-8 string greater than every string
// starting with prefix, so that "key >= prefix AND key < end" selects exactly
// the keys starting with prefix in byte order, with no character treated
// specially. ok is false when there is no such bound (prefix is empty or made
// only of U+10FFFF), and then "key >= prefix" alone is the range.
//
// UTF-8 orders code points the way their bytes sort and no encoding is a
// prefix of another, so replacing the last rune by its successor gives the
// bound; surrogates never occur in valid UTF-8 and are skipped.
func prefixEnd(prefix string) (end string, ok bool) {
	for prefix != "" {
		r, size := utf8.DecodeLastRuneInString(prefix)
		prefix = prefix[:len(prefix)-size]
		if r == utf8.MaxRune {
			continue
		}
		next := r + 1
		if next >= 0xD800 && next <= 0xDFFF {
			next = 0xE000
		}
		return prefix + string(next), true
	}
	return "", false
}

// kvSize is what a key-value pair counts against a tenant's byte quota.
func kvSize(key string, value []byte) int64 {
	return int64(len(key)) + int64(len(value))
}

// usage is what a tenant keeps in the key-value store.
type usage struct {
	keys  int64
	bytes int64
}

// checkQuota reports whether a tenant whose usage is u may set key to a value
// of newSize bytes (key included); oldSize is the size of the pair it
// replaces, or -1 when key is new. It returns the usage afterwards.
func checkQuota(q Quota, tenant proto.Id, u usage, oldSize, newSize int64) (usage, error) {
	after := u
	if oldSize < 0 {
		after.keys++
		after.bytes += newSize
	} else {
		after.bytes += newSize - oldSize
	}
	if q.MaxKeys > 0 && after.keys > u.keys && after.keys > int64(q.MaxKeys) {
		return u, proto.Errorf(proto.CodeKVQuotaExceeded,
			"tenant %s would have %d keys, at most %d allowed", tenant, after.keys, q.MaxKeys)
	}
	if q.MaxBytes > 0 && after.bytes > u.bytes && after.bytes > q.MaxBytes {
		return u, proto.Errorf(proto.CodeKVQuotaExceeded,
			"tenant %s would keep %d bytes of keys and values, at most %d allowed", tenant, after.bytes, q.MaxBytes)
	}
	return after, nil
}

// checkTemplate validates what the store needs of a template and returns it
// with its events deduplicated (first occurrence kept) and UpdatedAt set.
func checkTemplate(t proto.Template, now time.Time) (proto.Template, error) {
	if err := checkText("template name", t.Name); err != nil {
		return t, err
	}
	events := make([]string, 0, len(t.Events))
	seen := make(map[string]bool, len(t.Events))
	for _, e := range t.Events {
		if err := checkText("event name", e); err != nil {
			return t, err
		}
		if !seen[e] {
			seen[e] = true
			events = append(events, e)
		}
	}
	t.Events = events
	if t.UpdatedAt.IsZero() {
		t.UpdatedAt = now
	}
	t.UpdatedAt = t.UpdatedAt.UTC().Truncate(time.Microsecond)
	return t, nil
}

// checkText rejects what a database text column cannot hold faithfully.
func checkText(what, s string) error {
	switch {
	case s == "":
		return proto.Errorf(proto.CodeBadRequest, "%s must not be empty", what)
	case !utf8.ValidString(s):
		return proto.Errorf(proto.CodeBadRequest, "%s %q is not valid UTF-8", what, s)
	case strings.IndexByte(s, 0) >= 0:
		return proto.Errorf(proto.CodeBadRequest, "%s %q must not contain NUL bytes", what, s)
	}
	return nil
}

// kindName is how a tenant kind is stored: "Guild" or "User".
func kindName(k proto.Kind) (string, error) {
	switch k {
	case proto.Guild, proto.User:
		return k.String(), nil
	}
	return "", proto.Errorf(proto.CodeBadRequest, "unknown tenant kind %d", k)
}

// parseKind is the inverse of kindName.
func parseKind(s string) (proto.Kind, error) {
	switch s {
	case "Guild":
		return proto.Guild, nil
	case "User":
		return proto.User, nil
	}
	return 0, proto.Errorf(proto.CodeInternal, "database holds unknown tenant type %q", s)
}

// Tenant ids are uint64 snowflakes; both databases store them in a signed
// 64-bit column holding the same bits, so ids below 2^63 (every Discord
// snowflake) read the same in SQL, and larger ones still round-trip.

func idToDB(id uint64) int64 { return int64(id) }

func idFromDB(v int64) uint64 { return uint64(v) }

// tenantFromDB turns a row's tenant_type and tenant_id back into a tenant.
func tenantFromDB(kind string, id int64) (proto.Id, error) {
	k, err := parseKind(kind)
	if err != nil {
		return proto.Id{}, err
	}
	return proto.Id{Kind: k, ID: idFromDB(id)}, nil
}

// compareTenants orders tenants by kind, then id.
func compareTenants(a, b proto.Id) int {
	if a.Kind != b.Kind {
		if a.Kind < b.Kind {
			return -1
		}
		return 1
	}
	switch {
	case a.ID < b.ID:
		return -1
	case a.ID > b.ID:
		return 1
	}
	return 0
}

// checkTenantKey validates the tenant and key of a KV call and returns the
// tenant's kind as stored.
func checkTenantKey(tenant proto.Id, key string) (string, error) {
	kind, err := kindName(tenant.Kind)
	if err != nil {
		return "", err
	}
	if err := checkKey(key); err != nil {
		return "", err
	}
	return kind, nil
}

// checkSet validates the arguments of a KvSet and returns the tenant's
// kind as stored.
func checkSet(tenant proto.Id, key string, value json.RawMessage) (string, error) {
	kind, err := checkTenantKey(tenant, key)
	if err != nil {
		return "", err
	}
	if err := checkValue(value); err != nil {
		return "", err
	}
	return kind, nil
}
