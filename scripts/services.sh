#!/usr/bin/env bash
# Private Redis and PostgreSQL for the test suite.
#
# Sourced by scripts/test.sh (services_start / services_stop), or run
# directly to run one command with the services up:
#
#     ./scripts/services.sh go test -run=^$ -bench=. ./transaction/lock/
#
# For each of REDIS_URL and DATABASE_URL that is unset or names a server
# that does not answer, a private server is started on a free loopback port
# in a temporary directory and the variable is exported for it. Both are
# stopped and the directory removed on exit (normal, failure or Ctrl-C).
# A system-wide Redis or PostgreSQL is never touched. Missing servers are
# installed from the OS packages (apt-get install redis-server postgresql).
#
# Environment:
#   REDIS_URL, DATABASE_URL   use these servers when they answer
#   SKIP_SERVICES=1           start nothing (tests that need a service skip
#                             locally and fail under CI=true)
#   PG_BINDIR                 directory holding initdb, pg_ctl, postgres
#   RELAY_PG_FSYNC=off        run the private PostgreSQL without fsync and
#                             synchronous commit (faster plain test runs
#                             only; benchmarks and load figures must run
#                             durable, the default)
#   RELAY_PG_STAT_STATEMENTS=on  preload pg_stat_statements and create the
#                             extension, to see what each statement costs
#                             PostgreSQL (docs/BENCHMARKS.md, "profile")

_svc_tmp=""
_svc_redis_pid=""
_svc_pg_data=""
_svc_pg_bin=""

svc_log() { printf '==> %s\n' "$*" >&2; }
svc_die() {
	printf 'services: error: %s\n' "$*" >&2
	exit 1
}

# svc_is_root reports whether we run as root (no sudo needed, but
# PostgreSQL must run as another user).
svc_is_root() { [ "$(id -u)" = 0 ]; }

