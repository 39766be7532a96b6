#!/usr/bin/env bash
# Runs every Fuzz* target in the module for a bounded time each:
#     go test -run=^$ -fuzz=^Name$ -fuzztime=$FUZZTIME ./pkg
# FUZZTIME defaults to 5s (scripts/test.sh); `make fuzz` uses 60s.
# A failing input is saved by go test under the package's testdata/fuzz/,
# where it becomes a regression seed; the run then fails.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZTIME=${FUZZTIME:-5s}

# Packages that declare a fuzz target, then the targets go test lists there
# (so build tags and generated files are honoured).
mapfile -t dirs < <(grep -rlE --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*\(' . 2>/dev/null |
	grep -vE '/(testdata|node_modules|vendor)/' | xargs -r -n1 dirname | sort -u)

ran=0
failed=()
for d in "${dirs[@]}"; do
	pkg=./${d#./}
	mapfile -t targets < <(go test -list '^Fuzz' "$pkg" | grep -E '^Fuzz' || true)
	for name in "${targets[@]}"; do
		echo "==> fuzz $pkg $name for $FUZZTIME"
		# Go's fuzz coordinator sometimes stops a loaded run with only
		# "context deadline exceeded" and no crashing input; such a run is
		# repeated once. A real failure writes testdata/fuzz/<name>/… and
		# fails at once.
		log=$(mktemp)
		ok=0
		for _ in 1 2; do
			if go test -run='^$' -fuzz="^${name}\$" -fuzztime="$FUZZTIME" "$pkg" 2>&1 | tee "$log"; [ "${PIPESTATUS[0]}" = 0 ]; then
				ok=1
				break
			fi
			if ! grep -q 'context deadline exceeded' "$log" || grep -q 'Failing input written to' "$log"; then
				break
			fi
			echo "==> $name stopped by the fuzz engine's deadline without an input; running it again"
		done
		rm -f "$log"
		if [ "$ok" = 1 ]; then
			ran=$((ran + 1))
		else
			failed+=("$pkg $name")
		fi
	done
done

echo "fuzz: $ran targets passed, ${#failed[@]} failed (each for $FUZZTIME)"
if [ ${#failed[@]} -gt 0 ]; then
	printf 'fuzz failed: %s\n' "${failed[@]}" >&2
	exit 1
fi
