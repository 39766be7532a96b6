package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/ledger/internal/sqlstore"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migrations returns the PostgreSQL schema migrations, for inspection and tests.
func Migrations() fs.FS {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		panic("postgres: embedded migrations missing: " + err.Error())
	}
	return sub
}

// migrationLockKey is the advisory lock held while migrating (an
// arbitrary constant: "DFRL" in ASCII).
const migrationLockKey = 0x4446524c

// MaxTxAttempts bounds how often a transaction is run when PostgreSQL
// aborts it with a deadlock or serialisation failure.
const MaxTxAttempts = 5

var dialect = sqlstore.Dialect{
	// NO KEY: keys never change, so foreign-key checks need not wait.
	ForUpdate:     " FOR NO KEY UPDATE",
	SkipLocked:    " FOR UPDATE SKIP LOCKED",
	MigrationLock: fmt.Sprintf("SELECT pg_advisory_xact_lock(%d)", migrationLockKey),
}

// Open connects to the database at url (a libpq URL or DSN; pgxpool
// settings such as pool_max_conns and runtime parameters such as
// search_path may be given in it), applies pending migrations and returns
// the ledger.
func Open(ctx context.Context, url string, cfg ledger.Config) (ledger.Ledger, error) {
	pcfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// The URL may hold a password: report only that it did not parse.
		return nil, errors.New("postgres ledger: cannot parse database URL")
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("postgres ledger: connect: %w", err)
	}
	d := &db{pool: pool}
	ms, err := sqlstore.LoadMigrations(Migrations())
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres ledger: %w", err)
	}
	if _, err := sqlstore.Migrate(ctx, d, dialect, ms, time.Now()); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres ledger: migrate: %w", err)
	}
	return sqlstore.New(d, dialect, cfg), nil
}

type pgQuerier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

type querier struct{ q pgQuerier }

func (q querier) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	tag, err := q.q.Exec(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

func (q querier) QueryRow(ctx context.Context, query string, args ...any) sqlstore.Row {
	return row{q.q.QueryRow(ctx, query, args...)}
}

func (q querier) Query(ctx context.Context, query string, args ...any) (sqlstore.Rows, error) {
	r, err := q.q.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	return rows{r}, nil
}

type row struct{ r pgx.Row }

func (r row) Scan(dest ...any) error {
	err := r.r.Scan(dest...)
	if errors.Is(err, pgx.ErrNoRows) {
		return sqlstore.ErrNoRows
	}
	return err
}

type rows struct{ pgx.Rows }

func (r rows) Close() error {
	r.Rows.Close()
	return r.Rows.Err()
}

// db adapts a pgxpool.Pool to sqlstore.DB.
type db struct {
	pool *pgxpool.Pool
}

func (d *db) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	return querier{d.pool}.Exec(ctx, query, args...)
}

func (d *db) QueryRow(ctx context.Context, query string, args ...any) sqlstore.Row {
	return querier{d.pool}.QueryRow(ctx, query, args...)
}

func (d *db) Query(ctx context.Context, query string, args ...any) (sqlstore.Rows, error) {
	return querier{d.pool}.Query(ctx, query, args...)
}

// retryable reports whether PostgreSQL aborted the transaction only
// because of concurrency (serialization_failure, deadlock_detected), so
// running it again may succeed.
func retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
}

func (d *db) InTx(ctx context.Context, fn func(sqlstore.Querier) error) error {
	var err error
	for range MaxTxAttempts {
		err = d.tryTx(ctx, fn)
		if !retryable(err) {
			return err
		}
	}
	return err
}

func (d *db) tryTx(ctx context.Context, fn func(sqlstore.Querier) error) error {
	tx, err := d.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(querier{tx}); err != nil {
		// Rollback on a fresh context: ctx may be the reason fn failed.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = tx.Rollback(rctx)
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

func (d *db) Ping(ctx context.Context) error {
	if err := d.pool.Ping(ctx); err != nil {
		return fmt.Errorf("postgres ledger: %w", err)
	}
	return nil
}

func (d *db) Close() error {
	d.pool.Close()
	return nil
}
