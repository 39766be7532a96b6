package transaction_test

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"testing"

	"github.com/desfire-relay/relay/transaction"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/lock"
	"github.com/desfire-relay/relay/transaction/profile"
)

// TestBlockedCardAtSession: a top-up created before its card was known
// is refused by the session once the card authenticated: nothing reaches
// the card, the top-up fails (free for another card) and a balance lookup
// of the blocked card still works.
func TestBlockedCardAtSession(t *testing.T) {
	ctx := context.Background()
	for _, p := range []profile.Profile{profile.AN12113(), profile.AN12113EV1()} {
		for _, batch := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/batch=%v", p.Name, batch), func(t *testing.T) {
				e := newEnv(t, p, sqliteLedger(t), lock.NewMemory())
				before, logs := e.cardState(t)
				tu, tk, _, err := e.svc.CreateTopUp(ctx, "k1", ledger.Request{Amount: 700, Currency: "EUR"})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := e.svc.BlockCard(ctx, ledger.DefaultTenant, hex.EncodeToString(testUID), "key:test", "reported stolen"); err != nil {
					t.Fatal(err)
				}
				res := e.run(t, e.open(t, tk), batch)
				if res.OK || res.Reason != transaction.ReasonCardBlocked || res.Status != "failed" {
					t.Fatalf("blocked card: ok=%v code=%s status=%s", res.OK, res.Reason, res.Status)
				}
				got, _ := e.svc.GetTopUp(ctx, tu.ID)
				if got.Status != ledger.StatusFailed || got.CardUID != "" {
					t.Fatalf("top-up after a blocked card: %s bound to %q, want failed and unbound", got.Status, got.CardUID)
				}
				if v, n := e.cardState(t); v != before || n != logs {
					t.Fatalf("card changed: value %d → %d, log %d → %d", before, v, logs, n)
				}
				// The balance lookup still works.
				btk, err := e.svc.BalanceTicket(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if res := e.run(t, e.open(t, btk), batch); !res.OK || res.Balance == nil || *res.Balance != before {
					t.Fatalf("balance of a blocked card: %+v", res)
				}
				// Unblocked, the same top-up (new token) goes through.
				if removed, err := e.svc.UnblockCard(ctx, ledger.DefaultTenant, hex.EncodeToString(testUID), "key:test"); err != nil || !removed {
					t.Fatalf("unblock: %v %v", removed, err)
				}
				tk, err = e.svc.TopUpTicket(ctx, tu.ID)
				if err != nil {
					t.Fatal(err)
				}
				if res := e.run(t, e.open(t, tk), batch); !res.OK || res.Status != "applied" {
					t.Fatalf("after unblock: %+v", res)
				}
				if v, _ := e.cardState(t); v != before+700 {
					t.Fatalf("card value %d, want %d", v, before+700)
				}
			})
		}
	}
}

// TestBlockedCardLyingBridge: a bridge that names an unblocked UID while
// holding the blocked card gets keys the card refuses: nothing is
// credited, the top-up is not applied.
func TestBlockedCardLyingBridge(t *testing.T) {
	ctx := context.Background()
	p := profile.AN12113()
	e := newEnv(t, p, sqliteLedger(t), lock.NewMemory())
	before, _ := e.cardState(t)
	if _, err := e.svc.BlockCard(ctx, ledger.DefaultTenant, hex.EncodeToString(testUID), "key:test", "stolen"); err != nil {
		t.Fatal(err)
	}
	tu, tk, _, err := e.svc.CreateTopUp(ctx, "k1", ledger.Request{Amount: 700, Currency: "EUR"})
	if err != nil {
		t.Fatal(err)
	}
	res := e.svc.Run(ctx, e.open(t, tk), "04010203040506", bridge{t: e.card, batch: true})
	if res.OK || res.Status == "applied" {
		t.Fatalf("lying bridge: %+v", res)
	}
	if got, _ := e.svc.GetTopUp(ctx, tu.ID); got.Status == ledger.StatusApplied {
		t.Fatal("top-up applied through a lying bridge")
	}
	if v, _ := e.cardState(t); v != before {
		t.Fatalf("blocked card credited: %d → %d", before, v)
	}
	t.Logf("lying bridge ended with %s, top-up %s", res.Reason, res.Status)
}

// TestBlockedCardAtCreate: naming a blocked card refuses the top-up at
// creation; nothing is stored.
func TestBlockedCardAtCreate(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, profile.AN12113(), sqliteLedger(t), lock.NewMemory())
	uid := hex.EncodeToString(testUID)
	if _, err := e.svc.BlockCard(ctx, ledger.DefaultTenant, uid, "key:test", "lost"); err != nil {
		t.Fatal(err)
	}
	_, _, _, err := e.svc.CreateTopUp(ctx, "k1", ledger.Request{Amount: 700, Currency: "EUR", CardUID: uid})
	if !errors.Is(err, transaction.ErrCardBlocked) {
		t.Fatalf("create for a blocked card: %v", err)
	}
	if ts, err := e.svc.CardTopUps(ctx, uid); err != nil || len(ts) != 0 {
		t.Fatalf("stored %d top-ups (%v)", len(ts), err)
	}
	// Another tenant's block does not apply.
	if _, _, _, err := e.svc.CreateTopUp(ctx, "k2", ledger.Request{Amount: 700, Currency: "EUR", CardUID: uid, Tenant: "acme"}); err != nil {
		t.Fatalf("other tenant: %v", err)
	}
}

