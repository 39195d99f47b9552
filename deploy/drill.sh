#!/bin/sh
# drill.sh — the kill-and-watch drill: signal one worker process of a running
# master under a light load and check that the pool recovers.
#
#   deploy/drill.sh [--data-dir DIR | --addr ADDR --api-token TOKEN]
#                   [--worker N | --random] [--signal KILL|TERM|STOP]
#                   [--load RPS] [--timeout S]
#
# A thin wrapper of `templateworker drill` (see its --help). The binary is
# $TEMPLATEWORKER_BIN, else ../bin/templateworker next to this script (a
# source checkout after `make build`), else templateworker on PATH.
set -eu

bin=${TEMPLATEWORKER_BIN:-}
if [ -z "$bin" ]; then
	here=$(cd "$(dirname "$0")" && pwd)
	if [ -x "$here/../bin/templateworker" ]; then
		bin=$here/../bin/templateworker
	elif command -v templateworker >/dev/null 2>&1; then
		bin=$(command -v templateworker)
	else
		echo "drill.sh: no templateworker binary: set TEMPLATEWORKER_BIN, run make build, or put it on PATH" >&2
		exit 1
	fi
fi
exec "$bin" drill "$@"
