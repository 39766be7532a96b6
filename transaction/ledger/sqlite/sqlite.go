package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync"
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
	d, err := openDB(ctx, path)
	if err != nil {
		return nil, err
	}
	return sqlstore.New(d, sqlstore.Dialect{}, cfg), nil
}

// openDB opens and migrates the database at path.
func openDB(ctx context.Context, path string) (*db, error) {
	if path == "" || strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("sqlite ledger: bad path %q", path)
	}
	if err := createPrivate(path); err != nil {
		return nil, fmt.Errorf("sqlite ledger: %w", err)
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
	return d, nil
}

// createPrivate creates the database file with mode 0600 before SQLite
// opens it (SQLite gives its -wal and -shm files the database file's mode),
// and takes group and other access away from an existing one. The ledger
// holds card UIDs and operator references.
func createPrivate(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		return f.Close()
	}
	if !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create %s: %w", path, err)
	}
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	if st.Mode().IsRegular() && st.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(path, st.Mode().Perm()&0o700); err != nil {
			return fmt.Errorf("restrict %s: %w", path, err)
		}
	}
	return nil
}

// db adapts two database/sql pools to sqlstore.DB: w, with one
// connection, takes every transaction; r serves plain reads. Statements
// are prepared once per pool and kept (the store's SQL is a small fixed
// set), because parsing them again on every call was the largest single
// cost of the embedded ledger.
type db struct {
	w, r *sql.DB

	mu    sync.Mutex
	stmts map[*sql.DB]map[string]*sql.Stmt
}

// cachedStmt returns the prepared statement for query on pool p, or nil.
func (d *db) cachedStmt(p *sql.DB, query string) *sql.Stmt {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stmts[p][query]
}

// prepare prepares query on pool p and caches it. It must not run inside
// a transaction on p's only connection (it would wait for that
// connection forever): statements first seen in a transaction are
// prepared after it ends (see InTx).
func (d *db) prepare(ctx context.Context, p *sql.DB, query string) (*sql.Stmt, error) {
	if st := d.cachedStmt(p, query); st != nil {
		return st, nil
	}
	st, err := p.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if old := d.stmts[p][query]; old != nil { // prepared meanwhile
		st.Close()
		return old, nil
	}
	if d.stmts == nil {
		d.stmts = make(map[*sql.DB]map[string]*sql.Stmt)
	}
	if d.stmts[p] == nil {
		d.stmts[p] = make(map[string]*sql.Stmt)
	}
	d.stmts[p][query] = st
	return st, nil
}

// cached runs statements through d's statement cache on pool p; inside a
// transaction (tx non-nil) the pool's statement is bound to it.
type cached struct {
	d    *db
	p    *sql.DB
	tx   *sql.Tx
	seen *[]string // queries the transaction ran unprepared
}

// direct is where a statement runs when it is not prepared yet.
type direct interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// get returns the prepared statement to run, or nil and the handle to run
// query on directly.
func (c cached) get(ctx context.Context, query string) (*sql.Stmt, direct, error) {
	if c.tx == nil {
		st, err := c.d.prepare(ctx, c.p, query)
		return st, nil, err
	}
	st := c.d.cachedStmt(c.p, query)
	if st == nil {
		*c.seen = append(*c.seen, query)
		return nil, c.tx, nil
	}
	// The writer pool has one connection, the transaction's, where the
	// statement is already prepared: StmtContext reuses it.
	return c.tx.StmtContext(ctx, st), nil, nil
}

func (c cached) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	st, dir, err := c.get(ctx, query)
	switch {
	case err != nil:
		return nil, err
	case dir != nil:
		return dir.ExecContext(ctx, query, args...)
	}
	return st.ExecContext(ctx, args...)
}

func (c cached) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	st, dir, err := c.get(ctx, query)
	switch {
	case err != nil:
		return nil, err
	case dir != nil:
		return dir.QueryContext(ctx, query, args...)
	}
	return st.QueryContext(ctx, args...)
}

func (c cached) QueryRowContext(ctx context.Context, query string, args ...any) rowScanner {
	st, dir, err := c.get(ctx, query)
	switch {
	case err != nil:
		return errRow{err}
	case dir != nil:
		return dir.QueryRowContext(ctx, query, args...)
	}
	return st.QueryRowContext(ctx, args...)
}

