package sqlstore

import (
	"context"
	"strings"

	"github.com/desfire-relay/relay/transaction/ledger"
)

// counted wraps a DB and counts its work in a ledger.Stats: every
// statement, BEGIN/COMMIT of every transaction, and the commits (a lone
// statement that is not a SELECT commits on its own).
type counted struct {
	DB
	st *ledger.Stats
}

func lone(st *ledger.Stats, query string) {
	st.Statement()
	if !isRead(query) {
		st.Commit(false)
	}
}

// isRead reports whether a statement only reads.
func isRead(query string) bool {
	q := strings.TrimSpace(query)
	return len(q) >= 6 && strings.EqualFold(q[:6], "SELECT")
}

func (c counted) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	lone(c.st, query)
	return c.DB.Exec(ctx, query, args...)
}

func (c counted) QueryRow(ctx context.Context, query string, args ...any) Row {
	lone(c.st, query)
	return c.DB.QueryRow(ctx, query, args...)
}

func (c counted) Query(ctx context.Context, query string, args ...any) (Rows, error) {
	lone(c.st, query)
	return c.DB.Query(ctx, query, args...)
}

func (c counted) WriteRow(ctx context.Context, relaxed bool, query string, args ...any) Row {
	c.st.Statement()
	c.st.Commit(relaxed)
	return c.DB.WriteRow(ctx, relaxed, query, args...)
}

func (c counted) InTx(ctx context.Context, fn func(Querier) error) error {
	return c.InTxRelaxed(ctx, false, fn)
}

func (c counted) InTxRelaxed(ctx context.Context, relaxed bool, fn func(Querier) error) error {
	err := c.DB.InTxRelaxed(ctx, relaxed, func(q Querier) error { return fn(countedQ{q, c.st}) })
	c.st.Transaction(err == nil, relaxed)
	return err
}

type countedQ struct {
	q  Querier
	st *ledger.Stats
}

func (c countedQ) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	c.st.Statement()
	return c.q.Exec(ctx, query, args...)
}

func (c countedQ) QueryRow(ctx context.Context, query string, args ...any) Row {
	c.st.Statement()
	return c.q.QueryRow(ctx, query, args...)
}

func (c countedQ) Query(ctx context.Context, query string, args ...any) (Rows, error) {
	c.st.Statement()
	return c.q.Query(ctx, query, args...)
}
