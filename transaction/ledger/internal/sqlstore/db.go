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
}

// SkipLockedOf is SkipLocked restricted to the rows of one table alias of
// a join.
func (d Dialect) SkipLockedOf(alias string) string {
	if d.SkipLocked == "" {
		return ""
	}
	return " FOR UPDATE OF " + alias + " SKIP LOCKED"
}
