// Package testbackend opens the two deployments tests run against: the
// embedded default (SQLite, in-process locks) and Redis + PostgreSQL from
// REDIS_URL / DATABASE_URL (skipped locally, failed under CI=true).
package testbackend

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/desfire-relay/relay/internal/testenv"

	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/ledger/postgres"
	"github.com/desfire-relay/relay/transaction/ledger/sqlite"
	"github.com/desfire-relay/relay/transaction/lock"
)

// SQLiteLedger opens a ledger in a temporary directory.
func SQLiteLedger(t testing.TB) ledger.Ledger {
	t.Helper()
	l, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "ledger.db"), ledger.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// PostgresSchema creates a fresh schema in DATABASE_URL's database, dropped
// when the test ends, and returns a URL whose search_path selects it. The
// test is skipped (locally) or failed (CI) without DATABASE_URL.
func PostgresSchema(t testing.TB) string {
	t.Helper()
	dsn := testenv.DatabaseURL(t)
	ctx := context.Background()
	var b [6]byte
	rand.Read(b[:])
	schema := "t_" + hex.EncodeToString(b[:])
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect %s: %v", dsn, err)
	}
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		admin.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
		admin.Close(context.Background())
	})
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// PostgresLedger opens a ledger on a fresh schema.
func PostgresLedger(t testing.TB) ledger.Ledger {
	t.Helper()
	l, err := postgres.Open(context.Background(), PostgresSchema(t), ledger.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// RedisLocker returns a Redis locker with a key prefix of its own.
func RedisLocker(t testing.TB) lock.Locker {
	t.Helper()
	c, err := lock.NewRedisClient(testenv.RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var b [6]byte
	rand.Read(b[:])
	return lock.NewRedis(c, lock.RedisConfig{Prefix: "t:" + hex.EncodeToString(b[:]) + ":"})
}

// Backend is a ledger and a locker: the embedded default or Redis+PostgreSQL.
type Backend struct {
	Name   string
	Open   func(t testing.TB) (ledger.Ledger, lock.Locker)
	Shared bool // needs services
}

// Backends lists both deployments for table tests.
func Backends() []Backend {
	return []Backend{
		{Name: "embedded", Open: func(t testing.TB) (ledger.Ledger, lock.Locker) { return SQLiteLedger(t), lock.NewMemory() }},
		{Name: "redis+postgres", Shared: true, Open: func(t testing.TB) (ledger.Ledger, lock.Locker) { return PostgresLedger(t), RedisLocker(t) }},
	}
}
