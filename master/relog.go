package master

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"sync"

	"github.com/rs/zerolog"
)

// maxRelogLine is the longest worker output line the master re-logs
// whole; a longer one is cut to this many bytes and marked.
const maxRelogLine = 64 << 10

// relogLines copies a worker's output into the master's log line by line,
// with the master's worker_id and pid fields. A JSON log record keeps its
// level, message and fields; any other line is logged as its text. It
// reads continuously whatever the lines' length, so the worker never
// blocks writing to the pipe: a line over maxRelogLine bytes is cut there
// and logged with truncated=true and its real length in line_bytes.
func relogLines(wg *sync.WaitGroup, r io.Reader, log zerolog.Logger) {
	defer wg.Done()
	br := bufio.NewReaderSize(r, maxRelogLine)
	line := make([]byte, 0, 4096)
	for {
		line = line[:0]
		total := 0
		var err error
		for {
			var chunk []byte
			chunk, err = br.ReadSlice('\n')
			total += len(chunk)
			if room := maxRelogLine - len(line); room > 0 {
				line = append(line, chunk[:min(len(chunk), room)]...)
			}
			if !errors.Is(err, bufio.ErrBufferFull) {
				break
			}
		}
		if total > 0 {
			if err == nil { // the line ends with its newline
				total--
				if n := len(line); n > 0 && line[n-1] == '\n' {
					line = line[:n-1]
				}
			}
			if total > maxRelogLine {
				relogTruncated(log, line, total)
			} else {
				relogLine(log, line)
			}
		}
		if err != nil {
			return // io.EOF, or the pipe failed: the process is gone
		}
	}
}

// relogLine logs one whole line of worker output.
func relogLine(log zerolog.Logger, line []byte) {
	var rec map[string]any
	if len(line) > 1 && line[0] == '{' && json.Unmarshal(line, &rec) == nil {
		level, _ := rec["level"].(string)
		lvl, err := zerolog.ParseLevel(level)
		if err != nil {
			lvl = zerolog.InfoLevel
		}
		msg, _ := rec["message"].(string)
		for _, k := range []string{"level", "message", "time", "worker_id", "pid"} {
			delete(rec, k)
		}
		log.WithLevel(lvl).Fields(rec).Msg(msg)
		return
	}
	log.Info().Msg(string(line))
}

// relogTruncated logs the first maxRelogLine bytes of a longer line.
func relogTruncated(log zerolog.Logger, prefix []byte, total int) {
	log.Warn().Bool("truncated", true).Int("line_bytes", total).Int("kept_bytes", len(prefix)).
		Msg(string(prefix))
}
