package postgres

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/desfire-relay/relay/internal/testenv"
	"github.com/desfire-relay/relay/transaction/ledger/internal/sqlstore"
)

// TestRelaxedCommitIsLocal: a relaxed transaction, and a statement that
// asks for it (Dialect.Relaxed), commit with synchronous_commit off; the
// connection keeps the server's setting for everything after.
func TestRelaxedCommitIsLocal(t *testing.T) {
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(testenv.DatabaseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 1 // every check below runs on the same connection
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	d := &db{pool: pool}
	setting := func(q sqlstore.Querier) string {
		var v string
		if err := q.QueryRow(ctx, "SHOW synchronous_commit").Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	before := setting(d)
	if before == "off" {
		t.Skip("the server runs with synchronous_commit off: nothing to relax")
	}
	for _, relaxed := range []bool{true, false} {
		var in string
		if err := d.InTxRelaxed(ctx, relaxed, func(q sqlstore.Querier) error { in = setting(q); return nil }); err != nil {
			t.Fatal(err)
		}
		if want := map[bool]string{true: "off", false: before}[relaxed]; in != want {
			t.Errorf("relaxed=%v: synchronous_commit %q inside, want %q", relaxed, in, want)
		}
		if after := setting(d); after != before {
			t.Errorf("relaxed=%v: synchronous_commit %q after, want %q", relaxed, after, before)
		}
	}
	var v string
	if err := d.WriteRow(ctx, true, "WITH "+dialect.Relaxed+" SELECT current_setting('synchronous_commit') FROM relaxed").Scan(&v); err != nil || v != "off" {
		t.Errorf("statement asking for a relaxed commit: %q, %v", v, err)
	}
	if after := setting(d); after != before {
		t.Errorf("after the relaxed statement: synchronous_commit %q, want %q", after, before)
	}
}
