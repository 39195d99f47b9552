package master

import (
	"encoding/json"
	"github.com/templateworker/templateworker/internal/syncbuf"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// TestRelogLinesLongLineDoesNotStallTheChild: a real child writes a 2 MiB
// line and then more lines; the reader keeps reading (the child exits
// instead of blocking on the pipe), the long line is cut and marked with
// its real length, and the lines after it are re-logged whole.
func TestRelogLinesLongLineDoesNotStallTheChild(t *testing.T) {
	script := `head -c 2097152 /dev/zero | tr '\0' x; echo
echo plain after
echo '{"level":"warn","message":"json after","tenant":"guild:1"}'
head -c 300000 /dev/zero | tr '\0' y; echo
echo last`
	cmd := exec.Command("sh", "-c", script)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var buf syncbuf.Buffer
	log := zerolog.New(&buf)
	var wg sync.WaitGroup
	wg.Add(1)
	go relogLines(&wg, out, log)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		t.Fatal("the reader did not reach the end of the child's output")
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	var recs []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %.200s", l)
		}
		recs = append(recs, m)
	}
	if len(recs) != 5 {
		t.Fatalf("%d records, want 5", len(recs))
	}
	long := recs[0]
	if long["truncated"] != true || long["line_bytes"] != float64(2097152) || len(long["message"].(string)) != maxRelogLine {
		t.Fatalf("long line record: truncated=%v line_bytes=%v message %d bytes", long["truncated"], long["line_bytes"], len(long["message"].(string)))
	}
	if recs[1]["message"] != "plain after" || recs[1]["truncated"] != nil {
		t.Fatalf("line after the long one: %v", recs[1])
	}
	if recs[2]["message"] != "json after" || recs[2]["level"] != "warn" || recs[2]["tenant"] != "guild:1" {
		t.Fatalf("JSON record after the long line: %v", recs[2])
	}
	if recs[3]["truncated"] != true || recs[3]["line_bytes"] != float64(300000) {
		t.Fatalf("second long line: %v", recs[3]["line_bytes"])
	}
	if recs[4]["message"] != "last" {
		t.Fatalf("last line: %v", recs[4])
	}
}
