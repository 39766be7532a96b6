#!/usr/bin/env bash
# Static checks for the whole module: gofmt, go vet, staticcheck.
# staticcheck is taken from PATH or $(go env GOPATH)/bin, or installed
# there at the pinned version (one that supports the go.mod Go version).
set -euo pipefail
cd "$(dirname "$0")/.."

STATICCHECK_VERSION=${STATICCHECK_VERSION:-v0.8.2} # staticcheck 2026.2.2, supports Go 1.26

echo "==> gofmt -l"
unformatted=$(find . \( -name .git -o -name node_modules -o -name testdata -o -name vendor \) -prune -o \
	-name '*.go' -type f -print | sort | xargs -r gofmt -l)
if [ -n "$unformatted" ]; then
	echo "gofmt: these files need 'gofmt -w':" >&2
	printf '  %s\n' $unformatted >&2
	exit 1
fi

echo "==> go vet ./... (and -tags pcsc)"
go vet ./...
go vet -tags pcsc ./...

sc=$(command -v staticcheck || true)
if [ -z "$sc" ] && [ -x "$(go env GOPATH)/bin/staticcheck" ]; then
	sc=$(go env GOPATH)/bin/staticcheck
fi
if [ -z "$sc" ]; then
	echo "==> installing staticcheck $STATICCHECK_VERSION (go install)"
	go install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"
	sc=$(go env GOPATH)/bin/staticcheck
	[ -z "$(go env GOBIN)" ] || sc=$(go env GOBIN)/staticcheck
fi
echo "==> staticcheck ./... and -tags pcsc ($("$sc" -version))"
"$sc" ./...
"$sc" -tags pcsc ./...
