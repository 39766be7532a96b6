#!/usr/bin/env bash
# A private pcscd with a virtual reader (vsmartcard vpcd) for the PC/SC
# tests: the real PC/SC stack (pcscd + libpcsclite) with no hardware.
#
# Sourced (functions pcscd_start / pcscd_stop), e.g. by scripts/test.sh:
#
#     . scripts/pcscd.sh; trap pcscd_stop EXIT; pcscd_start
#     go test -tags pcsc ./tests/pcsc/
#
# or run directly to run one command with pcscd up:
#
#     ./scripts/pcscd.sh go test -tags pcsc -race -v ./tests/pcsc/ ./mobile-bridge/...
#
# pcscd_start installs pcscd, libpcsclite-dev and vsmartcard-vpcd with
# apt-get when missing, writes a reader.conf.d in a temporary directory
# that puts vpcd on a free loopback port, and starts pcscd --foreground in
# the background. pcscd 1.9.9 always serves /run/pcscd/pcscd.comm (it does
# not read PCSCLITE_CSOCK_NAME; only libpcsclite, the client, does), so to
# stay clear of a system pcscd it runs in a private mount namespace where
# the temporary directory is bind-mounted on /run/pcscd (unshare; as a
# non-root user through a user namespace). Without namespaces it falls
# back to the real /run/pcscd when no other pcscd runs.
#
# Exported for the tests:
#   PCSCLITE_CSOCK_NAME  pcscd's socket (libpcsclite clients use it)
#   PCSCD_SOCKET         the same, under a name of ours
#   VPCD_ADDR            host:port where vpcd waits for a virtual card
#   PCSC_READER          the PC/SC name of that reader slot
# Environment: SKIP_PCSCD=1 starts nothing (the PC/SC tests then skip
# locally and fail under CI=true).

_pcscd_tmp=""
_pcscd_pid=""

pcscd_log() { printf '==> %s\n' "$*" >&2; }
pcscd_die() {
	printf 'pcscd: error: %s\n' "$*" >&2
	exit 1
}

# svc_install and svc_pick_port come from scripts/services.sh.
if ! declare -F svc_install >/dev/null; then
	# shellcheck source=scripts/services.sh
	. "$(dirname "${BASH_SOURCE[0]}")/services.sh"
fi

_pcscd_vpcd_lib() {
	local f
	for f in /usr/lib/pcsc/drivers/serial/libifdvpcd.so /usr/lib/pcsc/drivers/serial/libifdvpcd.so.*; do
		[ -e "$f" ] && {
			echo "$f"
			return 0
		}
	done
	return 1
}

