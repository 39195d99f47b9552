package storetest

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/store"
)

var quotaTests = []test{
	{"QuotaKeys", testQuotaKeys},
	{"QuotaBytes", testQuotaBytes},
	{"QuotaUnlimited", testQuotaUnlimited},
}

func testQuotaKeys(t *testing.T, open Opener) {
	s := open(t, store.Quota{MaxKeys: 3})
	c := ctx(t)
	set(t, s, guild, "a", `1`)
	set(t, s, guild, "b", `2`)
	set(t, s, guild, "c", `3`)
	pe := wantCode(t, s.KvSet(c, guild, "d", json.RawMessage(`4`)), proto.CodeKVQuotaExceeded)
	if !strings.Contains(pe.Message, "3") {
		t.Errorf("message %q does not name the limit", pe.Message)
	}
	if v := get(t, s, guild, "d"); v != "" {
		t.Fatalf("rejected key was stored: %s", v)
	}
	set(t, s, guild, "c", `"replaced"`) // replacing adds no key
	must(t, s.KvDelete(c, guild, "a"))
	set(t, s, guild, "d", `4`)
	wantCode(t, s.KvSet(c, guild, "e", json.RawMessage(`5`)), proto.CodeKVQuotaExceeded)
	equal(t, "keys", keys(t, s, guild, ""), []string{"b", "c", "d"})
	set(t, s, user, "other tenant", `1`) // quotas are per tenant
}

func testQuotaBytes(t *testing.T, open Opener) {
	const max = 100
	s := open(t, store.Quota{MaxBytes: max})
	c := ctx(t)
	str := func(n int) string { return `"` + strings.Repeat("x", n-2) + `"` } // n bytes of JSON

	set(t, s, guild, "a", str(49))  // 1+49 = 50
	set(t, s, guild, "bb", str(48)) // 2+48 = 50: exactly at the limit
	pe := wantCode(t, s.KvSet(c, guild, "c", json.RawMessage(`1`)), proto.CodeKVQuotaExceeded)
	if !strings.Contains(pe.Message, "100") {
		t.Errorf("message %q does not name the limit", pe.Message)
	}
	// Growing a value counts the difference; a failed write changes nothing.
	wantCode(t, s.KvSet(c, guild, "a", json.RawMessage(str(50))), proto.CodeKVQuotaExceeded)
	if v := get(t, s, guild, "a"); v != str(49) {
		t.Fatalf("a = %s after a rejected write, want the old value", v)
	}
	equal(t, "keys", keys(t, s, guild, ""), []string{"a", "bb"})
	// Shrinking frees room, and so does deleting.
	set(t, s, guild, "a", str(39)) // 40
	set(t, s, guild, "c", str(9))  // 10: 100 again
	wantCode(t, s.KvSet(c, guild, "d", json.RawMessage(`1`)), proto.CodeKVQuotaExceeded)
	must(t, s.KvDelete(c, guild, "bb"))
	set(t, s, guild, "d", str(49)) // 40+10+50
	wantCode(t, s.KvSet(c, guild, "e", json.RawMessage(`1`)), proto.CodeKVQuotaExceeded)
	// A value that alone exceeds the quota.
	wantCode(t, s.KvSet(c, user, "k", json.RawMessage(str(max))), proto.CodeKVQuotaExceeded)
	set(t, s, user, "k", str(max-1))
}

func testQuotaUnlimited(t *testing.T, open Opener) {
	s := open(t, store.Quota{})
	big := `"` + strings.Repeat("x", proto.MaxValueBytes-2) + `"`
	for _, k := range []string{"1", "2", "3", "4", "5"} {
		set(t, s, guild, k, big)
	}
	if n := len(keys(t, s, guild, "")); n != 5 {
		t.Fatalf("%d keys, want 5", n)
	}
}
