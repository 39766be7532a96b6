package transaction_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/lock"
	"github.com/desfire-relay/relay/transaction/profile"
)

// forgetful is a ledger that confirms the → in_doubt write of one top-up
// but keeps only an earlier in_progress, as a database running without
// synchronous commit does when it crashes right after confirming. (With
// durable in_doubt commits this cannot happen; the recovery of a top-up
// a dead session left in_progress is what this exercises.)
type forgetful struct {
	ledger.Ledger
	forget atomic.Bool
}

func (f *forgetful) Transition(ctx context.Context, t ledger.Transition) (ledger.TopUp, error) {
	if t.To == ledger.StatusInDoubt && f.forget.CompareAndSwap(true, false) {
		cur, err := f.Ledger.GetTopUp(ctx, t.TopUpID)
		if err == nil && t.From != ledger.StatusInProgress {
			kept := t
			kept.To = ledger.StatusInProgress
			cur, err = f.Ledger.Transition(ctx, kept)
		}
		cur.Status = ledger.StatusInDoubt
		return cur, err
	}
	return f.Ledger.Transition(ctx, t)
}

// TestLostInDoubtWriteSettledFromCardLog: the ledger lost the in_doubt
// write of a top-up whose commit reached the card, so the top-up still
// reads in_progress. The card's next tap — a top-up or a balance lookup —
// must settle it from the card's log as applied, never credit it twice.
func TestLostInDoubtWriteSettledFromCardLog(t *testing.T) {
	for _, p := range []profile.Profile{profile.AN12113(), profile.AN12113EV1()} {
		for _, next := range []string{"topup", "balance"} {
			t.Run(fmt.Sprintf("%s/next=%s", p.Name, next), func(t *testing.T) {
				ctx := context.Background()
				fl := &forgetful{Ledger: sqliteLedger(t)}
				e := newEnv(t, p, fl, lock.NewMemory())
				a, tk, _, err := e.svc.CreateTopUp(ctx, "lost-a", ledger.Request{Amount: 700, Currency: "EUR"})
				if err != nil {
					t.Fatal(err)
				}
				fl.forget.Store(true)
				res := e.run(t, e.open(t, tk), true)
				if res.OK {
					t.Fatalf("session with a lost ledger write ended ok: %+v", res)
				}
				if got, _ := e.svc.GetTopUp(ctx, a.ID); got.Status != ledger.StatusInProgress {
					t.Fatalf("after the lost write the top-up is %s, want in_progress", got.Status)
				}
				if v, n := e.cardState(t); v != 700 || n != 1 {
					t.Fatalf("card %d with %d records, want the one credit of 700", v, n)
				}
				want := int64(700)
				switch next {
				case "topup":
					_, tk2, _, err := e.svc.CreateTopUp(ctx, "lost-b", ledger.Request{Amount: 50, Currency: "EUR"})
					if err != nil {
						t.Fatal(err)
					}
					if res := e.run(t, e.open(t, tk2), true); !res.OK || res.Status != "applied" {
						t.Fatalf("next top-up: %+v", res)
					}
					want += 50
				case "balance":
					tk2, err := e.svc.BalanceTicket(ctx)
					if err != nil {
						t.Fatal(err)
					}
					if res := e.run(t, e.open(t, tk2), true); !res.OK {
						t.Fatalf("balance tap: %+v", res)
					}
				}
				if got, _ := e.svc.GetTopUp(ctx, a.ID); got.Status != ledger.StatusApplied {
					t.Fatalf("lost top-up is %s after the next tap, want applied (its credit is on the card)", got.Status)
				}
				if v, _ := e.cardState(t); int64(v) != want {
					t.Fatalf("card value %d, want %d: credited twice or lost", v, want)
				}
			})
		}
	}
}