# pcscd_install installs what is missing of pcscd, libpcsclite-dev (cgo
# headers and pkg-config file) and vsmartcard-vpcd.
pcscd_install() {
	local pkgs=()
	command -v pcscd >/dev/null || [ -x /usr/sbin/pcscd ] || pkgs+=(pcscd)
	if ! command -v pkg-config >/dev/null; then
		pkgs+=(pkg-config libpcsclite-dev)
	elif ! pkg-config --exists libpcsclite; then
		pkgs+=(libpcsclite-dev)
	fi
	_pcscd_vpcd_lib >/dev/null || pkgs+=(vsmartcard-vpcd)
	if [ ${#pkgs[@]} -gt 0 ]; then
		svc_install "${pkgs[@]}"
		hash -r
	fi
	command -v pcscd >/dev/null || [ -x /usr/sbin/pcscd ] || pcscd_die "pcscd still not found after installing it"
	_pcscd_vpcd_lib >/dev/null || pcscd_die "the vpcd driver (libifdvpcd.so) still not found after installing vsmartcard-vpcd"
}

# _pcscd_launch DIR CONF: starts pcscd with its /run/pcscd in DIR/run.
_pcscd_launch() {
	local dir=$1 conf=$2 bin
	bin=$(command -v pcscd || echo /usr/sbin/pcscd)
	# shellcheck disable=SC2016 # expanded by the inner shell
	local inner='mkdir -p /run/pcscd && mount --bind "$1" /run/pcscd && shift && exec "$@"'
	if [ "$(id -u)" = 0 ] && unshare --mount --propagation private true 2>/dev/null; then
		unshare --mount --propagation private -- sh -c "$inner" sh "$dir/run" \
			"$bin" --foreground --debug --config "$conf" >"$dir/pcscd.log" 2>&1 &
		_pcscd_pid=$!
		export PCSCLITE_CSOCK_NAME=$dir/run/pcscd.comm
		pcscd_log "pcscd in a private mount namespace (its /run/pcscd is $dir/run)"
	elif [ "$(id -u)" != 0 ] && unshare --map-root-user --mount --propagation private true 2>/dev/null; then
		unshare --map-root-user --mount --propagation private -- sh -c "$inner" sh "$dir/run" \
			"$bin" --foreground --debug --config "$conf" >"$dir/pcscd.log" 2>&1 &
		_pcscd_pid=$!
		export PCSCLITE_CSOCK_NAME=$dir/run/pcscd.comm
		pcscd_log "pcscd in a private user+mount namespace (its /run/pcscd is $dir/run)"
	else
		if [ -S /run/pcscd/pcscd.comm ] || pgrep -x pcscd >/dev/null 2>&1; then
			pcscd_die "another pcscd serves /run/pcscd and no private mount namespace is available (unshare); stop it or run as root"
		fi
		"$bin" --foreground --debug --config "$conf" >"$dir/pcscd.log" 2>&1 &
		_pcscd_pid=$!
		export PCSCLITE_CSOCK_NAME=/run/pcscd/pcscd.comm
		pcscd_log "pcscd on the system socket /run/pcscd (no mount namespace available)"
	fi
}

# pcscd_start starts the private pcscd and exports PCSCLITE_CSOCK_NAME,
# PCSCD_SOCKET, VPCD_ADDR and PCSC_READER. The caller arranges for
# pcscd_stop to run on exit (trap).
pcscd_start() {
	local port conf i
	if [ "${SKIP_PCSCD:-0}" = 1 ]; then
		pcscd_log "SKIP_PCSCD=1: not starting pcscd (PCSCLITE_CSOCK_NAME=${PCSCLITE_CSOCK_NAME:-unset}, VPCD_ADDR=${VPCD_ADDR:-unset})"
		return 0
	fi
	pcscd_install
	_pcscd_tmp=$(mktemp -d /tmp/relay-pcscd.XXXXXX)
	chmod 755 "$_pcscd_tmp"
	mkdir -p "$_pcscd_tmp/run" "$_pcscd_tmp/reader.conf.d"
	conf=$_pcscd_tmp/reader.conf.d
	# vpcd opens two slots: port (slot "00 00") and port+1 ("00 01").
	for i in $(seq 1 20); do
		port=$(svc_pick_port)
		svc_port_free $((port + 1)) && break
	done
	cat >"$conf/vpcd" <<CONF
FRIENDLYNAME "Virtual PCD"
DEVICENAME   /dev/null:$port
LIBPATH      $(_pcscd_vpcd_lib)
CHANNELID    $port
CONF
	_pcscd_launch "$_pcscd_tmp" "$conf"
	for i in $(seq 1 100); do
		if ! kill -0 "$_pcscd_pid" 2>/dev/null; then
			tail -n 20 "$_pcscd_tmp/pcscd.log" >&2
			pcscd_die "pcscd exited at start; log above ($_pcscd_tmp/pcscd.log)"
		fi
		# (No probe of vpcd's port: vpcd would take the probe for a card.)
		if [ -S "$PCSCLITE_CSOCK_NAME" ] && grep -q 'daemon ready' "$_pcscd_tmp/pcscd.log" &&
			grep -q "virtual ICC on port $port\$" "$_pcscd_tmp/pcscd.log"; then
			export PCSCD_SOCKET=$PCSCLITE_CSOCK_NAME
			export VPCD_ADDR=127.0.0.1:$port
			export PCSC_READER="Virtual PCD 00 00"
			pcscd_log "pcscd $("$(command -v pcscd || echo /usr/sbin/pcscd)" --version 2>/dev/null | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n 1) started (pid $_pcscd_pid): PCSCLITE_CSOCK_NAME=$PCSCLITE_CSOCK_NAME VPCD_ADDR=$VPCD_ADDR PCSC_READER=\"$PCSC_READER\" log=$_pcscd_tmp/pcscd.log"
			return 0
		fi
		sleep 0.1
	done
	tail -n 20 "$_pcscd_tmp/pcscd.log" >&2
	pcscd_die "pcscd did not become ready in 10 s; log above"
}

# pcscd_stop stops the private pcscd and removes its directory. Safe to
# call more than once.
pcscd_stop() {
	if [ -n "$_pcscd_pid" ]; then
		kill "$_pcscd_pid" 2>/dev/null || true
		wait "$_pcscd_pid" 2>/dev/null || true
		_pcscd_pid=""
	fi
	if [ -n "$_pcscd_tmp" ]; then
		if [ "${PCSCD_KEEP_LOG:-0}" = 1 ] && [ -f "$_pcscd_tmp/pcscd.log" ]; then
			cp "$_pcscd_tmp/pcscd.log" "${TMPDIR:-/tmp}/relay-pcscd-last.log" || true
		fi
		rm -rf "$_pcscd_tmp"
		_pcscd_tmp=""
	fi
}

# Run directly: start pcscd, run the given command, stop it.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	set -euo pipefail
	if [ $# -eq 0 ]; then
		echo "usage: $0 COMMAND [ARGS...]   (runs COMMAND with a private pcscd and vpcd; see VPCD_ADDR)" >&2
		exit 2
	fi
	trap pcscd_stop EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	pcscd_start
	"$@"
fi
