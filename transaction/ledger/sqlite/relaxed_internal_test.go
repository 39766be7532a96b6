package sqlite

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/desfire-relay/relay/transaction/ledger/internal/sqlstore"
)

// TestRelaxedCommitIsLocal: a relaxed write transaction runs with
// synchronous=NORMAL; every other one, before and after, with FULL.
func TestRelaxedCommitIsLocal(t *testing.T) {
	ctx := context.Background()
	d, err := openDB(ctx, filepath.Join(t.TempDir(), "l.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	// A new statement text each time: SQLite evaluates this pragma when
	// it prepares the statement, and the adapter keeps prepared ones.
	level := func(i int, relaxed bool) int64 {
		var v int64
		if err := d.InTxRelaxed(ctx, relaxed, func(q sqlstore.Querier) error {
			return q.QueryRow(ctx, fmt.Sprintf("PRAGMA synchronous -- %d", i)).Scan(&v)
		}); err != nil {
			t.Fatal(err)
		}
		return v
	}
	const normal, full = 1, 2
	for i, c := range []struct {
		relaxed bool
		want    int64
	}{{false, full}, {true, normal}, {false, full}, {true, normal}, {false, full}} {
		if got := level(i, c.relaxed); got != c.want {
			t.Errorf("step %d relaxed=%v: synchronous=%d, want %d", i, c.relaxed, got, c.want)
		}
	}
}