// TestCancelThenBridge: a cancelled top-up's bridge token is refused, and
// a session that had already opened its token finds it not payable.
func TestCancelThenBridge(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, profile.AN12113(), sqliteLedger(t), lock.NewMemory())
	before, _ := e.cardState(t)
	t.Run("token refused", func(t *testing.T) {
		tu, tk, _, err := e.svc.CreateTopUp(ctx, "k1", ledger.Request{Amount: 700, Currency: "EUR"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.svc.TenantCancel(ctx, ledger.DefaultTenant, tu.ID, "key:test", ""); err != nil {
			t.Fatal(err)
		}
		if _, err := e.svc.OpenSession(ctx, tk.Token); !errors.Is(err, transaction.ErrToken) {
			t.Fatalf("token of a cancelled top-up: %v", err)
		}
		if _, err := e.svc.TopUpTicket(ctx, tu.ID); !errors.Is(err, transaction.ErrNotPayable) {
			t.Fatalf("new ticket for a cancelled top-up: %v", err)
		}
	})
	t.Run("session already open", func(t *testing.T) {
		tu, tk, _, err := e.svc.CreateTopUp(ctx, "k2", ledger.Request{Amount: 700, Currency: "EUR"})
		if err != nil {
			t.Fatal(err)
		}
		sess := e.open(t, tk)
		if _, err := e.svc.TenantCancel(ctx, ledger.DefaultTenant, tu.ID, "key:test", "duplicate order"); err != nil {
			t.Fatal(err)
		}
		res := e.run(t, sess, true)
		if res.OK || res.Reason != transaction.ReasonNotPayable {
			t.Fatalf("session of a cancelled top-up: %+v", res)
		}
		if got, _ := e.svc.GetTopUp(ctx, tu.ID); got.Status != ledger.StatusCancelled {
			t.Fatalf("status %s", got.Status)
		}
	})
	t.Run("applied refused", func(t *testing.T) {
		tu, tk, _, err := e.svc.CreateTopUp(ctx, "k3", ledger.Request{Amount: 100, Currency: "EUR"})
		if err != nil {
			t.Fatal(err)
		}
		if res := e.run(t, e.open(t, tk), true); !res.OK {
			t.Fatalf("top-up: %+v", res)
		}
		if _, err := e.svc.TenantCancel(ctx, ledger.DefaultTenant, tu.ID, "key:test", ""); !errors.Is(err, transaction.ErrNotCancellable) {
			t.Fatalf("cancel an applied top-up: %v", err)
		}
	})
	if v, _ := e.cardState(t); v != before+100 {
		t.Fatalf("card value %d, want %d (only the applied top-up)", v, before+100)
	}
}

// TestBlockedCardReversal: a blocked card refuses credits but its applied
// credits can still be reversed (a reversal only takes value off it).
func TestBlockedCardReversal(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, profile.AN12113(), sqliteLedger(t), lock.NewMemory())
	before, _ := e.cardState(t)
	orig := e.credited(t, 300, true)
	if _, err := e.svc.BlockCard(ctx, ledger.DefaultTenant, hex.EncodeToString(testUID), "key:test", "fraud"); err != nil {
		t.Fatal(err)
	}
	_, tk, _, err := e.svc.TenantReversal(ctx, ledger.DefaultTenant, orig.ID)
	if err != nil {
		t.Fatal(err)
	}
	if res := e.run(t, e.open(t, tk), true); !res.OK || res.Status != "applied" {
		t.Fatalf("reversal on a blocked card: %+v", res)
	}
	if v, _ := e.cardState(t); v != before {
		t.Fatalf("card value %d, want %d after the reversal", v, before)
	}
}

// TestCancelRacesSession: a cancel and a session for the same top-up at
// the same moment, many times: exactly one wins each race, and the card
// holds exactly the credits of the sessions that won.
func TestCancelRacesSession(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, profile.AN12113(), sqliteLedger(t), lock.NewMemory())
	before, _ := e.cardState(t)
	const amount, rounds = 10, 30
	applied, cancelled := 0, 0
	for i := range rounds {
		tu, tk, _, err := e.svc.CreateTopUp(ctx, fmt.Sprintf("race-%d", i), ledger.Request{Amount: amount, Currency: "EUR"})
		if err != nil {
			t.Fatal(err)
		}
		sess := e.open(t, tk)
		start := make(chan struct{})
		var res transaction.Result
		var cerr error
		done := make(chan struct{}, 2)
		go func() { <-start; res = e.run(t, sess, true); done <- struct{}{} }()
		go func() {
			<-start
			_, cerr = e.svc.TenantCancel(ctx, ledger.DefaultTenant, tu.ID, "key:test", "race")
			done <- struct{}{}
		}()
		close(start)
		<-done
		<-done
		e.card.Tap()
		got, _ := e.svc.GetTopUp(ctx, tu.ID)
		switch {
		case cerr == nil && got.Status == ledger.StatusCancelled && !res.OK && res.Reason == transaction.ReasonNotPayable:
			cancelled++
		case errors.Is(cerr, transaction.ErrNotCancellable) && res.OK && got.Status == ledger.StatusApplied:
			applied++
		default:
			t.Fatalf("round %d: cancel %v, session ok=%v code=%s, top-up %s", i, cerr, res.OK, res.Reason, got.Status)
		}
	}
	if v, _ := e.cardState(t); v != before+int64(applied*amount) {
		t.Fatalf("card value %d, want %d (%d sessions won)", v, before+int64(applied*amount), applied)
	}
	t.Logf("%d races: %d cancelled, %d applied; card credited exactly for the applied", rounds, cancelled, applied)
}
