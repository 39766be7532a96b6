# Everyday commands. `make test` is the same as ./scripts/test.sh, the
# command CI runs.

FUZZTIME ?= 60s

.PHONY: load test fuzz lint bench faults soak hostile

## test: the whole suite with private Redis and PostgreSQL (scripts/test.sh)
test:
	./scripts/test.sh

## fuzz: every Fuzz* target for FUZZTIME (default 60s) each
fuzz:
	FUZZTIME=$(FUZZTIME) ./scripts/fuzz.sh

## lint: gofmt, go vet, staticcheck
lint:
	./scripts/lint.sh

## bench: all benchmarks, with private Redis and PostgreSQL for those that need them
bench:
	./scripts/services.sh go test -run='^$$' -bench=. -benchmem ./...

# Load figures for docs/BENCHMARKS.md (Redis + PostgreSQL started for the run).
load:
	go build -o /tmp/relay-load ./tests/load
	./scripts/services.sh /tmp/relay-load -backend shared -profile an12113-ev2 -c 16 -d 8s
	/tmp/relay-load -backend embedded -profile an12113-ev2 -c 16 -d 8s
	/tmp/relay-load -idle 2000

## faults: the full fault matrix (tears, WebSocket closes, SIGKILL, Redis/PostgreSQL restarts)
faults:
	./scripts/services.sh go test -race -count=1 -v -timeout 30m ./tests/faults/ -faults.full

## soak: the full fault matrix with 200 random SIGKILLs, then 60 s of load on Redis + PostgreSQL
soak:
	./scripts/services.sh go test -race -count=1 -v -timeout 60m ./tests/faults/ -faults.full -faults.kills=200
	go build -o /tmp/relay-load ./tests/load
	./scripts/services.sh /tmp/relay-load -backend shared -profile an12113-ev2 -c 32 -d 60s

## hostile: the full forged-status matrix (every bare status word and an empty answer at every APDU of every session kind, batching on and off, both backends) plus the other hostile suites
hostile:
	./scripts/services.sh go test -race -count=1 -timeout 60m ./tests/hostile/ -hostile.full