// rowScanner is *sql.Row, or errRow when the statement did not prepare.
type rowScanner interface{ Scan(dest ...any) error }

type errRow struct{ err error }

func (e errRow) Scan(...any) error { return e.err }

func (d *db) reader() *sql.DB {
	if d.r == nil { // during migration
		return d.w
	}
	return d.r
}

type querier struct{ e cached }

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

type row struct{ r rowScanner }

func (r row) Scan(dest ...any) error {
	err := r.r.Scan(dest...)
	if errors.Is(err, sql.ErrNoRows) {
		return sqlstore.ErrNoRows
	}
	return err
}

func (d *db) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	// A lone write statement is its own transaction, taken on the writer.
	return querier{cached{d: d, p: d.w}}.Exec(ctx, query, args...)
}

func (d *db) QueryRow(ctx context.Context, query string, args ...any) sqlstore.Row {
	return querier{cached{d: d, p: d.reader()}}.QueryRow(ctx, query, args...)
}

func (d *db) Query(ctx context.Context, query string, args ...any) (sqlstore.Rows, error) {
	return querier{cached{d: d, p: d.reader()}}.Query(ctx, query, args...)
}

func (d *db) InTx(ctx context.Context, fn func(sqlstore.Querier) error) error {
	return d.InTxRelaxed(ctx, false, fn)
}

// beginner is the writer pool or one of its connections.
type beginner interface {
	BeginTx(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error)
}

// InTxRelaxed runs fn in one write transaction. A relaxed one runs on the
// writer connection switched to synchronous=NORMAL for its commit: in WAL
// mode that commit survives a crash of the process but not necessarily
// of the machine, and costs no fsync.
func (d *db) InTxRelaxed(ctx context.Context, relaxed bool, fn func(sqlstore.Querier) error) error {
	var seen []string
	// Statements the transaction ran unprepared are prepared once it has
	// given the writer connection back; a failure only means the next
	// transaction runs them unprepared again.
	defer func() {
		for _, q := range seen {
			_, _ = d.prepare(context.WithoutCancel(ctx), d.w, q)
		}
	}()
	if !relaxed {
		return d.runTx(ctx, d.w, &seen, fn)
	}
	conn, err := d.w.Conn(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "PRAGMA synchronous = NORMAL"); err != nil {
		return fmt.Errorf("relax commit: %w", err)
	}
	defer func() {
		if _, err := conn.ExecContext(context.WithoutCancel(ctx), "PRAGMA synchronous = FULL"); err != nil {
			// Never hand a relaxed connection to a durable write: drop it.
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
	}()
	return d.runTx(ctx, conn, &seen, fn)
}

func (d *db) runTx(ctx context.Context, b beginner, seen *[]string, fn func(sqlstore.Querier) error) error {
	tx, err := b.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(querier{cached{d: d, p: d.w, tx: tx, seen: seen}}); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// WriteRow runs query in a write transaction of its own; the row is read
// when scanned.
func (d *db) WriteRow(ctx context.Context, relaxed bool, query string, args ...any) sqlstore.Row {
	return writeRow{d: d, ctx: ctx, relaxed: relaxed, query: query, args: args}
}

type writeRow struct {
	d       *db
	ctx     context.Context
	relaxed bool
	query   string
	args    []any
}

func (w writeRow) Scan(dest ...any) error {
	return w.d.InTxRelaxed(w.ctx, w.relaxed, func(q sqlstore.Querier) error {
		return q.QueryRow(w.ctx, w.query, w.args...).Scan(dest...)
	})
}

func (d *db) Ping(ctx context.Context) error {
	// The reader pool answers even while a write transaction runs.
	if err := d.reader().PingContext(ctx); err != nil {
		return fmt.Errorf("sqlite ledger: %w", err)
	}
	return nil
}

func (d *db) Close() error {
	d.mu.Lock()
	for _, m := range d.stmts {
		for _, st := range m {
			st.Close()
		}
	}
	d.stmts = nil
	d.mu.Unlock()
	var rerr error
	if d.r != nil {
		rerr = d.r.Close()
	}
	return errors.Join(rerr, d.w.Close())
}
