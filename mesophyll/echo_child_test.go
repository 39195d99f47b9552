package mesophyll

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// echoChildEnv makes the test binary an echo server (BenchmarkWSEchoProcess).
const echoChildEnv = "MESOPHYLL_BENCH_ECHO_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(echoChildEnv) != "" {
		serveEchoChild()
		return
	}
	os.Exit(m.Run())
}

// echoHandler echoes every WebSocket message back.
var echoHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		return
	}
	defer ws.CloseNow()
	for {
		typ, msg, err := ws.Read(context.Background())
		if err != nil {
			return
		}
		if err := ws.Write(context.Background(), typ, msg); err != nil {
			return
		}
	}
})

// serveEchoChild serves echoHandler on 127.0.0.1:0 and on a Unix socket
// (Listen("unix")), prints both URLs on one line and serves until its
// stdin closes (the benchmark ended or died).
func serveEchoChild() {
	tcp, err := Listen("127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	unix, err := Listen("unix")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer unix.Close()
	fmt.Println(tcp.URL(), unix.URL())
	go func() { _ = http.Serve(tcp, echoHandler) }()
	go func() { _ = http.Serve(unix, echoHandler) }()
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
}

// BenchmarkWSEchoProcess is BenchmarkWSEcho with the echo server in another
// process, as a worker process is: the transport floor of the process
// topology, wake-ups of the other process included, over TCP loopback and
// over a Unix socket (Mesophyll's default).
func BenchmarkWSEchoProcess(b *testing.B) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), echoChildEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close() // the child removes its socket and exits
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	urls := strings.Fields(line)
	if err != nil || len(urls) != 2 {
		b.Fatalf("echo child said %q: %v", line, err)
	}
	b.Run("tcp", func(b *testing.B) { benchEcho(b, urls[0], cmd.Process.Pid) })
	b.Run("unix", func(b *testing.B) { benchEcho(b, urls[1], cmd.Process.Pid) })
}
