package ledgertest

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/desfire-relay/relay/transaction/ledger"
)

// RunOperations runs the suite of the operator operations: hot list,
// cancellation, list filters and exports.
func RunOperations(t *testing.T, open Opener) {
	tests := []struct {
		name string
		fn   func(*testing.T, *env)
	}{
		{"HotList", testHotList},
		{"Cancel", testCancel},
		{"CancelRacesSessionStart", testCancelRace},
		{"ListFilters", testListFilters},
		{"Export", testExport},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, &env{t: t, l: open(t), ctx: t.Context()})
		})
	}
}

func testHotList(t *testing.T, e *env) {
	card := e.card()
	if _, ok, err := e.l.CardBlock(e.ctx, "acme", card); err != nil || ok {
		t.Fatalf("unblocked card: ok=%v %v", ok, err)
	}
	b, err := e.l.BlockCard(e.ctx, ledger.CardBlock{Tenant: "acme", CardUID: strings.ToLower(card), Reason: "stolen", Actor: "key:1", At: base})
	if err != nil || b.CardUID != card || b.Reason != "stolen" || !b.At.Equal(base) {
		t.Fatalf("BlockCard = %+v, %v", b, err)
	}
	// Blocking again keeps the first time and takes the new reason.
	b, err = e.l.BlockCard(e.ctx, ledger.CardBlock{Tenant: "acme", CardUID: card, Reason: "fraud", Actor: "key:2", At: base.Add(time.Hour)})
	if err != nil || b.Reason != "fraud" || b.Actor != "key:2" || !b.At.Equal(base) {
		t.Fatalf("BlockCard again = %+v, %v", b, err)
	}
	if got, ok, err := e.l.CardBlock(e.ctx, "acme", card); err != nil || !ok || got != b {
		t.Fatalf("CardBlock = %+v %v %v, want %+v", got, ok, err, b)
	}
	// Another tenant's hot list is its own.
	if _, ok, err := e.l.CardBlock(e.ctx, "globex", card); err != nil || ok {
		t.Fatalf("other tenant sees the block: ok=%v %v", ok, err)
	}
	removed, err := e.l.UnblockCard(e.ctx, ledger.CardUnblock{Tenant: "acme", CardUID: card, Actor: "key:1", Now: base.Add(2 * time.Hour)})
	if err != nil || !removed {
		t.Fatalf("UnblockCard = %v, %v", removed, err)
	}
	if removed, err := e.l.UnblockCard(e.ctx, ledger.CardUnblock{Tenant: "acme", CardUID: card, Actor: "key:1", Now: base}); err != nil || removed {
		t.Fatalf("second UnblockCard = %v, %v", removed, err)
	}
	if _, ok, err := e.l.CardBlock(e.ctx, "acme", card); err != nil || ok {
		t.Fatalf("after unblock: ok=%v %v", ok, err)
	}
	t.Run("refused", func(t *testing.T) {
		for _, b := range []ledger.CardBlock{
			{Tenant: "acme", CardUID: "zz", Reason: "r", Actor: "a", At: base},
			{Tenant: "acme", CardUID: "0102", Reason: "r", Actor: "a", At: base},
			{Tenant: "acme", CardUID: card, Reason: " ", Actor: "a", At: base},
			{Tenant: "acme", CardUID: card, Reason: "a\nb", Actor: "a", At: base},
			{Tenant: "acme", CardUID: card, Reason: strings.Repeat("r", ledger.MaxReasonLen+1), Actor: "a", At: base},
			{Tenant: "acme", CardUID: card, Reason: "r", At: base},
			{Tenant: "", CardUID: card, Reason: "r", Actor: "a", At: base},
			{Tenant: "acme", CardUID: card, Reason: "r", Actor: "a"},
		} {
			if _, err := e.l.BlockCard(e.ctx, b); !errors.Is(err, ledger.ErrInvalid) {
				t.Errorf("BlockCard(%+v) = %v, want ErrInvalid", b, err)
			}
		}
		if _, ok, err := e.l.CardBlock(e.ctx, "acme", card); err != nil || ok {
			t.Fatalf("a refused block was stored: ok=%v %v", ok, err)
		}
		if _, err := e.l.UnblockCard(e.ctx, ledger.CardUnblock{Tenant: "acme", CardUID: "xyz", Actor: "a", Now: base}); !errors.Is(err, ledger.ErrInvalid) {
			t.Errorf("UnblockCard of a malformed UID = %v", err)
		}
		if _, _, err := e.l.CardBlock(e.ctx, "acme", "xyz"); !errors.Is(err, ledger.ErrInvalid) {
			t.Errorf("CardBlock of a malformed UID = %v", err)
		}
	})
}

