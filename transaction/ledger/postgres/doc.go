// Package postgres is the PostgreSQL ledger backend, for deployments with
// several server processes. Transactions run at READ COMMITTED and lock
// the rows they change with SELECT ... FOR NO KEY UPDATE; the card fence is a
// conditional upsert, so concurrent sessions on any process serialise on
// the rows they share. Transactions that hit a deadlock or serialisation
// failure are retried a few times. Migrations take an advisory lock, so
// processes starting together migrate one at a time.
package postgres
