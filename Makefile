# Everyday commands. `make test` is the same as ./scripts/test.sh, the
# command CI runs.

FUZZTIME ?= 60s

.PHONY: test fuzz lint bench

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
