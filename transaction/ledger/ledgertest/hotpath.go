package ledgertest

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/desfire-relay/relay/transaction/ledger"
)

// testCreateTopUpSession: a new top-up comes with an open session whose
// token works once; a replayed key returns the top-up and no session; a
// different request under the key is refused and writes nothing.
func testCreateTopUpSession(t *testing.T, e *env) {
	req := ledger.Request{Amount: 250, Currency: "EUR", Reference: "hot"}
	key := e.key()
	hash := sha256.Sum256([]byte(key))
	tu, sess, created, err := e.l.CreateTopUpSession(e.ctx, req, key, hash[:], base.Add(time.Hour), base)
	if err != nil || !created {
		t.Fatalf("CreateTopUpSession = created %v, %v", created, err)
	}
	if tu.Status != ledger.StatusPending || tu.Amount != 250 || sess.TopUpID != tu.ID || sess.Status != ledger.SessionOpen || sess.Kind != ledger.KindTopUp {
		t.Fatalf("top-up %+v, session %+v", tu, sess)
	}
	if got, err := e.l.GetSession(e.ctx, sess.ID); err != nil || got.TopUpID != tu.ID || got.Tenant != ledger.DefaultTenant {
		t.Fatalf("stored session %+v, %v", got, err)
	}
	again, s2, created, err := e.l.CreateTopUpSession(e.ctx, req, key, bytes.Repeat([]byte{1}, 32), base.Add(time.Hour), base)
	if err != nil || created || again.ID != tu.ID || s2.ID != uuid.Nil {
		t.Fatalf("replay = %v %v %+v, %v", again.ID, created, s2, err)
	}
	if _, _, _, err := e.l.CreateTopUpSession(e.ctx, ledger.Request{Amount: 251, Currency: "EUR"}, key, bytes.Repeat([]byte{2}, 32), base.Add(time.Hour), base); !errors.Is(err, ledger.ErrIdempotencyConflict) {
		t.Fatalf("other request under the key: %v", err)
	}
	got, err := e.l.ConsumeToken(e.ctx, hash[:], base.Add(time.Minute))
	if err != nil || got.ID != sess.ID {
		t.Fatalf("ConsumeToken = %+v, %v", got, err)
	}
	if _, err := e.l.ConsumeToken(e.ctx, hash[:], base.Add(time.Minute)); !errors.Is(err, ledger.ErrTokenUsed) {
		t.Fatalf("second ConsumeToken: %v", err)
	}
	// The replay's token was never stored.
	if _, err := e.l.ConsumeToken(e.ctx, bytes.Repeat([]byte{1}, 32), base.Add(time.Minute)); !errors.Is(err, ledger.ErrTokenUnknown) {
		t.Fatalf("replay's token: %v", err)
	}
	if _, _, _, err := e.l.CreateTopUpSession(e.ctx, req, e.key(), []byte{1}, base.Add(time.Hour), base); !errors.Is(err, ledger.ErrInvalid) {
		t.Fatalf("short token hash: %v", err)
	}
}

// testSessionTopUp: one read returns the top-up and the card's
// unresolved top-ups, oldest first, the top-up among them when it is one.
func testSessionTopUp(t *testing.T, e *env) {
	card := e.card()
	a := e.create(ledger.Request{Amount: 1, Currency: "EUR"})
	a = e.step(a, e.session(a.ID).ID, card, ledger.StatusInDoubt)
	b := e.create(ledger.Request{Amount: 2, Currency: "EUR"})
	b = e.step(b, e.session(b.ID).ID, card, ledger.StatusInProgress)
	c := e.create(ledger.Request{Amount: 3, Currency: "EUR"})
	tu, open, _, err := e.l.SessionTopUp(e.ctx, c.ID, card)
	if err != nil || tu.ID != c.ID || tu.Status != ledger.StatusPending {
		t.Fatalf("SessionTopUp = %+v, %v", tu, err)
	}
	want, err := e.l.UnresolvedByCard(e.ctx, card)
	if err != nil || len(open) != 2 || len(want) != 2 || open[0].ID != want[0].ID || open[1].ID != want[1].ID ||
		(open[0].ID != a.ID && open[0].ID != b.ID) || (open[1].ID != a.ID && open[1].ID != b.ID) {
		t.Fatalf("unresolved = %v, want a and b as UnresolvedByCard orders them (%v)", ids(open), ids(want))
	}
	if tu, open, _, err = e.l.SessionTopUp(e.ctx, a.ID, card); err != nil || tu.ID != a.ID || len(open) != 2 {
		t.Fatalf("SessionTopUp of an unresolved one = %+v %v, %v", tu.ID, ids(open), err)
	}
	if _, open, _, err = e.l.SessionTopUp(e.ctx, c.ID, e.card()); err != nil || len(open) != 0 {
		t.Fatalf("other card: %v, %v", ids(open), err)
	}
	if _, _, _, err := e.l.SessionTopUp(e.ctx, uuid.New(), card); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("unknown top-up: %v", err)
	}
	// The hot list rides in the same read: the top-up's tenant's block
	// of this card, not another tenant's and not another card's.
	ops, ok := e.l.(ledger.Operations)
	if !ok {
		return
	}
	if _, _, blocked, _ := e.l.SessionTopUp(e.ctx, c.ID, card); blocked {
		t.Fatal("blocked before any block")
	}
	if _, err := ops.BlockCard(e.ctx, ledger.CardBlock{Tenant: "globex", CardUID: card, Reason: "lost", Actor: "k", At: base}); err != nil {
		t.Fatal(err)
	}
	if _, _, blocked, _ := e.l.SessionTopUp(e.ctx, c.ID, card); blocked {
		t.Fatal("another tenant's block applies")
	}
	if _, err := ops.BlockCard(e.ctx, ledger.CardBlock{Tenant: c.Tenant, CardUID: card, Reason: "stolen", Actor: "k", At: base}); err != nil {
		t.Fatal(err)
	}
	if _, _, blocked, err := e.l.SessionTopUp(e.ctx, c.ID, card); err != nil || !blocked {
		t.Fatalf("own tenant's block not seen: %v", err)
	}
	if _, _, blocked, _ := e.l.SessionTopUp(e.ctx, c.ID, e.card()); blocked {
		t.Fatal("a block of one card applies to another")
	}
}

