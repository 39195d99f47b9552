package store

import (
	"strings"
	"testing"
)

func TestRedactURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"postgres://u:secret@localhost:5432/db", "postgres://u:xxxxx@localhost:5432/db"},
		{"postgresql://u:s%40cret@h/db?sslmode=disable", "postgresql://u:xxxxx@h/db?sslmode=disable"},
		{"postgres://u@h/db", "postgres://u@h/db"},
		{"postgres://h/db?sslmode=disable&password=secret", "postgres://h/db?sslmode=disable&password=xxxxx"},
		{"postgres://h/db?password=secret&x=1", "postgres://h/db?password=xxxxx&x=1"},
		{"postgres://u:se/cret@host/db", "postgres://u:xxxxx@host/db"},
		{"postgres://u:secret@h1:5432,h2:5433/db", "postgres://u:xxxxx@h1:5432,h2:5433/db"},
		{"host=h user=u password=secret dbname=db", "host=h user=u password=xxxxx dbname=db"},
		{"password=secret host=h", "password=xxxxx host=h"},
		{"host=h password = 'sec ret\\' x' dbname=db", "host=h password=xxxxx dbname=db"},
		{"host=h password='unterminated secret", "host=h password=xxxxx"},
		{"host=h dbname=db", "host=h dbname=db"},
		{"", ""},
	}
	for _, tt := range tests {
		got := RedactURL(tt.in)
		if got != tt.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if strings.Contains(got, "cret") || strings.Contains(got, "sec ret") {
			t.Errorf("RedactURL(%q) = %q leaks the password", tt.in, got)
		}
	}
}
