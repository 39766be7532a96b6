package transaction_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/desfire-relay/relay/internal/testbackend"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/ledger/postgres"
	"github.com/desfire-relay/relay/transaction/ledger/sqlite"
	"github.com/desfire-relay/relay/transaction/lock"
	"github.com/desfire-relay/relay/transaction/profile"
)

// Database budget of one EV2 top-up on a card with nothing unresolved:
// create (top-up, session, token), consume the token, the session's
// reads and writes, and its outcome, with the webhook outbox on (its
// rows join the statements of the changes they record). Counted through
// the ledger's database interface (ledger.Stats), so a regression fails
// here.
const (
	// maxRoundTrips: PostgreSQL round trips, BEGIN and COMMIT included.
	maxRoundTrips = 5
	// maxCommits: write transactions (SQLite) or commits (PostgreSQL).
	maxCommits = 4
	// maxDurableCommits: commits that wait for their WAL flush (fsyncs on
	// SQLite): the create, the token, in_doubt.
	maxDurableCommits = 3
)

func TestTopUpDatabaseBudget(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			st := &ledger.Stats{}
			var (
				l   ledger.Ledger
				lk  lock.Locker
				err error
			)
			switch backend {
			case "sqlite":
				l, err = sqlite.Open(ctx, filepath.Join(t.TempDir(), "l.db"), ledger.Config{Stats: st, Outbox: true})
				lk = lock.NewMemory()
			case "postgres":
				l, err = postgres.Open(ctx, testbackend.PostgresSchema(t), ledger.Config{Stats: st, Outbox: true})
				lk = testbackend.RedisLocker(t)
			}
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
			e := newEnv(t, profile.AN12113(), l, lk)
			// A first top-up warms statement caches; the second is counted.
			var total ledger.StatsSnapshot
			for i := range 2 {
				s0 := st.Snapshot()
				_, tk, _, err := e.svc.CreateTopUp(ctx, fmt.Sprintf("budget-%d", i), ledger.Request{Amount: 100, Currency: "EUR"})
				if err != nil {
					t.Fatal(err)
				}
				s1 := st.Snapshot()
				sess := e.open(t, tk)
				s2 := st.Snapshot()
				res := e.run(t, sess, true)
				if !res.OK || res.Status != "applied" || res.Balance == nil {
					t.Fatalf("top-up: %+v", res)
				}
				s3 := st.Snapshot()
				// The outcome rode with applied: the session reads ended,
				// with the result the bridge got.
				got, err := l.GetSession(ctx, sess.ID)
				if err != nil || got.Status != ledger.SessionOK || got.EndedAt == nil || got.Outcome.Balance == nil ||
					*got.Outcome.Balance != *res.Balance || got.Outcome.CardUID != res.CardUID {
					t.Fatalf("session after the top-up: %+v, %v", got, err)
				}
				if i == 1 {
					for _, p := range []struct {
						name string
						d    ledger.StatsSnapshot
					}{{"create", s1.Sub(s0)}, {"consume token", s2.Sub(s1)}, {"session", s3.Sub(s2)}} {
						t.Logf("%-13s %+v", p.name, p.d)
					}
					total = s3.Sub(s0)
				}
			}
			t.Logf("per top-up: %d statements, %d round trips, %d commits (%d relaxed)",
				total.Statements, total.RoundTrips, total.Commits, total.Relaxed)
			// Round trips are what PostgreSQL sees; embedded SQLite has none
			// (its budget is write transactions and fsyncs).
			if backend == "postgres" && total.RoundTrips > maxRoundTrips {
				t.Errorf("%d round trips per top-up, budget %d", total.RoundTrips, maxRoundTrips)
			}
			if total.Commits > maxCommits {
				t.Errorf("%d commits per top-up, budget %d", total.Commits, maxCommits)
			}
			if d := total.Commits - total.Relaxed; d > maxDurableCommits {
				t.Errorf("%d durable commits per top-up, budget %d", d, maxDurableCommits)
			}
		})
	}
}
