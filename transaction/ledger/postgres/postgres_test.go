package postgres_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io/fs"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/desfire-relay/relay/internal/testenv"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/ledger/ledgertest"
	"github.com/desfire-relay/relay/transaction/ledger/postgres"
)

// withSearchPath returns the URL with search_path set, for URL and
// keyword/value connection strings alike.
func withSearchPath(t testing.TB, dsn, schema string) string {
	t.Helper()
	if !strings.Contains(dsn, "://") {
		return dsn + " search_path=" + schema
	}
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("DATABASE_URL does not parse")
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// open gives each test a fresh, uniquely named schema, migrated by Open
// and dropped when the test ends.
func open(t testing.TB) ledger.Ledger { return openConfig(t, ledger.Config{}) }

func openConfig(t testing.TB, cfg ledger.Config) ledger.Ledger {
	t.Helper()
	ctx := context.Background()
	dsn := testenv.DatabaseURL(t)
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	schema := "ledgertest_" + hex.EncodeToString(b[:])
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { admin.Close(context.Background()) })
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		if _, err := admin.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	l, err := postgres.Open(ctx, withSearchPath(t, dsn, schema), cfg)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestLedger(t *testing.T) {
	testenv.DatabaseURL(t) // skip or fail once, not per subtest
	ledgertest.Run(t, open)
}

func BenchmarkTransition(b *testing.B) { ledgertest.BenchTransition(b, open) }

// TestConcurrentOpen starts several ledgers on one empty schema at once:
// the advisory lock must let exactly one of them create the tables.
func TestConcurrentOpen(t *testing.T) {
	ctx := context.Background()
	dsn := testenv.DatabaseURL(t)
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer admin.Close(ctx)
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	schema := "ledgertest_" + hex.EncodeToString(b[:])
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	defer admin.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
	const n = 4
	errs := make(chan error, n)
	target := withSearchPath(t, dsn, schema)
	for range n {
		go func() {
			l, err := postgres.Open(ctx, target, ledger.Config{})
			if err == nil {
				_, _, err = l.CreateTopUp(ctx, ledger.Request{Amount: 1, Currency: "EUR"}, "same", time.Unix(1e9, 0))
				l.Close()
			}
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Errorf("concurrent open: %v", err)
		}
	}
	ms, err := fs.Glob(postgres.Migrations(), "*.sql")
	if err != nil {
		t.Fatal(err)
	}
	var versions int
	if err := admin.QueryRow(ctx, "SELECT count(*) FROM "+schema+".schema_migrations").Scan(&versions); err != nil || versions != len(ms) {
		t.Fatalf("schema_migrations rows = %d (%v), want %d (each migration once)", versions, err, len(ms))
	}
}

func TestOpenBadURL(t *testing.T) {
	if l, err := postgres.Open(context.Background(), "postgres://u:secret@[bad", ledger.Config{}); err == nil {
		l.Close()
		t.Fatal("Open succeeded on a malformed URL")
	} else if strings.Contains(err.Error(), "secret") {
		t.Fatalf("error leaks the password: %v", err)
	}
}
