package drill

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// Print writes the summary: human-readable lines, then the same fields as
// one JSON line (the last line, for scripts).
func (r *Result) Print(w io.Writer) error {
	var b strings.Builder
	verdict := "PASS"
	if !r.OK {
		verdict = "FAIL: " + r.Reason
	}
	fmt.Fprintf(&b, "drill %s: %s\n", r.RunID, verdict)
	fmt.Fprintf(&b, "  worker                   %d\n", r.Worker)
	fmt.Fprintf(&b, "  signal                   SIG%s\n", r.Signal)
	fmt.Fprintf(&b, "  old pid -> new pid       %d -> %d\n", r.OldPID, r.NewPID)
	fmt.Fprintf(&b, "  recovery                 %.3fs\n", r.RecoverySeconds)
	fmt.Fprintf(&b, "  calls sent               %d\n", r.CallsSent)
	fmt.Fprintf(&b, "  calls failed             %d (%s)\n", r.CallsFailed, failureList(r.Failures))
	fmt.Fprintf(&b, "  failed on other workers  %d\n", r.FailedOnOthers)
	fmt.Fprintf(&b, "  nowait accepted          %d\n", r.NowaitAccepted)
	fmt.Fprintf(&b, "  nowait executed          %d\n", r.NowaitExecuted)
	fmt.Fprintf(&b, "  tenants                  %s (KV keys drill:%s:* are left there)\n", strings.Join(r.Tenants, ", "), r.RunID)
	if r.unexpected > 0 {
		fmt.Fprintf(&b, "  warning: %d calls on worker %d failed with another error than worker_unavailable\n", r.unexpected, r.Worker)
	}
	j, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode summary: %w", err)
	}
	b.Write(j)
	b.WriteByte('\n')
	_, err = io.WriteString(w, b.String())
	return err
}

func failureList(f []string) string {
	if len(f) == 0 {
		return "none"
	}
	return strings.Join(f, ", ")
}
