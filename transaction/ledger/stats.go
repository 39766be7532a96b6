package ledger

import "sync/atomic"

// Stats counts the database work of a ledger, for the statement-budget
// tests and the load tool's headline. Give one to Config.Stats; a nil
// *Stats counts nothing. Safe for concurrent use.
type Stats struct {
	statements, roundTrips, commits, relaxed atomic.Int64
}

// StatsSnapshot is what a Stats counted so far.
type StatsSnapshot struct {
	// Statements is the number of SQL statements run (BEGIN and COMMIT
	// not included).
	Statements int64
	// RoundTrips counts the client/server exchanges a networked database
	// needs for them: one per statement, plus BEGIN and COMMIT around each
	// explicit transaction. (Embedded SQLite has no round trips; the
	// figure is what PostgreSQL would see for the same calls.)
	RoundTrips int64
	// Commits counts write transactions: explicit ones and lone write
	// statements, which commit on their own.
	Commits int64
	// Relaxed counts the commits among them that need not be durable
	// when they return (see docs/ARCHITECTURE.md, "Durability").
	Relaxed int64
}

// Sub returns s minus o, the work done between two snapshots.
func (s StatsSnapshot) Sub(o StatsSnapshot) StatsSnapshot {
	return StatsSnapshot{Statements: s.Statements - o.Statements, RoundTrips: s.RoundTrips - o.RoundTrips,
		Commits: s.Commits - o.Commits, Relaxed: s.Relaxed - o.Relaxed}
}

// Snapshot returns the counts so far.
func (s *Stats) Snapshot() StatsSnapshot {
	if s == nil {
		return StatsSnapshot{}
	}
	return StatsSnapshot{Statements: s.statements.Load(), RoundTrips: s.roundTrips.Load(),
		Commits: s.commits.Load(), Relaxed: s.relaxed.Load()}
}

// Statement counts one statement and its round trip.
func (s *Stats) Statement() {
	if s != nil {
		s.statements.Add(1)
		s.roundTrips.Add(1)
	}
}

// Transaction counts the BEGIN and COMMIT (or ROLLBACK) of an explicit
// transaction, and its commit when committed.
func (s *Stats) Transaction(committed, relaxed bool) {
	if s == nil {
		return
	}
	s.roundTrips.Add(2)
	if committed {
		s.Commit(relaxed)
	}
}

// Commit counts one commit.
func (s *Stats) Commit(relaxed bool) {
	if s == nil {
		return
	}
	s.commits.Add(1)
	if relaxed {
		s.relaxed.Add(1)
	}
}
