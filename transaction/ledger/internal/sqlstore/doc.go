// Package sqlstore is the ledger logic shared by the SQLite and PostgreSQL
// backends: every query, every transaction and the migration runner are
// written once here against a small database interface, so the two
// backends cannot drift apart. The backends only adapt their driver to
// DB and supply a Dialect and their migration files.
package sqlstore
