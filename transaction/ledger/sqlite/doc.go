// Package sqlite is the embedded ledger backend: one database file, no
// server to run, for single-process deployments and development. It uses
// the pure-Go modernc.org/sqlite driver in WAL mode with foreign keys on,
// a busy timeout, and a single writer connection, so writes are serialised
// inside the process and every transaction is BEGIN IMMEDIATE. Reads use
// a small separate pool. It does not support several server processes
// writing one file at scale; use ledger/postgres for that.
package sqlite
