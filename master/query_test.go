package master

import (
	"net/url"
	"testing"
)

// TestQueryGetIsURLQuery holds queryGet to url.ParseQuery's answers.
func TestQueryGetIsURLQuery(t *testing.T) {
	for _, raw := range []string{
		"", "wait=false", "wait=0&delay=30s", "delay=1h30m&wait=false", "wait", "wait=", "wait=false&wait=true",
		"&&wait=1&", "x=1&wait=false", "waited=false", "w%61it=false", "wait=fa%6cse", "wait=a+b", "wait;x=1&wait=false",
		"delay=5&delay=6", "=false", "wait==false", "a=b=c&wait=%zz",
	} {
		want, _ := url.ParseQuery(raw)
		for _, key := range []string{"wait", "delay"} {
			if got := queryGet(raw, key); got != want.Get(key) {
				t.Errorf("queryGet(%q, %q) = %q, url.ParseQuery %q", raw, key, got, want.Get(key))
			}
		}
	}
}
