package sqlite_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/ledger/ledgertest"
	"github.com/desfire-relay/relay/transaction/ledger/sqlite"
)

func open(t testing.TB) ledger.Ledger { return openConfig(t, ledger.Config{}) }

func openConfig(t testing.TB, cfg ledger.Config) ledger.Ledger {
	t.Helper()
	l, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "ledger.db"), cfg)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return l
}

// now is a fixed clock: no test depends on the wall clock.
var now = time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC)

func TestLedger(t *testing.T) { ledgertest.Run(t, open) }

func BenchmarkTransition(b *testing.B) { ledgertest.BenchTransition(b, open) }

// TestReopen checks that migrations run once and data survives a restart.
func TestReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	cases := []struct {
		name    string
		created bool
	}{{"first open", true}, {"second open", false}}
	var id string
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l, err := sqlite.Open(ctx, path, ledger.Config{})
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			defer l.Close()
			tu, created, err := l.CreateTopUp(ctx, ledger.Request{Amount: 5, Currency: "EUR"}, "k", now)
			if err != nil || created != c.created {
				t.Fatalf("create: created=%v err=%v, want created=%v", created, err, c.created)
			}
			if id != "" && tu.ID.String() != id {
				t.Fatalf("top-up %s after reopen, want %s", tu.ID, id)
			}
			id = tu.ID.String()
		})
	}
}

func TestOpenBadPath(t *testing.T) {
	for _, p := range []string{"", "a?b", filepath.Join(t.TempDir(), "missing-dir", "x", "ledger.db")} {
		t.Run(p, func(t *testing.T) {
			if l, err := sqlite.Open(context.Background(), p, ledger.Config{}); err == nil {
				l.Close()
				t.Fatalf("Open(%q) succeeded", p)
			}
		})
	}
}

// TestFileMode: the database and its WAL files are created 0600 whatever
// the umask, and an existing world-readable file is tightened.
func TestFileMode(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name    string
		prepare func(path string) error
	}{
		{"new", func(string) error { return nil }},
		{"existing 0644", func(p string) error { return os.WriteFile(p, nil, 0o644) }},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprintf("l%d.db", i))
			if err := c.prepare(path); err != nil {
				t.Fatal(err)
			}
			l, err := sqlite.Open(context.Background(), path, ledger.Config{})
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			defer l.Close()
			if _, _, err := l.CreateTopUp(context.Background(), ledger.Request{Amount: 1, Currency: "EUR"}, "k", now); err != nil {
				t.Fatalf("write: %v", err)
			}
			for _, p := range []string{path, path + "-wal", path + "-shm"} {
				st, err := os.Stat(p)
				if err != nil {
					t.Fatalf("stat: %v", err)
				}
				if st.Mode().Perm()&0o077 != 0 {
					t.Errorf("%s has mode %v, want no group or other access", filepath.Base(p), st.Mode().Perm())
				}
			}
		})
	}
}
