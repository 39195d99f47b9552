package master

import (
	"fmt"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/rs/zerolog"
)

// notifier speaks the systemd notify protocol: READY=1 once every worker is
// ready, WATCHDOG=1 while the master loop is healthy, STATUS= with a one-line
// summary, STOPPING=1 on shutdown. Without NOTIFY_SOCKET every call is a
// no-op.
type notifier struct {
	log        zerolog.Logger
	watchdog   time.Duration // 0 when systemd expects no watchdog pings
	lastPing   time.Time
	lastStatus string
	ready      bool
}

func newNotifier(log zerolog.Logger) *notifier {
	n := &notifier{log: log}
	if d, err := daemon.SdWatchdogEnabled(false); err == nil && d > 0 {
		n.watchdog = d
	}
	return n
}

func (n *notifier) send(state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		n.log.Warn().Err(err).Msg("sd_notify")
	}
}

// tick is called by the master loop regularly: it reports readiness and
// status, and pings the watchdog, proving the loop is alive.
func (n *notifier) tick(pool *Pool) {
	ready, total, restarts := 0, 0, 0
	for _, s := range pool.Status() {
		total++
		if s.State == StateReady || s.State == "running" {
			ready++
		}
		restarts += s.Restarts
	}
	if !n.ready && ready == total {
		n.ready = true
		n.send("READY=1")
		n.log.Info().Int("workers", total).Msg("all workers ready")
	}
	status := fmt.Sprintf("workers ready %d/%d, restarts %d", ready, total, restarts)
	if status != n.lastStatus {
		n.lastStatus = status
		n.send("STATUS=" + status)
	}
	if n.watchdog > 0 && time.Since(n.lastPing) >= n.watchdog/3 {
		n.lastPing = time.Now()
		n.send("WATCHDOG=1")
	}
}

// stopping tells systemd the master is shutting down.
func (n *notifier) stopping() {
	n.send("STOPPING=1")
	n.send("STATUS=shutting down")
}
