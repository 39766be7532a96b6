package sqlstore

import (
	"context"
	"errors"
)

// ErrNoRows is what adapters return from Row.Scan when the query found
// nothing, whatever their driver calls it.
var ErrNoRows = errors.New("sqlstore: no rows")

// Row is one result row.
type Row interface {
	Scan(dest ...any) error
}

// Rows is a result set.
type Rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close() error
}

// Querier runs statements with $1-style placeholders.
type Querier interface {
	// Exec runs a statement and returns the number of rows it changed.
	Exec(ctx context.Context, query string, args ...any) (int64, error)
	QueryRow(ctx context.Context, query string, args ...any) Row
	Query(ctx context.Context, query string, args ...any) (Rows, error)
}

// DB is a database as the store needs it.
type DB interface {
	// Querier runs reads outside any transaction.
	Querier
	// InTx runs fn in one transaction, committing if it returns nil and
	// rolling back otherwise. Rows it reads with the dialect's ForUpdate
	// suffix (or all rows, for a database with one writer) stay locked
	// until the end. An adapter may run fn again after a serialisation
	// failure, so fn must not keep state from a failed run.
	InTx(ctx context.Context, fn func(Querier) error) error
	// InTxRelaxed is InTx whose commit, when relaxed, need not be durable
	// when it returns (PostgreSQL synchronous_commit off, SQLite
	// synchronous NORMAL for that transaction): a crash may lose it, never
	// tear it. Only for writes whose loss the ledger recovers from.
	InTxRelaxed(ctx context.Context, relaxed bool, fn func(Querier) error) error
	// WriteRow runs one write statement as a transaction of its own (one
	// round trip on PostgreSQL) and returns its RETURNING row. relaxed is
	// as for InTxRelaxed; on PostgreSQL the statement itself must ask for
	// it (Dialect.Relaxed), the adapter only counts on it.
	WriteRow(ctx context.Context, relaxed bool, query string, args ...any) Row
	Ping(ctx context.Context) error
	Close() error
}

// Dialect is what differs between the backends' SQL.
type Dialect struct {
	// ForUpdate is appended to a SELECT that must lock the row it reads
	// (" FOR UPDATE" in PostgreSQL; empty where a transaction already
	// excludes other writers).
	ForUpdate string
	// SkipLocked is appended to a SELECT of work items that concurrent
	// claimers share (" FOR UPDATE SKIP LOCKED" in PostgreSQL; empty where
	// one writer excludes the others).
	SkipLocked string
	// MigrationLock, if set, runs first in the migration transaction so
	// that processes starting together migrate one at a time.
	MigrationLock string
	// WritableCTE: the database runs data-modifying statements in WITH
	// (PostgreSQL), so one phase of a top-up is one statement; without
	// it (SQLite) a phase is several statements in one write transaction.
	WritableCTE bool
	// Relaxed is a WITH item that makes the statement's own transaction
	// commit without waiting for its WAL flush; it must be referenced by
	// the statement (relaxed) to take effect.
	Relaxed string
}

// SkipLockedOf is SkipLocked restricted to the rows of one table alias of
// a join.
func (d Dialect) SkipLockedOf(alias string) string {
	if d.SkipLocked == "" {
		return ""
	}
	return " FOR UPDATE OF " + alias + " SKIP LOCKED"
}
