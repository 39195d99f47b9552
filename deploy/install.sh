#!/bin/sh
# install.sh — install templateworker as a systemd service.
#
#   deploy/install.sh [--binary PATH] [--prefix DIR] [--dry-run]
#
#   --binary PATH  install this binary instead of building one with `make build`
#   --prefix DIR   install under DIR instead of / (for packaging and tests:
#                  no system user is created, nothing is chowned, systemd is
#                  not touched)
#   --dry-run      print every action, one per line prefixed with "would: ",
#                  and change nothing
#
# It installs /usr/local/bin/templateworker, creates the system user and group
# templateworker (no login shell, no home), /etc/templateworker/templateworker.env
# from templateworker.env.example when absent (an existing one is never
# touched), /var/lib/templateworker (templateworker, 0750) and the unit
# /etc/systemd/system/templateworker.service, then reloads systemd.
# Running it again is safe: what is already in place is left alone.
set -eu

NAME=templateworker
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)

binary=
prefix=/
dry=0

die() {
	echo "install.sh: $*" >&2
	exit 1
}

while [ $# -gt 0 ]; do
	case $1 in
	--binary) [ $# -ge 2 ] || die "--binary needs a path"; binary=$2; shift 2 ;;
	--binary=*) binary=${1#--binary=}; shift ;;
	--prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; prefix=$2; shift 2 ;;
	--prefix=*) prefix=${1#--prefix=}; shift ;;
	--dry-run) dry=1; shift ;;
	-h | --help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown argument $1 (see --help)" ;;
	esac
done

case $prefix in
/*) ;;
*) die "--prefix must be an absolute path, got $prefix" ;;
esac
root=${prefix%/}   # "" for /, so paths read /etc/... not //etc/...
system=0
[ -z "$root" ] && system=1

bin_dst=$root/usr/local/bin/$NAME
etc_dir=$root/etc/$NAME
env_dst=$etc_dir/$NAME.env
data_dir=$root/var/lib/$NAME
unit_dst=$root/etc/systemd/system/$NAME.service

# act runs a command, or prints it with "would: " in --dry-run.
act() {
	if [ $dry = 1 ]; then
		echo "would: $*"
	else
		echo "run: $*"
		"$@"
	fi
}

# ok reports a step with nothing to do.
ok() { echo "ok: $*"; }

if [ $dry = 0 ] && [ $system = 1 ] && [ "$(id -u)" != 0 ]; then
	die "installing into / needs root (try sudo, or --dry-run / --prefix DIR)"
fi

# 1. The binary.
if [ -z "$binary" ]; then
	act make -C "$repo" build
	binary=$repo/bin/$NAME
fi
if [ $dry = 0 ]; then
	[ -x "$binary" ] || die "$binary is not an executable file"
	"$binary" version >/dev/null 2>&1 || die "$binary does not run ($binary version failed)"
fi
if [ -f "$bin_dst" ] && [ -f "$binary" ] && cmp -s "$binary" "$bin_dst"; then
	ok "$bin_dst is up to date"
	bin_changed=0
else
	[ -d "$(dirname "$bin_dst")" ] || act install -d -m 0755 "$(dirname "$bin_dst")"
	# A temporary name and a rename: a running master keeps its old binary
	# (no "text file busy"), new processes get the new one.
	act install -m 0755 "$binary" "$bin_dst.new"
	act mv -f "$bin_dst.new" "$bin_dst"
	bin_changed=1
fi

# 2. The system user and group (only for a real install into /).
if [ $system = 1 ]; then
	if getent group $NAME >/dev/null; then
		ok "group $NAME exists"
	else
		act groupadd --system $NAME
	fi
	if getent passwd $NAME >/dev/null; then
		ok "user $NAME exists"
	else
		nologin=/usr/sbin/nologin
		[ -x $nologin ] || nologin=/sbin/nologin
		[ -x $nologin ] || nologin=/bin/false
		act useradd --system --gid $NAME --no-create-home --home-dir /nonexistent \
			--shell $nologin --comment templateworker $NAME
	fi
else
	echo "skip: system user and group $NAME, ownership (--prefix $prefix is not /)"
fi

# owner prints install(1) ownership options for a real install.
owner() {
	[ $system = 1 ] && echo "-o $1 -g $2"
	return 0
}

# 3. Settings: never overwrite an existing file, it is the operator's.
if [ -d "$etc_dir" ]; then
	ok "$etc_dir exists"
else
	# shellcheck disable=SC2046 # owner's output is meant to split
	act install -d -m 0750 $(owner root $NAME) "$etc_dir"
fi
if [ -e "$env_dst" ]; then
	ok "$env_dst exists; left as it is (compare with $here/$NAME.env.example)"
else
	# shellcheck disable=SC2046
	act install -m 0640 $(owner root $NAME) "$here/$NAME.env.example" "$env_dst"
fi

# 4. The data directory.
if [ -d "$data_dir" ]; then
	ok "$data_dir exists"
else
	# shellcheck disable=SC2046
	act install -d -m 0750 $(owner $NAME $NAME) "$data_dir"
fi

# 5. The unit.
if [ -f "$unit_dst" ] && cmp -s "$here/$NAME.service" "$unit_dst"; then
	ok "$unit_dst is up to date"
	unit_changed=0
else
	[ -d "$(dirname "$unit_dst")" ] || act install -d -m 0755 "$(dirname "$unit_dst")"
	act install -m 0644 "$here/$NAME.service" "$unit_dst"
	unit_changed=1
fi

# 6. systemd.
if [ $system = 1 ] && [ -d /run/systemd/system ]; then
	if [ $unit_changed = 1 ]; then
		act systemctl daemon-reload
	else
		ok "systemd already has this unit"
	fi
else
	echo "skip: systemctl daemon-reload (systemd is not running here, or --prefix is not /)"
fi

# 7. Next steps.
if [ $dry = 1 ]; then
	echo "dry run: nothing was changed"
	exit 0
fi
echo
echo "Installed. Next steps:"
echo "  edit $env_dst (it is read by the service)"
echo "  systemctl enable --now $NAME"
if [ $bin_changed = 1 ]; then
	echo "  systemctl restart $NAME   # if it was already running, to use the new binary"
fi
echo "  systemctl status $NAME; journalctl -u $NAME -f"
echo "  $NAME workers --data-dir /var/lib/$NAME   # as root or $NAME: shows the workers"
echo "  $here/drill.sh --data-dir /var/lib/$NAME  # kill-and-watch drill of one worker"
