package store

import (
	"net/url"
	"regexp"
	"strings"
)

// redacted replaces a password wherever RedactURL finds one.
const redacted = "xxxxx"

var (
	// dsnPassword matches password=... in a key=value DSN, the value quoted
	// ('...' with backslash escapes) or bare.
	dsnPassword = regexp.MustCompile(`(^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'?|\S*)`)
	// queryPassword matches the password parameter of a URL query.
	queryPassword = regexp.MustCompile(`(^|[?&])password=[^&]*`)
)

// RedactURL returns a PostgreSQL URL or key=value DSN with any password
// replaced by "xxxxx", for logs and error messages. Strings it cannot parse
// are redacted on a best-effort basis that errs towards hiding too much.
func RedactURL(s string) string {
	scheme, rest, isURL := strings.Cut(s, "://")
	if !isURL {
		return dsnPassword.ReplaceAllString(s, "${1}password="+redacted)
	}
	if u, err := url.Parse(s); err == nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), redacted)
		}
		u.RawQuery = queryPassword.ReplaceAllString(u.RawQuery, "${1}password="+redacted)
		return u.String()
	}
	// Unparsable: hide everything between the first ':' of the user info
	// and its last '@', then any password parameter.
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		if user, _, ok := strings.Cut(rest[:at], ":"); ok {
			rest = user + ":" + redacted + rest[at:]
		}
	}
	return queryPassword.ReplaceAllString(scheme+"://"+rest, "${1}password="+redacted)
}

// redactSecret removes password, when it is not empty, from msg.
func redactSecret(msg, password string) string {
	if password == "" {
		return msg
	}
	return strings.ReplaceAll(msg, password, redacted)
}
