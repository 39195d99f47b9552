#!/usr/bin/env bash
# Runs a command with TEMPLATEWORKER_TEST_DATABASE_URL set, so the
# PostgreSQL tests run too:
#
#   bash .ci/with-postgres.sh make test-go
#
# When the variable is already set, it is used as it is. Otherwise, when a
# PostgreSQL server is installed, a throwaway local cluster of this run's own
# is started with .ci/postgres.sh and stopped after the command (nothing is
# installed here: .ci/run installs the server on a clean machine). When no PostgreSQL can be started the command runs without
# it (its PostgreSQL tests skip, except under CI=true where they fail).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)

if [ -n "${TEMPLATEWORKER_TEST_DATABASE_URL:-}" ]; then
	exec "$@"
fi

# A cluster of this run's own, so that stopping it never disturbs another
# run (or a developer's cluster in the default directory).
export TEMPLATEWORKER_PG_DIR=${TMPDIR:-/tmp}/templateworker-pg-run-$$
# make test never installs packages; .ci/run does that.
export TEMPLATEWORKER_PG_NO_INSTALL=1
if env_line=$(bash "$here/postgres.sh" start); then
	eval "$env_line"
	export TEMPLATEWORKER_TEST_DATABASE_URL
	"$@"
	status=$?
	bash "$here/postgres.sh" stop || true
	exit $status
fi

echo "with-postgres.sh: no PostgreSQL available; its tests will skip (and fail under CI=true)" >&2
exec "$@"
