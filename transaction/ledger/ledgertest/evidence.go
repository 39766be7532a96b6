package ledgertest

import (
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/desfire-relay/relay/transaction/ledger"
)

// apply moves an in_doubt top-up to applied with a Transaction MAC
// counter for application app.
func (e *env) apply(tu ledger.TopUp, sess uuid.UUID, card string, app uint32, tmc uint32) (ledger.TopUp, error) {
	return e.l.Transition(e.ctx, ledger.Transition{TopUpID: tu.ID, From: tu.Status, To: ledger.StatusApplied,
		Fence: e.newFence(), SessionID: sess, CardUID: card, TMC: &tmc, TMV: make([]byte, ledger.TMVLen), App: app,
		Now: base.Add(2 * time.Second)})
}

// testTMCPerCard: a commit proof's TMC must be above the last one accepted
// for the card and application; a refusal writes nothing.
func testTMCPerCard(t *testing.T, e *env) {
	a, card, sa := e.reach(ledger.StatusInDoubt)
	if _, err := e.apply(a, sa, card, 0x014499, 7); err != nil {
		t.Fatalf("first proof: %v", err)
	}
	for _, tmc := range []uint32{7, 3} {
		b := e.create(ledger.Request{Amount: 100, Currency: "EUR", CardUID: card})
		sb := e.session(b.ID).ID
		b = e.step(b, sb, card, ledger.StatusInProgress)
		b = e.step(b, sb, card, ledger.StatusInDoubt)
		_, err := e.apply(b, sb, card, 0x014499, tmc)
		if !errors.Is(err, ledger.ErrTMCReplay) {
			t.Fatalf("TMC %d after 7: %v, want ErrTMCReplay", tmc, err)
		}
		if got := e.get(b.ID); got.Status != ledger.StatusInDoubt || got.TMC != nil {
			t.Fatalf("refused proof wrote: %s tmc %v", got.Status, got.TMC)
		}
		// Another application of the same card has its own counter.
		if _, err := e.apply(b, sb, card, 0x112200+tmc, tmc); err != nil {
			t.Fatalf("TMC %d in another application: %v", tmc, err)
		}
	}
	c := e.create(ledger.Request{Amount: 100, Currency: "EUR", CardUID: card})
	sc := e.session(c.ID).ID
	c = e.step(c, sc, card, ledger.StatusInProgress)
	c = e.step(c, sc, card, ledger.StatusInDoubt)
	if got, err := e.apply(c, sc, card, 0x014499, 8); err != nil || *got.TMC != 8 {
		t.Fatalf("TMC 8 after 7: %v", err)
	}
}

