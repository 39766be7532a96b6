package transaction_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/desfire-relay/relay/internal/testcard"
	"github.com/desfire-relay/relay/transaction/cardscript"
	"github.com/desfire-relay/relay/transaction/keys"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/lock"
	"github.com/desfire-relay/relay/transaction/profile"
)

// credited tops the env's card up with amount and returns the applied
// credit.
func (e *env) credited(t *testing.T, amount int64, batch bool) ledger.TopUp {
	t.Helper()
	tu, tk, _, err := e.svc.CreateTopUp(context.Background(), "credit", ledger.Request{Amount: amount, Currency: "EUR"})
	if err != nil {
		t.Fatal(err)
	}
	if res := e.run(t, e.open(t, tk), batch); !res.OK {
		t.Fatalf("credit: %+v", res)
	}
	e.card.Tap()
	got, _ := e.svc.GetTopUp(context.Background(), tu.ID)
	return got
}

// TestReversalTearEveryAPDU: an applied credit is reversed with the card
// present while the card is torn after each APDU of the reversal session
// (and once right after a durable commit whose answer is lost); retried
// until settled, the card is back at its value before the credit exactly
// once, the reversal entry is applied and names the credit, and the credit
// itself stays applied.
func TestReversalTearEveryAPDU(t *testing.T) {
	const initial, amount = 0, 700
	for _, p := range []profile.Profile{profile.AN12113(), profile.AN12113EV1()} {
		for _, batch := range []bool{true, false} {
			probe := newEnv(t, p, sqliteLedger(t), lock.NewMemory())
			orig := probe.credited(t, amount, batch)
			_, tk, _, err := probe.svc.TenantReversal(context.Background(), ledger.DefaultTenant, orig.ID)
			if err != nil {
				t.Fatal(err)
			}
			before := probe.card.APDUs()
			if res := probe.run(t, probe.open(t, tk), batch); !res.OK || *res.Balance != initial {
				t.Fatalf("probe reversal: %+v", res)
			}
			n := probe.card.APDUs() - before
			for cut := -1; cut <= n; cut++ {
				name := fmt.Sprintf("%s/batch=%v/tear-after-%d", p.Name, batch, cut)
				if cut < 0 {
					name = fmt.Sprintf("%s/batch=%v/tear-after-commit", p.Name, batch)
				}
				t.Run(name, func(t *testing.T) {
					e := newEnv(t, p, sqliteLedger(t), lock.NewMemory())
					ctx := context.Background()
					orig := e.credited(t, amount, batch)
					rv, tk, created, err := e.svc.TenantReversal(ctx, ledger.DefaultTenant, orig.ID)
					if err != nil || !created || tk == nil || rv.Kind != ledger.TopUpReversal || rv.Reverses != orig.ID ||
						rv.Amount != amount || rv.CardUID != orig.CardUID {
						t.Fatalf("reversal %+v created=%v: %v", rv, created, err)
					}
					if cut < 0 {
						e.card.SetTearAfterCommit(true)
					} else {
						e.card.RemoveAfter(cut)
					}
					first := e.run(t, e.open(t, tk), batch)
					e.card.Tap()
					for i := 0; i < 3; i++ {
						cur, _ := e.svc.GetTopUp(ctx, rv.ID)
						if cur.Status == ledger.StatusApplied {
							break
						}
						again, tk2, created, err := e.svc.TenantReversal(ctx, ledger.DefaultTenant, orig.ID)
						if err != nil || created || again.ID != rv.ID || tk2 == nil {
							t.Fatalf("retry from %s: %+v created=%v %v (first %+v)", cur.Status, again, created, err, first)
						}
						e.run(t, e.open(t, tk2), batch)
						e.card.Tap()
					}
					got, _ := e.svc.GetTopUp(ctx, rv.ID)
					o, _ := e.svc.GetTopUp(ctx, orig.ID)
					v, records := e.cardState(t)
					if got.Status != ledger.StatusApplied || o.Status != ledger.StatusApplied || v != initial || records != 2 {
						t.Fatalf("first %+v; reversal %s, credit %s, card value %d with %d records", first, got.Status, o.Status, v, records)
					}
					// Proven by its own Transaction MAC, or (commit answer
					// lost) by its record in the card's log at the next tap.
					if p.HasTMAC && got.TMC != nil && *got.TMC <= *o.TMC {
						t.Fatalf("reversal's Transaction MAC counter %d not above the credit's %d", *got.TMC, *o.TMC)
					}
					if p.HasTMAC && cut > 0 && got.TMC == nil && got.Attempts < 2 {
						t.Fatalf("reversal applied without a Transaction MAC or a later tap: %+v", got)
					}
				})
			}
		}
	}
}

// TestReversalRules: only an applied credit of the asking tenant can be
// reversed, once; a reversal cannot be reversed; a card whose value would
// drop below its lower limit refuses the debit and nothing moves.
func TestReversalRules(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, profile.AN12113(), sqliteLedger(t), lock.NewMemory())
	pending, _, _, err := e.svc.CreateTopUp(ctx, "pending", ledger.Request{Amount: 10, Currency: "EUR"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := e.svc.TenantReversal(ctx, ledger.DefaultTenant, pending.ID); !errors.Is(err, ledger.ErrNotReversible) {
		t.Fatalf("reversal of a pending top-up: %v", err)
	}
	orig := e.credited(t, 500, true)
	if _, _, _, err := e.svc.TenantReversal(ctx, "globex", orig.ID); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("reversal by another tenant: %v", err)
	}
	rv, tk, _, err := e.svc.TenantReversal(ctx, ledger.DefaultTenant, orig.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := e.svc.TenantReversal(ctx, ledger.DefaultTenant, rv.ID); !errors.Is(err, ledger.ErrNotReversible) {
		t.Fatalf("reversal of a reversal: %v", err)
	}
	// The passenger spends 300 at a terminal first: the debit of 500
	// would pass the lower limit (0), so the card refuses it.
	spend(t, e, 300)
	res := e.run(t, e.open(t, tk), true)
	e.card.Tap()
	got, _ := e.svc.GetTopUp(ctx, rv.ID)
	if res.OK || res.Reason != "limit_exceeded" {
		t.Fatalf("debit below the lower limit: %+v", res)
	}
	if v, _ := e.cardState(t); v != 200 {
		t.Fatalf("card value %d, want 200", v)
	}
	if got.Status == ledger.StatusApplied {
		t.Fatalf("a refused debit is recorded applied")
	}
}

// spend debits amount at a "terminal" (outside the relay).
func spend(t *testing.T, e *env, amount int32) {
	t.Helper()
	e.card.Tap()
	tmk := func(ctx context.Context, version byte) ([]byte, error) {
		return e.kp.CardKey(ctx, keys.Ref{AID: e.p.AID, Name: keys.TMACName, Version: version}, testUID)
	}
	if _, err := cardscript.TopUp(context.Background(), e.card, cardscript.TopUpParams{Profile: e.p, UID: testUID, TMACKey: tmk,
		Amount: amount, Debit: true, Key: testcard.KeyFunc(e.p, e.kp, testUID),
		Record: profile.LogRecord{Timestamp: 1, Amount: -amount, Ref: [8]byte{9, 9, 9, 9, 9, 9, 9, 9}}}); err != nil {
		t.Fatalf("terminal debit: %v", err)
	}
	e.card.Tap()
}
