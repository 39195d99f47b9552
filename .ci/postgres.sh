#!/usr/bin/env bash
# Throwaway PostgreSQL for the tests.
#
#   eval "$(bash .ci/postgres.sh start)"   # sets TEMPLATEWORKER_TEST_DATABASE_URL
#   bash .ci/postgres.sh stop
#
# start installs the server with apt-get when it is missing (as root), then
# runs a private cluster in $TEMPLATEWORKER_PG_DIR (default
# /tmp/templateworker-pg): initdb into a fresh directory, listening on a free
# port of 127.0.0.1 only, its unix socket inside that directory, so it never
# touches the machine's own clusters. It creates the database
# templateworker_test owned by the password-authenticated role templateworker
# and prints the export line on stdout; everything else goes to stderr.
# Starting again while the cluster runs prints the same line. stop shuts the
# cluster down and removes its directory.
set -euo pipefail

dir=${TEMPLATEWORKER_PG_DIR:-/tmp/templateworker-pg}
db=templateworker_test
role=templateworker

log() { echo "postgres.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# bindir prints the newest installed server's bin directory.
bindir() {
	local b
	b=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
	[ -n "$b" ] && [ -x "$b/postgres" ] && echo "$b"
}

# as_owner runs a command as the cluster's owner: postgres when we are
# root (the server refuses to run as root), else ourselves.
as_owner() {
	if [ "$(id -u)" -eq 0 ]; then
		(cd / && runuser -u postgres -- "$@")
	else
		"$@"
	fi
}

install_server() {
	[ -z "${TEMPLATEWORKER_PG_NO_INSTALL:-}" ] || die "PostgreSQL server not installed (and TEMPLATEWORKER_PG_NO_INSTALL is set)"
	[ "$(id -u)" -eq 0 ] || die "PostgreSQL server not installed and not root: install the postgresql package"
	log "installing postgresql"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >&2
	apt-get install -y -qq postgresql >&2
}

# port_free reports whether nothing listens on 127.0.0.1:$1.
port_free() {
	! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

running() {
	[ -f "$dir/env" ] && [ -n "${bin:-}" ] && as_owner "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1
}

start() {
	bin=$(bindir) || true
	if [ -z "${bin:-}" ]; then
		install_server
		bin=$(bindir) || die "no server under /usr/lib/postgresql/*/bin after installing"
	fi
	if running; then
		log "already running in $dir"
		cat "$dir/env"
		return
	fi
	if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
		useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
	fi
	stop_quietly
	rm -rf "$dir"
	mkdir -p "$dir/sock"
	chmod 700 "$dir"
	if [ "$(id -u)" -eq 0 ]; then chown -R postgres: "$dir"; fi

	local superpw password
	superpw=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
	password=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
	printf '%s\n' "$superpw" >"$dir/superpw"
	if [ "$(id -u)" -eq 0 ]; then chown postgres: "$dir/superpw"; fi
	chmod 600 "$dir/superpw"

	log "initdb $dir/data ($bin)"
	as_owner "$bin/initdb" -D "$dir/data" -U postgres --pwfile="$dir/superpw" \
		-E UTF8 --locale=C --auth-local=trust --auth-host=scram-sha-256 >"$dir/initdb.log" 2>&1 ||
		{ cat "$dir/initdb.log" >&2; die "initdb failed"; }

	local port="" try
	for try in 1 2 3 4 5 6 7 8; do
		port=$((20000 + RANDOM % 40000))
		port_free "$port" || continue
		if as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
			-o "-c listen_addresses=127.0.0.1 -p $port -k $dir/sock -c fsync=off -c synchronous_commit=off -c full_page_writes=off" >&2; then
			break
		fi
		log "start on port $port failed (attempt $try)"
		port=""
	done
	[ -n "$port" ] || { tail -n 20 "$dir/server.log" >&2 || true; die "could not start the server"; }

	as_owner "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir/sock" -p "$port" -U postgres -d postgres \
		-c "CREATE ROLE $role LOGIN PASSWORD '$password'" \
		-c "CREATE DATABASE $db OWNER $role ENCODING 'UTF8' TEMPLATE template0" >&2

	local url="postgres://$role:$password@127.0.0.1:$port/$db?sslmode=disable"
	echo "export TEMPLATEWORKER_TEST_DATABASE_URL='$url'" >"$dir/env"
	log "running on 127.0.0.1:$port, data in $dir"
	cat "$dir/env"
}

stop_quietly() {
	if [ -d "$dir/data" ] && [ -n "${bin:-}" ]; then
		as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >&2 2>/dev/null || true
	fi
}

stop() {
	bin=$(bindir) || true
	[ -d "$dir" ] || { log "nothing to stop in $dir"; return; }
	stop_quietly
	rm -rf "$dir"
	log "stopped"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
*) die "usage: $0 start|stop" ;;
esac
