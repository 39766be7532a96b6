// Package ledgertest is the behavioural suite every ledger.Ledger must
// pass: idempotent creation, the whole transition table, compare-and-set
// and fencing under contention, single-use tokens, expiry, card history
// and attempts. Backends call Run from their tests and BenchTransition
// from their benchmarks; the suite only uses the Ledger interface.
package ledgertest
