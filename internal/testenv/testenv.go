// Package testenv gives tests the addresses of the external services they
// need (Redis, PostgreSQL) from the environment that ./scripts/test.sh
// sets up.
//
// Locally a test whose service is not configured is skipped with a message
// that says how to run it; under CI=true it fails instead, so a CI run can
// never pass by silently skipping the tests that exercise real services.
package testenv

import (
	"os"
	"strconv"
	"testing"
)

// RedisURL returns $REDIS_URL for tests that need a real Redis, skipping
// (or, under CI=true, failing) the test when it is not set.
func RedisURL(t testing.TB) string {
	t.Helper()
	return lookup(t, "REDIS_URL", "Redis")
}

// DatabaseURL returns $DATABASE_URL for tests that need a real
// PostgreSQL, skipping (or, under CI=true, failing) the test when it is
// not set.
func DatabaseURL(t testing.TB) string {
	t.Helper()
	return lookup(t, "DATABASE_URL", "PostgreSQL")
}

// InCI reports whether the tests run under CI (CI set to a true value),
// where a missing service is a failure rather than a reason to skip.
func InCI() bool {
	v, err := strconv.ParseBool(os.Getenv("CI"))
	return err == nil && v
}

func lookup(t testing.TB, name, service string) string {
	t.Helper()
	if u := os.Getenv(name); u != "" {
		return u
	}
	if InCI() {
		t.Fatalf("%s is not set: under CI=true this %s test must run (./scripts/test.sh starts %s)", name, service, service)
		return ""
	}
	t.Skipf("%s is not set: skipping this %s test (./scripts/test.sh starts a private %s and sets it)", name, service, service)
	return ""
}