// testResolve: an operator resolves in_doubt and in_progress top-ups with
// who and why; the decision is listed, final for sessions, and a later
// check records agreement or a conflict once.
func testResolve(t *testing.T, e *env) {
	for _, from := range []ledger.Status{ledger.StatusInDoubt, ledger.StatusInProgress} {
		for _, outcome := range []ledger.Status{ledger.StatusApplied, ledger.StatusFailed} {
			t.Run(from.String()+"→"+outcome.String(), func(t *testing.T) {
				tu, card, sess := e.reach(from)
				r := ledger.Resolution{TopUpID: tu.ID, From: from, Outcome: outcome, Actor: "key:0011", Reason: "card destroyed", Now: base.Add(time.Hour)}
				got, err := e.l.Resolve(e.ctx, r)
				if err != nil || got.Status != outcome || got.Resolution != "manual" || got.ResolutionChecked {
					t.Fatalf("resolve: %+v %v", got, err)
				}
				if _, err := e.l.Resolve(e.ctx, r); !errors.Is(err, ledger.ErrConflict) {
					t.Fatalf("second resolve: %v, want ErrConflict", err)
				}
				hist, err := e.l.ListResolutions(e.ctx, tu.ID)
				if err != nil || len(hist) != 1 || hist[0].Actor != "key:0011" || hist[0].Reason != "card destroyed" || hist[0].From != from || hist[0].Outcome != outcome {
					t.Fatalf("history %+v %v", hist, err)
				}
				un, err := e.l.UnresolvedByCard(e.ctx, card)
				if err != nil || len(un) != 1 || un[0].ID != tu.ID {
					t.Fatalf("an unchecked resolution is listed with the card's unresolved: %+v %v", un, err)
				}
				// Sessions may not move it any more.
				if _, err := e.l.Transition(e.ctx, ledger.Transition{TopUpID: tu.ID, From: from, To: ledger.StatusApplied, Fence: e.newFence(), SessionID: sess, CardUID: card, Now: base.Add(2 * time.Hour)}); err == nil {
					t.Fatal("a session moved a resolved top-up")
				}
				got, err = e.l.CheckResolution(e.ctx, tu.ID, "the card disagrees", base.Add(3*time.Hour))
				if err != nil || !got.ResolutionChecked || got.Conflict != "the card disagrees" || got.Status != outcome {
					t.Fatalf("check: %+v %v", got, err)
				}
				if _, err := e.l.CheckResolution(e.ctx, tu.ID, "", base.Add(4*time.Hour)); !errors.Is(err, ledger.ErrConflict) {
					t.Fatalf("second check: %v", err)
				}
				if un, _ := e.l.UnresolvedByCard(e.ctx, card); len(un) != 0 {
					t.Fatalf("checked resolution still listed: %+v", un)
				}
			})
		}
	}
	t.Run("refused", func(t *testing.T) {
		tu, _, _ := e.reach(ledger.StatusInDoubt)
		bad := []ledger.Resolution{
			{TopUpID: tu.ID, From: ledger.StatusInDoubt, Outcome: ledger.StatusPending, Actor: "k", Reason: "x", Now: base},
			{TopUpID: tu.ID, From: ledger.StatusInDoubt, Outcome: ledger.StatusApplied, Actor: "k", Reason: " ", Now: base},
			{TopUpID: tu.ID, From: ledger.StatusInDoubt, Outcome: ledger.StatusApplied, Actor: "", Reason: "x", Now: base},
			{TopUpID: tu.ID, From: ledger.StatusPending, Outcome: ledger.StatusApplied, Actor: "k", Reason: "x", Now: base},
			{TopUpID: tu.ID, From: ledger.StatusInDoubt, Outcome: ledger.StatusApplied, Actor: "k", Reason: "\xff", Now: base},
		}
		for i, r := range bad {
			if _, err := e.l.Resolve(e.ctx, r); !errors.Is(err, ledger.ErrInvalid) {
				t.Fatalf("bad resolution %d: %v", i, err)
			}
		}
		if got := e.get(tu.ID); got.Status != ledger.StatusInDoubt || got.Resolution != "" {
			t.Fatalf("refused resolutions wrote: %+v", got)
		}
		p, _, _ := e.reach(ledger.StatusPending)
		if _, err := e.l.Resolve(e.ctx, ledger.Resolution{TopUpID: p.ID, From: ledger.StatusInDoubt, Outcome: ledger.StatusApplied, Actor: "k", Reason: "x", Now: base}); !errors.Is(err, ledger.ErrConflict) {
			t.Fatalf("resolving a pending top-up as if in_doubt: %v", err)
		}
		if _, err := e.l.Resolve(e.ctx, ledger.Resolution{TopUpID: uuid.New(), From: ledger.StatusInDoubt, Outcome: ledger.StatusApplied, Actor: "k", Reason: "x", Now: base}); !errors.Is(err, ledger.ErrNotFound) {
			t.Fatalf("unknown top-up: %v", err)
		}
	})
}

// testListAndOldest: the operator's queue by status and age, paged.
func testListAndOldest(t *testing.T, e *env) {
	if _, ok, err := e.l.OldestUnresolved(e.ctx); err != nil || ok {
		t.Fatalf("empty ledger: ok=%v %v", ok, err)
	}
	var doubts []uuid.UUID
	for i := 0; i < 5; i++ {
		tu, _, _ := e.reach(ledger.StatusInDoubt)
		doubts = append(doubts, tu.ID)
	}
	e.reach(ledger.StatusApplied)
	e.reach(ledger.StatusPending)
	at, ok, err := e.l.OldestUnresolved(e.ctx)
	if err != nil || !ok || !at.Equal(base.Add(time.Second)) {
		t.Fatalf("oldest: %v %v %v", at, ok, err)
	}
	var seen []uuid.UUID
	f := ledger.Filter{Status: ledger.StatusInDoubt, UpdatedBefore: base.Add(time.Minute), Limit: 2}
	for page := 0; page < 5; page++ {
		ts, err := e.l.ListTopUps(e.ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		for _, tu := range ts {
			if tu.Status != ledger.StatusInDoubt {
				t.Fatalf("listed a %s top-up", tu.Status)
			}
			seen = append(seen, tu.ID)
		}
		if len(ts) < f.Limit {
			break
		}
		f.AfterUpdated, f.AfterID = ts[len(ts)-1].UpdatedAt, ts[len(ts)-1].ID
	}
	if len(seen) != len(doubts) {
		t.Fatalf("paged through %d in_doubt top-ups, want %d", len(seen), len(doubts))
	}
	if ts, err := e.l.ListTopUps(e.ctx, ledger.Filter{Status: ledger.StatusInDoubt, UpdatedBefore: base}); err != nil || len(ts) != 0 {
		t.Fatalf("older_than filter: %d %v", len(ts), err)
	}
	for _, f := range []ledger.Filter{{Limit: -1}, {Limit: ledger.MaxPage + 1}, {Status: 99}, {CardUID: "zz"}, {AfterID: uuid.New()}} {
		if _, err := e.l.ListTopUps(e.ctx, f); !errors.Is(err, ledger.ErrInvalid) {
			t.Fatalf("filter %+v: %v", f, err)
		}
	}
}