# svc_hostport URL DEFAULTPORT prints "host port" of a redis:// or
# postgres:// URL, or nothing when the URL has no plain TCP host.
svc_hostport() {
	local url=$1 def=$2 rest host port
	rest=${url#*://}
	rest=${rest%%[/?]*}
	rest=${rest##*@}
	[ -n "$rest" ] || return 0
	if [[ $rest == \[*\]* ]]; then # [ipv6]:port
		host=${rest%%]*}
		host=${host#[}
		port=${rest##*]}
		port=${port#:}
	elif [[ $rest == *:* ]]; then
		host=${rest%%:*}
		port=${rest##*:}
	else
		host=$rest
		port=""
	fi
	printf '%s %s\n' "$host" "${port:-$def}"
}

# svc_reachable URL DEFAULTPORT succeeds when something accepts TCP
# connections at the URL's host and port. URLs it cannot parse (unix
# sockets, several hosts) are trusted as given.
svc_reachable() {
	local hp host port
	hp=$(svc_hostport "$1" "$2")
	[ -n "$hp" ] || return 0
	read -r host port <<<"$hp"
	[[ $port =~ ^[0-9]+$ ]] || return 0
	timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$host" "$port" 2>/dev/null
}

# svc_port_free PORT succeeds when nothing listens on 127.0.0.1:PORT.
svc_port_free() {
	! timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0"' "$1" 2>/dev/null
}

# svc_pick_port prints a random free loopback port in 20000-59999.
svc_pick_port() {
	local p i
	for i in $(seq 1 50); do
		p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
		if svc_port_free "$p"; then
			echo "$p"
			return 0
		fi
	done
	svc_die "no free loopback port found"
}

# svc_find_pg_bin prints the directory with initdb, pg_ctl and postgres:
# $PG_BINDIR, the newest Debian /usr/lib/postgresql/*/bin, or PATH.
svc_find_pg_bin() {
	local d
	if [ -n "${PG_BINDIR:-}" ]; then
		[ -x "$PG_BINDIR/initdb" ] && [ -x "$PG_BINDIR/pg_ctl" ] && [ -x "$PG_BINDIR/postgres" ] ||
			svc_die "PG_BINDIR=$PG_BINDIR lacks initdb, pg_ctl or postgres"
		echo "$PG_BINDIR"
		return 0
	fi
	d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
	if [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ]; then
		echo "$d"
		return 0
	fi
	if command -v initdb >/dev/null && command -v pg_ctl >/dev/null && command -v postgres >/dev/null; then
		dirname "$(command -v initdb)"
		return 0
	fi
	return 1
}

# svc_install installs the given Debian packages, with sudo when not root.
svc_install() {
	local sudo=()
	if ! command -v apt-get >/dev/null; then
		svc_die "$* missing and apt-get not available: install them (Redis server and PostgreSQL server binaries), or set REDIS_URL and DATABASE_URL"
	fi
	if ! svc_is_root; then
		if ! command -v sudo >/dev/null; then
			svc_die "$* missing: not root and no sudo; run 'apt-get install -y redis-server postgresql' as root, or set REDIS_URL and DATABASE_URL"
		fi
		sudo=(sudo)
		[ -t 0 ] || sudo=(sudo -n)
	fi
	svc_log "installing $* (apt-get)"
	if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=a apt-get update -q >&2; then
		svc_die "apt-get update failed; install $* by hand, or set REDIS_URL and DATABASE_URL"
	fi
	if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=a apt-get install -y -q --no-install-recommends "$@" >&2; then
		svc_die "apt-get install $* failed; install them by hand, or set REDIS_URL and DATABASE_URL"
	fi
}

# svc_as_pg runs a command as the user that owns the PostgreSQL data: the
# current user, or the 'postgres' system user when we are root (postgres
# refuses to run as root).
svc_as_pg() {
	if ! svc_is_root; then
		"$@"
	elif command -v runuser >/dev/null; then
		runuser -u postgres -- "$@"
	else
		su -s /bin/sh postgres -c "$(printf '%q ' "$@")"
	fi
}

svc_start_redis() {
	local port tries dir pong
	dir=$_svc_tmp/redis
	mkdir -p "$dir"
	for tries in 1 2 3 4 5; do
		port=$(svc_pick_port)
		redis-server --bind 127.0.0.1 --port "$port" --protected-mode yes \
			--save '' --appendonly no --dir "$dir" --logfile "$dir/redis.log" \
			--daemonize no >/dev/null 2>&1 &
		_svc_redis_pid=$!
		for _ in $(seq 1 100); do
			if ! kill -0 "$_svc_redis_pid" 2>/dev/null; then
				break
			fi
			pong=$(timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0" && printf "PING\r\n" >&3 && read -r l <&3 && echo "$l"' "$port" 2>/dev/null || true)
			if [[ $pong == +PONG* ]]; then
				export REDIS_URL="redis://127.0.0.1:$port/0"
				svc_log "Redis $(redis-server --version | awk '{print $3}' | sed s/^v=//) started: REDIS_URL=$REDIS_URL (pid $_svc_redis_pid)"
				return 0
			fi
			sleep 0.1
		done
		kill "$_svc_redis_pid" 2>/dev/null || true
		wait "$_svc_redis_pid" 2>/dev/null || true
		_svc_redis_pid=""
		svc_log "Redis did not start on port $port (try $tries): $(tail -n 3 "$dir/redis.log" 2>/dev/null)"
	done
	svc_die "could not start redis-server; log: $dir/redis.log"
}

svc_start_postgres() {
	local port tries user=relay db=relay_test sock psql
	if svc_is_root; then
		if ! id postgres >/dev/null 2>&1; then
			svc_log "creating system user 'postgres' (PostgreSQL refuses to run as root)"
			useradd --system --no-create-home --shell /usr/sbin/nologin postgres ||
				svc_die "cannot create the 'postgres' user to run PostgreSQL as"
		fi
	fi
	_svc_pg_data=$_svc_tmp/pg/data
	sock=$_svc_tmp/pg/sock
	mkdir -p "$_svc_pg_data" "$sock"
	if svc_is_root; then
		chown -R postgres "$_svc_tmp/pg"
	fi
	# Trust auth is safe here: the server listens on loopback only and
	# lives for this run.
	if ! (cd "$_svc_tmp" && svc_as_pg "$_svc_pg_bin/initdb" -D "$_svc_pg_data" -U "$user" \
		--auth=trust --encoding=UTF8 --locale=C --no-sync >"$_svc_tmp/pg/initdb.log" 2>&1); then
		cat "$_svc_tmp/pg/initdb.log" >&2
		svc_die "initdb failed"
	fi
	cat >>"$_svc_pg_data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$sock'
fsync = ${RELAY_PG_FSYNC:-on}
synchronous_commit = ${RELAY_PG_FSYNC:-on}
full_page_writes = ${RELAY_PG_FSYNC:-on}
max_connections = 200
EOF
	if [ "${RELAY_PG_STAT_STATEMENTS:-}" = on ]; then
		printf "shared_preload_libraries = 'pg_stat_statements'\npg_stat_statements.track = all\n" >>"$_svc_pg_data/postgresql.conf"
	fi
	for tries in 1 2 3 4 5; do
		port=$(svc_pick_port)
		if (cd "$_svc_tmp" && svc_as_pg "$_svc_pg_bin/pg_ctl" -D "$_svc_pg_data" -l "$_svc_tmp/pg/postgres.log" \
			-o "-p $port" -w -t 60 start >/dev/null 2>&1); then
			psql=$_svc_pg_bin/psql
			[ -x "$psql" ] || psql=$(command -v psql) || svc_die "psql not found"
			if ! (cd "$_svc_tmp" && svc_as_pg "$psql" -X -q -h 127.0.0.1 -p "$port" -U "$user" \
				-d postgres -v ON_ERROR_STOP=1 -c "CREATE DATABASE $db" >/dev/null); then
				svc_die "could not create database $db"
			fi
			if [ "${RELAY_PG_STAT_STATEMENTS:-}" = on ]; then
				(cd "$_svc_tmp" && svc_as_pg "$psql" -X -q -h 127.0.0.1 -p "$port" -U "$user" \
					-d "$db" -v ON_ERROR_STOP=1 -c "CREATE EXTENSION pg_stat_statements" >/dev/null) ||
					svc_die "could not create pg_stat_statements"
			fi
			export DATABASE_URL="postgres://$user@127.0.0.1:$port/$db?sslmode=disable"
			svc_log "PostgreSQL $("$_svc_pg_bin/postgres" --version | awk '{print $3}') started: DATABASE_URL=$DATABASE_URL"
			return 0
		fi
		svc_log "PostgreSQL did not start on port $port (try $tries): $(tail -n 3 "$_svc_tmp/pg/postgres.log" 2>/dev/null)"
	done
	svc_die "could not start PostgreSQL; log: $_svc_tmp/pg/postgres.log"
}

# services_stop stops what services_start started and removes its
# directory. Safe to call more than once.
services_stop() {
	if [ -n "$_svc_redis_pid" ]; then
		kill "$_svc_redis_pid" 2>/dev/null || true
		wait "$_svc_redis_pid" 2>/dev/null || true
		_svc_redis_pid=""
	fi
	if [ -n "$_svc_pg_data" ] && [ -f "$_svc_pg_data/postmaster.pid" ]; then
		(cd "$_svc_tmp" && svc_as_pg "$_svc_pg_bin/pg_ctl" -D "$_svc_pg_data" -m immediate -w -t 30 stop >/dev/null 2>&1) || true
	fi
	_svc_pg_data=""
	if [ -n "$_svc_tmp" ]; then
		rm -rf "$_svc_tmp"
		_svc_tmp=""
	fi
}

# services_start makes REDIS_URL and DATABASE_URL point at answering
# servers, starting private ones as needed. The caller must arrange for
# services_stop to run on exit (trap).
services_start() {
	local need_redis=0 need_pg=0 pkgs=()
	if [ "${SKIP_SERVICES:-0}" = 1 ]; then
		svc_log "SKIP_SERVICES=1: not starting Redis or PostgreSQL (REDIS_URL=${REDIS_URL:-unset}, DATABASE_URL=${DATABASE_URL:-unset})"
		return 0
	fi
	if [ -n "${REDIS_URL:-}" ] && svc_reachable "$REDIS_URL" 6379; then
		svc_log "using the given REDIS_URL=$REDIS_URL"
	else
		[ -z "${REDIS_URL:-}" ] || svc_log "REDIS_URL=$REDIS_URL does not answer: starting a private Redis instead"
		need_redis=1
	fi
	if [ -n "${DATABASE_URL:-}" ] && svc_reachable "$DATABASE_URL" 5432; then
		svc_log "using the given DATABASE_URL=$DATABASE_URL"
	else
		[ -z "${DATABASE_URL:-}" ] || svc_log "DATABASE_URL=$DATABASE_URL does not answer: starting a private PostgreSQL instead"
		need_pg=1
	fi
	[ $need_redis = 1 ] || [ $need_pg = 1 ] || return 0

	if [ $need_redis = 1 ] && ! command -v redis-server >/dev/null; then
		pkgs+=(redis-server)
	fi
	if [ $need_pg = 1 ] && ! _svc_pg_bin=$(svc_find_pg_bin); then
		pkgs+=(postgresql)
	fi
	if [ ${#pkgs[@]} -gt 0 ]; then
		svc_install "${pkgs[@]}"
		hash -r
		if [ $need_redis = 1 ] && ! command -v redis-server >/dev/null; then
			svc_die "redis-server still not found after installing it"
		fi
		if [ $need_pg = 1 ] && ! _svc_pg_bin=$(svc_find_pg_bin); then
			svc_die "PostgreSQL server binaries (initdb, pg_ctl, postgres) still not found after installing postgresql; set PG_BINDIR"
		fi
	fi

	if svc_is_root; then
		# Under /tmp so the postgres user can reach it whatever TMPDIR is.
		_svc_tmp=$(mktemp -d /tmp/relay-test.XXXXXX)
		chmod 755 "$_svc_tmp"
	else
		_svc_tmp=$(mktemp -d -t relay-test.XXXXXX)
	fi
	[ $need_redis = 0 ] || svc_start_redis
	[ $need_pg = 0 ] || svc_start_postgres
}

# Run directly: start the services, run the given command, stop them.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	set -euo pipefail
	if [ $# -eq 0 ]; then
		echo "usage: $0 COMMAND [ARGS...]   (runs COMMAND with REDIS_URL and DATABASE_URL set)" >&2
		exit 2
	fi
	trap services_stop EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	services_start
	"$@"
fi
