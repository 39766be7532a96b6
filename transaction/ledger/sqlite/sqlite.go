package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/ledger/internal/sqlstore"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migrations returns the SQLite schema migrations, for inspection and tests.
func Migrations() fs.FS {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		panic("sqlite: embedded migrations missing: " + err.Error())
	}
	return sub
}

// BusyTimeout is how long a statement waits for another process's write
// lock before failing with SQLITE_BUSY.
const BusyTimeout = 5 * time.Second

// Open opens (creating if needed) the ledger database at path, applies
// pending migrations and returns the ledger.
func Open(ctx context.Context, path string, cfg ledger.Config) (ledger.Ledger, error) {
	if path == "" || strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("sqlite ledger: bad path %q", path)
	}
	dsn := "file:" + path + fmt.Sprintf("?_pragma=busy_timeout(%d)", BusyTimeout.Milliseconds()) +
		"&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_pragma=synchronous(FULL)&_txlock=immediate"
	w, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlite ledger: open %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	d := &db{w: w}
	// Create the file and switch it to WAL before the readers connect.
	if err := w.PingContext(ctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite ledger: open %s: %w", path, err)
	}
	ms, err := sqlstore.LoadMigrations(Migrations())
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite ledger: %w", err)
	}
	if _, err := sqlstore.Migrate(ctx, d, sqlstore.Dialect{}, ms, time.Now()); err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite ledger: migrate %s: %w", path, err)
	}
	r, err := sql.Open("sqlite", dsn)
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite ledger: open %s: %w", path, err)
	}
	r.SetMaxOpenConns(4)
	d.r = r
	return sqlstore.New(d, sqlstore.Dialect{}, cfg), nil
}

// db adapts two database/sql pools to sqlstore.DB: w, with one
// connection, takes every transaction; r serves plain reads.
type db struct {
	w, r *sql.DB
}

func (d *db) reader() *sql.DB {
	if d.r == nil { // during migration
		return d.w
	}
	return d.r
}

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

type querier struct{ e execer }

func (q querier) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	res, err := q.e.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (q querier) QueryRow(ctx context.Context, query string, args ...any) sqlstore.Row {
	return row{q.e.QueryRowContext(ctx, query, args...)}
}

func (q querier) Query(ctx context.Context, query string, args ...any) (sqlstore.Rows, error) {
	return q.e.QueryContext(ctx, query, args...)
}

type row struct{ r *sql.Row }

func (r row) Scan(dest ...any) error {
	err := r.r.Scan(dest...)
	if errors.Is(err, sql.ErrNoRows) {
		return sqlstore.ErrNoRows
	}
	return err
}

func (d *db) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	// A lone write statement is its own transaction, taken on the writer.
	return querier{d.w}.Exec(ctx, query, args...)
}

func (d *db) QueryRow(ctx context.Context, query string, args ...any) sqlstore.Row {
	return querier{d.reader()}.QueryRow(ctx, query, args...)
}

func (d *db) Query(ctx context.Context, query string, args ...any) (sqlstore.Rows, error) {
	return querier{d.reader()}.Query(ctx, query, args...)
}

func (d *db) InTx(ctx context.Context, fn func(sqlstore.Querier) error) error {
	tx, err := d.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(querier{tx}); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

func (d *db) Ping(ctx context.Context) error {
	// The reader pool answers even while a write transaction runs.
	if err := d.reader().PingContext(ctx); err != nil {
		return fmt.Errorf("sqlite ledger: %w", err)
	}
	return nil
}

func (d *db) Close() error {
	var rerr error
	if d.r != nil {
		rerr = d.r.Close()
	}
	return errors.Join(rerr, d.w.Close())
}