func testCancel(t *testing.T, e *env) {
	for _, from := range []ledger.Status{ledger.StatusPending, ledger.StatusFailed} {
		t.Run("from "+from.String(), func(t *testing.T) {
			tu, _, _ := e.reach(from)
			sess := e.session(tu.ID)
			tok := tokenHash(fmt.Sprintf("cancel-%s", tu.ID))
			if err := e.l.IssueToken(e.ctx, sess.ID, tok, base.Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			out, err := e.l.CancelTopUp(e.ctx, ledger.Cancellation{TopUpID: tu.ID, From: from, Actor: "key:1", Reason: "customer asked", At: base.Add(time.Minute)})
			if err != nil || out.Status != ledger.StatusCancelled || !out.UpdatedAt.Equal(base.Add(time.Minute)) {
				t.Fatalf("CancelTopUp = %s, %v", out.Status, err)
			}
			c, err := e.l.Cancellation(e.ctx, tu.ID)
			if err != nil || c.From != from || c.Actor != "key:1" || c.Reason != "customer asked" {
				t.Fatalf("Cancellation = %+v, %v", c, err)
			}
			// Its bridge token is refused, its open session ended.
			if _, err := e.l.ConsumeToken(e.ctx, tok, base.Add(2*time.Minute)); !errors.Is(err, ledger.ErrTokenUsed) {
				t.Fatalf("token of a cancelled top-up: %v, want ErrTokenUsed", err)
			}
			s, err := e.l.GetSession(e.ctx, sess.ID)
			if err != nil || s.Status != ledger.SessionFailed || s.Outcome.ErrorCode != ledger.CodeTopUpCancelled {
				t.Fatalf("session of a cancelled top-up: %s %q %v", s.Status, s.Outcome.ErrorCode, err)
			}
			// Final: nothing starts it again.
			if _, err := e.l.Transition(e.ctx, ledger.Transition{TopUpID: tu.ID, From: ledger.StatusCancelled, To: ledger.StatusInProgress,
				Fence: e.newFence(), SessionID: sess.ID, CardUID: e.card(), Now: base.Add(time.Hour)}); !errors.Is(err, ledger.ErrInvalidTransition) {
				t.Fatalf("start a cancelled top-up: %v", err)
			}
		})
	}
	for _, st := range []ledger.Status{ledger.StatusInProgress, ledger.StatusInDoubt, ledger.StatusApplied, ledger.StatusExpired, ledger.StatusCancelled} {
		t.Run("refused from "+st.String(), func(t *testing.T) {
			tu, _, _ := e.reach(st)
			_, err := e.l.CancelTopUp(e.ctx, ledger.Cancellation{TopUpID: tu.ID, From: st, Actor: "key:1", At: base.Add(time.Minute)})
			if !errors.Is(err, ledger.ErrInvalidTransition) {
				t.Fatalf("cancel from %s: %v, want ErrInvalidTransition", st, err)
			}
			// A stale From (the operator saw pending, a session took it).
			_, err = e.l.CancelTopUp(e.ctx, ledger.Cancellation{TopUpID: tu.ID, From: ledger.StatusPending, Actor: "key:1", At: base.Add(time.Minute)})
			if st != ledger.StatusCancelled && !errors.Is(err, ledger.ErrConflict) {
				t.Fatalf("cancel a %s top-up seen as pending: %v, want ErrConflict", st, err)
			}
			if err := same(tu, e.get(tu.ID)); err != nil {
				t.Fatalf("refused cancel changed the top-up: %v", err)
			}
		})
	}
	t.Run("invalid", func(t *testing.T) {
		tu, _, _ := e.reach(ledger.StatusPending)
		for _, c := range []ledger.Cancellation{
			{From: ledger.StatusPending, Actor: "a", At: base},
			{TopUpID: tu.ID, From: ledger.StatusPending, At: base},
			{TopUpID: tu.ID, From: ledger.StatusPending, Actor: "a"},
			{TopUpID: tu.ID, From: ledger.StatusPending, Actor: "a", Reason: "x\x00", At: base},
		} {
			if _, err := e.l.CancelTopUp(e.ctx, c); !errors.Is(err, ledger.ErrInvalid) {
				t.Errorf("CancelTopUp(%+v) = %v, want ErrInvalid", c, err)
			}
		}
		if _, err := e.l.CancelTopUp(e.ctx, ledger.Cancellation{TopUpID: uuid.New(), From: ledger.StatusPending, Actor: "a", At: base}); !errors.Is(err, ledger.ErrNotFound) {
			t.Errorf("cancel an unknown top-up: %v", err)
		}
		if _, err := e.l.Cancellation(e.ctx, tu.ID); !errors.Is(err, ledger.ErrNotFound) {
			t.Errorf("cancellation of a pending top-up: %v", err)
		}
		if got := e.get(tu.ID); got.Status != ledger.StatusPending {
			t.Fatalf("refused cancellations moved the top-up to %s", got.Status)
		}
	})
}

// testCancelRace starts a session and cancels the same pending top-up at
// the same moment, many times: exactly one of the two wins each time.
func testCancelRace(t *testing.T, e *env) {
	cancelled, started := 0, 0
	for range 20 {
		tu, card, sess := e.reach(ledger.StatusPending)
		fence := e.newFence()
		wins, errs := race(2, func(i int) error {
			if i == 0 {
				_, err := e.l.CancelTopUp(e.ctx, ledger.Cancellation{TopUpID: tu.ID, From: ledger.StatusPending, Actor: "key:1", At: base.Add(time.Second)})
				return err
			}
			_, err := e.l.Transition(e.ctx, ledger.Transition{TopUpID: tu.ID, From: ledger.StatusPending, To: ledger.StatusInProgress,
				Fence: fence, SessionID: sess, CardUID: card, Now: base.Add(time.Second)})
			return err
		})
		if wins != 1 || len(errs) != 1 || !errors.Is(errs[0], ledger.ErrConflict) {
			t.Fatalf("cancel vs start: %d winners, errors %v", wins, errs)
		}
		switch got := e.get(tu.ID); got.Status {
		case ledger.StatusCancelled:
			cancelled++
			if n := len(e.attempts(tu.ID)); n != 0 {
				t.Fatalf("cancelled top-up has %d attempts", n)
			}
		case ledger.StatusInProgress:
			started++
		default:
			t.Fatalf("after the race: %s", got.Status)
		}
	}
	t.Logf("cancel vs session start, 20 races: %d cancelled, %d started", cancelled, started)
}

// createAt creates a top-up at a given time.
func (e *env) createAt(req ledger.Request, at time.Time) ledger.TopUp {
	e.t.Helper()
	tu, created, err := e.l.CreateTopUp(e.ctx, req, e.key(), at)
	if err != nil || !created {
		e.t.Fatalf("CreateTopUp = %v, %v", created, err)
	}
	return tu
}

func testListFilters(t *testing.T, e *env) {
	card := e.card()
	var ts []ledger.TopUp
	for i := range 6 {
		ref := "order-a"
		if i%2 == 1 {
			ref = "order-b"
		}
		ts = append(ts, e.createAt(ledger.Request{Amount: 100 + int64(i), Currency: "EUR", CardUID: card, Reference: ref, Tenant: "acme"}, base.Add(time.Duration(i)*time.Minute)))
	}
	e.createAt(ledger.Request{Amount: 100, Currency: "EUR", Reference: "order-a", Tenant: "globex"}, base)
	ids := func(f ledger.Filter) []uuid.UUID {
		t.Helper()
		got, err := e.l.ListTopUps(e.ctx, f)
		if err != nil {
			t.Fatalf("ListTopUps(%+v): %v", f, err)
		}
		var out []uuid.UUID
		for _, tu := range got {
			out = append(out, tu.ID)
		}
		return out
	}
	want := func(name string, got []uuid.UUID, idx ...int) {
		t.Helper()
		if len(got) != len(idx) {
			t.Fatalf("%s: %d top-ups, want %d", name, len(got), len(idx))
		}
		for i, j := range idx {
			if got[i] != ts[j].ID {
				t.Fatalf("%s: position %d is not top-up %d", name, i, j)
			}
		}
	}
	want("created range", ids(ledger.Filter{Tenant: "acme", CreatedFrom: base.Add(time.Minute), CreatedBefore: base.Add(4 * time.Minute)}), 1, 2, 3)
	want("reference", ids(ledger.Filter{Tenant: "acme", Reference: "order-b"}), 1, 3, 5)
	want("updated from", ids(ledger.Filter{Tenant: "acme", UpdatedFrom: base.Add(5 * time.Minute)}), 5)
	want("other tenant's reference", ids(ledger.Filter{Tenant: "globex", Reference: "order-b"}))
	// A card's history, newest first, in pages of two.
	var pages []uuid.UUID
	f := ledger.Filter{Tenant: "acme", CardUID: card, NewestFirst: true, Limit: 2}
	for range 5 {
		page, err := e.l.ListTopUps(e.ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		for _, tu := range page {
			pages = append(pages, tu.ID)
		}
		if len(page) < f.Limit {
			break
		}
		f.AfterUpdated, f.AfterID = page[len(page)-1].CreatedAt, page[len(page)-1].ID
	}
	want("card history pages", pages, 5, 4, 3, 2, 1, 0)
	for _, f := range []ledger.Filter{
		{CreatedFrom: base.Add(time.Hour), CreatedBefore: base},
		{UpdatedFrom: base, UpdatedBefore: base},
		{Reference: strings.Repeat("r", ledger.MaxReferenceLen+1)},
		{Reference: "bad\x01"},
	} {
		if _, err := e.l.ListTopUps(e.ctx, f); !errors.Is(err, ledger.ErrInvalid) {
			t.Errorf("ListTopUps(%+v) = %v, want ErrInvalid", f, err)
		}
	}
}

func testExport(t *testing.T, e *env) {
	var ts []ledger.TopUp
	for i := range 5 {
		ts = append(ts, e.createAt(ledger.Request{Amount: 100 + int64(i), Currency: "EUR", Tenant: "acme"}, base.Add(time.Duration(i)*time.Hour)))
	}
	e.createAt(ledger.Request{Amount: 100, Currency: "EUR", Tenant: "globex"}, base.Add(time.Hour))
	var got []ledger.TopUp
	err := e.l.ExportTopUps(e.ctx, ledger.ExportFilter{Tenant: "acme", From: base.Add(time.Hour), To: base.Add(4 * time.Hour)}, func(tu ledger.TopUp) error {
		got = append(got, tu)
		return nil
	})
	if err != nil || len(got) != 3 {
		t.Fatalf("export: %d top-ups, %v; want 3", len(got), err)
	}
	for i, tu := range got {
		if tu.ID != ts[i+1].ID || tu.Amount != ts[i+1].Amount || tu.Tenant != "acme" {
			t.Fatalf("export row %d: %s %d %s", i, tu.ID, tu.Amount, tu.Tenant)
		}
	}
	t.Run("pages", func(t *testing.T) {
		// More than one read page, all at one instant: the (created_at,
		// id) order neither skips nor repeats a row.
		const n = 503
		at := base.Add(48 * time.Hour)
		want := map[uuid.UUID]bool{}
		for range n {
			want[e.createAt(ledger.Request{Amount: 1, Currency: "EUR", Tenant: "pages"}, at).ID] = true
		}
		seen := map[uuid.UUID]bool{}
		err := e.l.ExportTopUps(e.ctx, ledger.ExportFilter{Tenant: "pages", From: at, To: at.Add(time.Microsecond)}, func(tu ledger.TopUp) error {
			if seen[tu.ID] || !want[tu.ID] {
				return fmt.Errorf("row %s repeated or foreign", tu.ID)
			}
			seen[tu.ID] = true
			return nil
		})
		if err != nil || len(seen) != n {
			t.Fatalf("export of %d rows at one instant: %d seen, %v", n, len(seen), err)
		}
	})
	stop := errors.New("stop")
	n := 0
	err = e.l.ExportTopUps(e.ctx, ledger.ExportFilter{Tenant: "acme", From: base, To: base.Add(24 * time.Hour)}, func(ledger.TopUp) error {
		n++
		return stop
	})
	if !errors.Is(err, stop) || n != 1 {
		t.Fatalf("an error from fn: %v after %d rows", err, n)
	}
	for _, f := range []ledger.ExportFilter{
		{Tenant: "acme", From: base},
		{Tenant: "acme", From: base, To: base},
		{Tenant: "acme", From: base, To: base.Add(ledger.MaxExportPeriod + time.Second)},
		{From: base, To: base.Add(time.Hour)},
	} {
		if err := e.l.ExportTopUps(e.ctx, f, func(ledger.TopUp) error { return nil }); !errors.Is(err, ledger.ErrInvalid) {
			t.Errorf("ExportTopUps(%+v) = %v, want ErrInvalid", f, err)
		}
	}
}

// RunCancelOutbox checks, on a ledger with the outbox on, that a
// cancellation records its topup.cancelled event in the same transaction
// and a refused one records nothing.
func RunCancelOutbox(t *testing.T, open Opener) {
	e := &env{t: t, l: open(t), ctx: t.Context()}
	ob, ok := e.l.(ledger.Outbox)
	if !ok {
		t.Fatal("the ledger has no outbox")
	}
	tu, _, _ := e.reach(ledger.StatusPending)
	if _, err := e.l.CancelTopUp(e.ctx, ledger.Cancellation{TopUpID: tu.ID, From: ledger.StatusPending, Actor: "key:1", At: base.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.l.CancelTopUp(e.ctx, ledger.Cancellation{TopUpID: tu.ID, From: ledger.StatusPending, Actor: "key:1", At: base.Add(time.Minute)}); !errors.Is(err, ledger.ErrConflict) {
		t.Fatalf("second cancel: %v", err)
	}
	events, _, err := ob.ListEvents(e.ctx, tu.Tenant, tu.ID)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, ev := range events {
		types = append(types, ev.Type)
	}
	if len(events) != 1 || events[0].Type != ledger.EventCancelled || events[0].Status != "cancelled" {
		t.Fatalf("events of a cancelled top-up: %v", types)
	}
}