func ids(ts []ledger.TopUp) []uuid.UUID {
	var out []uuid.UUID
	for _, t := range ts {
		out = append(out, t.ID)
	}
	return out
}

// testTransitionFinish: a session transition with Finish ends the
// session in the same commit; a refused one ends nothing; an ended
// session keeps its outcome.
func testTransitionFinish(t *testing.T, e *env) {
	card := e.card()
	tu := e.create(ledger.Request{Amount: 5, Currency: "EUR"})
	sess := e.session(tu.ID)
	e.newFence()
	tu = e.step(tu, sess.ID, card, ledger.StatusInDoubt) // fence ≥ 2
	bal := int64(5)
	done := &ledger.SessionOutcome{OK: true, CardUID: card, Balance: &bal}
	// Refused (stale fence): nothing written, the session stays open.
	if _, err := e.l.Transition(e.ctx, ledger.Transition{TopUpID: tu.ID, From: ledger.StatusInDoubt, To: ledger.StatusApplied,
		Fence: 1, SessionID: sess.ID, CardUID: card, Finish: done, Now: base.Add(time.Minute)}); !errors.Is(err, ledger.ErrStaleFence) {
		t.Fatalf("stale fence: %v", err)
	}
	if s, _ := e.l.GetSession(e.ctx, sess.ID); s.Status != ledger.SessionOpen {
		t.Fatalf("refused transition ended the session: %s", s.Status)
	}
	out, err := e.l.Transition(e.ctx, ledger.Transition{TopUpID: tu.ID, From: ledger.StatusInDoubt, To: ledger.StatusApplied,
		Fence: e.newFence(), SessionID: sess.ID, CardUID: card, Finish: done, Now: base.Add(time.Minute)})
	if err != nil || out.Status != ledger.StatusApplied {
		t.Fatalf("applied with finish: %+v, %v", out.Status, err)
	}
	s, _ := e.l.GetSession(e.ctx, sess.ID)
	if s.Status != ledger.SessionOK || s.Outcome.Balance == nil || *s.Outcome.Balance != 5 || s.EndedAt == nil {
		t.Fatalf("session %+v", s)
	}
	if _, err := e.l.FinishSession(e.ctx, sess.ID, ledger.SessionOutcome{}, base.Add(time.Hour)); !errors.Is(err, ledger.ErrSessionClosed) {
		t.Fatalf("finish again: %v", err)
	}
	// An operator transition cannot end a session.
	p := e.create(ledger.Request{Amount: 6, Currency: "EUR"})
	if _, err := e.l.Transition(e.ctx, ledger.Transition{TopUpID: p.ID, From: ledger.StatusPending, To: ledger.StatusExpired,
		Finish: done, Now: base.Add(time.Minute)}); !errors.Is(err, ledger.ErrInvalid) {
		t.Fatalf("finish on an operator transition: %v", err)
	}
}

// testOutboxHotPath: the common path's phases (pending → in_doubt, then
// applied ending the session in the same commit) record the same events,
// in the same order, as the step-by-step path.
func testOutboxHotPath(t *testing.T, e *env, o ledger.Outbox) {
	key := e.key()
	hash := sha256.Sum256([]byte(key))
	tu, sess, _, err := e.l.CreateTopUpSession(e.ctx, ledger.Request{Amount: 500, Currency: "EUR"}, key, hash[:], base.Add(time.Hour), base)
	if err != nil {
		t.Fatal(err)
	}
	card := e.card()
	tu, err = e.l.Transition(e.ctx, ledger.Transition{TopUpID: tu.ID, From: ledger.StatusPending, To: ledger.StatusInDoubt,
		Fence: e.newFence(), SessionID: sess.ID, CardUID: card, Now: base.Add(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.l.Transition(e.ctx, ledger.Transition{TopUpID: tu.ID, From: ledger.StatusInDoubt, To: ledger.StatusApplied,
		Fence: e.newFence(), SessionID: sess.ID, CardUID: card, Finish: &ledger.SessionOutcome{OK: true}, Now: base.Add(2 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	evs, _, err := o.ListEvents(e.ctx, ledger.DefaultTenant, tu.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := "topup.in_doubt(in_doubt) topup.applied(applied) session.finished(ok) "
	if got := eventTypes(evs); got != want {
		t.Fatalf("events %q, want %q", got, want)
	}
	for _, ev := range evs {
		if ev.SessionID != sess.ID || ev.TopUpID != tu.ID || ev.Tenant != ledger.DefaultTenant {
			t.Fatalf("event %+v does not name session %s and top-up %s", ev, sess.ID, tu.ID)
		}
	}
}
