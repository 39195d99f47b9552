package store_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/store"
)

// readBytes is what this process has read with read system calls so far
// (/proc/self/io rchar): SQLite reads its database file with pread.
func readBytes(t *testing.T) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/io")
	if err != nil {
		t.Skipf("no /proc/self/io: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var n int64
		if _, err := fmt.Sscanf(sc.Text(), "rchar: %d", &n); err == nil {
			return n
		}
	}
	t.Skip("no rchar in /proc/self/io")
	return 0
}

// TestSQLiteBigValuesStayOutOfOthersLookups: a tenant's large KV values
// (its quota allows 64 of 256 KiB) do not make another tenant's reads
// read them. With the values inside the kv table's key b-tree (WITHOUT
// ROWID), every comparison of a lookup against a cell of a large value
// read the whole value from its overflow pages: a neighbour's KvGet of a
// missing key read megabytes of the other tenant's data.
func TestSQLiteBigValuesStayOutOfOthersLookups(t *testing.T) {
	s := openSQLite(t, store.Quota{})
	ctx := context.Background()
	big, small := proto.GuildID(1), proto.GuildID(2)
	v := json.RawMessage(`"` + strings.Repeat("v", 250000) + `"`)
	for i := 0; i < 60; i++ {
		if err := s.KvSet(ctx, big, fmt.Sprintf("k%03d", i), v); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.KvSet(ctx, small, "k", json.RawMessage(`1`)); err != nil {
		t.Fatal(err)
	}
	const gets = 200
	before := readBytes(t)
	for i := 0; i < gets; i++ {
		for _, k := range []string{"k", "missing", "k050"} {
			if _, _, err := s.KvGet(ctx, small, k); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := readBytes(t) - before; n > gets*3*16<<10 {
		t.Fatalf("%d KvGets of a small tenant read %d bytes (%d per get) beside another tenant's 60 values of 250 KB, want at most 16 KiB per get",
			gets*3, n, n/(gets*3))
	}
}

// TestSQLiteBigTemplatesStayOutOfOthersLookups: likewise for templates
// (code up to 512 KiB each): loading a small tenant's templates does not
// read another tenant's large code.
func TestSQLiteBigTemplatesStayOutOfOthersLookups(t *testing.T) {
	s := openSQLite(t, store.Quota{})
	ctx := context.Background()
	big, small := proto.GuildID(1), proto.GuildID(2)
	code := "return 1 --" + strings.Repeat("c", 500000)
	for i := 0; i < 8; i++ {
		if err := s.PutTemplate(ctx, big, proto.Template{Name: fmt.Sprintf("t%d", i), Code: code, Events: []string{"E"}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutTemplate(ctx, small, proto.Template{Name: "t", Code: "return 1", Events: []string{"E"}}); err != nil {
		t.Fatal(err)
	}
	const loads = 200
	before := readBytes(t)
	for i := 0; i < loads; i++ {
		if tpls, err := s.Templates(ctx, small); err != nil || len(tpls) != 1 {
			t.Fatalf("%v %v", tpls, err)
		}
	}
	if n := readBytes(t) - before; n > loads*16<<10 {
		t.Fatalf("%d template loads of a small tenant read %d bytes (%d per load) beside another tenant's 8 templates of 500 KB, want at most 16 KiB per load",
			loads, n, n/loads)
	}
}
