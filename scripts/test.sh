#!/usr/bin/env bash
# Runs the whole test suite: the one command the README gives users and
# that CI (.ci/run) runs.
#
#   1. Redis and PostgreSQL: uses REDIS_URL / DATABASE_URL when they answer,
#      otherwise starts private servers on loopback ports (installing
#      redis-server and postgresql with apt-get when missing) and stops
#      them on exit (scripts/services.sh).
#   2. gofmt, go vet, staticcheck (scripts/lint.sh).
#   3. a private pcscd with the vpcd virtual reader (scripts/pcscd.sh,
#      installing pcscd, libpcsclite-dev, vsmartcard-vpcd when missing), then
#      go test -race -count=1 -tags pcsc ./... (extra arguments are passed
#      to go test; if one of them names packages, those replace ./...).
#   4. every Fuzz* target for FUZZTIME (default 5s) each (scripts/fuzz.sh).
#
# Environment: REDIS_URL, DATABASE_URL, SKIP_SERVICES=1, FUZZTIME,
# SKIP_FUZZ=1, DESFIRE_VECTORS (published vectors; default testdata/vectors),
# CI=true (tests fail instead of skipping when a service is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

# shellcheck source=scripts/services.sh
. scripts/services.sh
# shellcheck source=scripts/pcscd.sh
. scripts/pcscd.sh

work=""
cleanup() {
	pcscd_stop
	services_stop
	[ -z "$work" ] || rm -rf "$work"
}
trap cleanup EXIT
trap 'echo "test.sh: interrupted" >&2; exit 130' INT
trap 'echo "test.sh: terminated" >&2; exit 143' TERM

echo "==> test.sh in $root ($(go version | awk '{print $3}'), CI=${CI:-unset})"
services_start
# docker-compose (v1) validates docker-compose.yml in tests/.
command -v docker-compose >/dev/null || svc_install docker-compose
# Headless Chromium renders the SUN verification page (server, chromedp);
# its screenshots are kept in tmp/artefacts (TEST_ARTEFACTS).
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || svc_install chromium
echo "==> REDIS_URL=${REDIS_URL:-unset}"
echo "==> DATABASE_URL=${DATABASE_URL:-unset}"
# A private pcscd with the vpcd virtual reader: the PC/SC bridge's
# end-to-end test runs through the real PC/SC stack (build tag pcsc).
pcscd_start
echo "==> VPCD_ADDR=${VPCD_ADDR:-unset} PCSCLITE_CSOCK_NAME=${PCSCLITE_CSOCK_NAME:-unset}"

./scripts/lint.sh

# pcscd must still be up after the lint step (it once was not, on a busy
# machine): show why and start a fresh one rather than fail the PC/SC tests.
if [ -n "${_pcscd_pid:-}" ] && ! kill -0 "$_pcscd_pid" 2>/dev/null; then
	echo "==> pcscd (pid $_pcscd_pid) is gone; its log ends:" >&2
	tail -n 20 "$_pcscd_tmp/pcscd.log" >&2 || true
	pcscd_stop
	pcscd_start
fi

pkgs=(./...)
for a in "$@"; do
	case $a in
	./* | ../* | github.com/*) pkgs=() ;;
	esac
done
work=$(mktemp -d)
summary=$work/summary
go build -o "$work/testsummary" ./scripts/testsummary
echo "==> go test -race -count=1 -tags pcsc $(printf '%s ' "$@" "${pkgs[@]}")"
go test -json -race -count=1 -tags pcsc "$@" "${pkgs[@]}" | "$work/testsummary" | tee "$summary"

# The TypeScript bridge package: its node --test suite runs against the
# real relayd and simulated cards (built by the suite itself).
if ! command -v npm >/dev/null; then
	svc_install nodejs npm
fi
echo "==> TypeScript bridge: npm ci && npm test (mobile-bridge/ts, node $(node --version))"
(cd mobile-bridge/ts && npm ci --no-audit --no-fund && npm test) 2>&1 | tee "$work/ts.log"
grep -E '^# (tests|pass|fail|skipped) ' "$work/ts.log" | tr '\n' ' ' | sed 's/^/==> node --test: /' || true
echo

if [ "${SKIP_FUZZ:-0}" = 1 ]; then
	echo "==> SKIP_FUZZ=1: not fuzzing"
else
	FUZZTIME=${FUZZTIME:-5s} ./scripts/fuzz.sh
fi

echo "==> test.sh: all steps passed (gofmt, go vet, staticcheck, go test -race, node --test$([ "${SKIP_FUZZ:-0}" = 1 ] || echo ", fuzz ${FUZZTIME:-5s} per target"))"
grep -E '^tests: ' "$summary" | tail -n 1
