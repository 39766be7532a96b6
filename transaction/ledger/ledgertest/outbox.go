package ledgertest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/desfire-relay/relay/transaction/ledger"
)

// RunOutbox runs the outbox behaviours against ledgers opened with
// ledger.Config.Outbox set (on) and unset (off).
func RunOutbox(t *testing.T, on, off Opener) {
	tests := []struct {
		name string
		fn   func(*testing.T, *env, ledger.Outbox)
	}{
		{"EventsFollowChanges", testOutboxEvents},
		{"RolledBackChangeNoEvent", testOutboxRollback},
		{"FanOutClaimRetryDeliver", testOutboxDelivery},
		{"ExpireResolve", testOutboxExpireResolve},
		{"ConcurrentClaimers", testOutboxConcurrent},
		{"HotPath", testOutboxHotPath},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := on(t)
			o, ok := l.(ledger.Outbox)
			if !ok {
				t.Fatal("ledger does not implement ledger.Outbox")
			}
			tc.fn(t, &env{t: t, l: l, ctx: context.Background()}, o)
		})
	}
	t.Run("OffRecordsNothing", func(t *testing.T) {
		l := off(t)
		e := &env{t: t, l: l, ctx: context.Background()}
		tu, _ := e.applied(500)
		evs, _, err := l.(ledger.Outbox).ListEvents(e.ctx, ledger.DefaultTenant, tu.ID)
		if err != nil || len(evs) != 0 {
			t.Fatalf("outbox off: events %v, %v", evs, err)
		}
	})
}

// applied runs a new top-up of amount through a session to applied (a
// second between steps) and finishes the session.
func (e *env) applied(amount int64) (ledger.TopUp, ledger.Session) {
	e.t.Helper()
	tu := e.create(ledger.Request{Amount: amount, Currency: "EUR"})
	s := e.session(tu.ID)
	card := e.card()
	for i, to := range []ledger.Status{ledger.StatusInProgress, ledger.StatusInDoubt, ledger.StatusApplied} {
		out, err := e.l.Transition(e.ctx, ledger.Transition{TopUpID: tu.ID, From: tu.Status, To: to, Fence: e.newFence(),
			SessionID: s.ID, CardUID: card, Now: base.Add(time.Duration(i+1) * time.Second)})
		if err != nil {
			e.t.Fatalf("Transition %s → %s: %v", tu.Status, to, err)
		}
		tu = out
	}
	if _, err := e.l.FinishSession(e.ctx, s.ID, ledger.SessionOutcome{OK: true}, base.Add(5*time.Second)); err != nil {
		e.t.Fatalf("FinishSession: %v", err)
	}
	return tu, s
}

func eventTypes(evs []ledger.Event) string {
	s := ""
	for _, e := range evs {
		s += e.Type + "(" + e.Status + ") "
	}
	return s
}

// testOutboxEvents: exactly the changes an operator hears about are
// recorded, in order, with the session that caused them.
func testOutboxEvents(t *testing.T, e *env, o ledger.Outbox) {
	tu, s := e.applied(500)
	evs, _, err := o.ListEvents(e.ctx, ledger.DefaultTenant, tu.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := "topup.in_doubt(in_doubt) topup.applied(applied) session.finished(ok) "
	if got := eventTypes(evs); got != want {
		t.Fatalf("events %q, want %q", got, want)
	}
	for _, ev := range evs {
		if ev.SessionID != s.ID || ev.TopUpID != tu.ID || ev.Tenant != ledger.DefaultTenant {
			t.Fatalf("event %+v does not name session %s and top-up %s", ev, s.ID, tu.ID)
		}
	}
	if evs, _, err := o.ListEvents(e.ctx, "other", tu.ID); err != nil || len(evs) != 0 {
		t.Fatalf("another tenant sees %d events (%v)", len(evs), err)
	}
}

// testOutboxRollback: a refused change (another card) records no event.
func testOutboxRollback(t *testing.T, e *env, o ledger.Outbox) {
	tu := e.create(ledger.Request{Amount: 500, Currency: "EUR"})
	s := e.session(tu.ID)
	card := e.card()
	tu = e.step(tu, s.ID, card, ledger.StatusInProgress)
	_, err := e.l.Transition(e.ctx, ledger.Transition{TopUpID: tu.ID, From: tu.Status, To: ledger.StatusInDoubt,
		Fence: e.newFence(), SessionID: s.ID, CardUID: e.card(), Now: base.Add(time.Second)})
	if !errors.Is(err, ledger.ErrCardMismatch) {
		t.Fatalf("another card: %v", err)
	}
	if evs, _, err := o.ListEvents(e.ctx, ledger.DefaultTenant, tu.ID); err != nil || len(evs) != 0 {
		t.Fatalf("refused change left events %q (%v)", eventTypes(evs), err)
	}
}

func testOutboxDelivery(t *testing.T, e *env, o ledger.Outbox) {
	tu, _ := e.applied(500)
	subs := []ledger.Subscription{
		{Endpoint: "all", Tenant: ledger.DefaultTenant, Types: ledger.EventTypes},
		{Endpoint: "applied", Tenant: ledger.DefaultTenant, Types: []string{ledger.EventApplied}},
		{Endpoint: "other-tenant", Tenant: "other", Types: ledger.EventTypes},
	}
	now := base.Add(time.Minute)
	if n, err := o.Backlog(e.ctx); err != nil || n != 3 {
		t.Fatalf("backlog before fan-out = %d, %v; want 3 events", n, err)
	}
	n, err := o.FanOut(e.ctx, subs, 100, now)
	if err != nil || n != 4 {
		t.Fatalf("FanOut = %d, %v; want 4 deliveries (3 + 1)", n, err)
	}
	if n, err := o.FanOut(e.ctx, subs, 100, now); err != nil || n != 0 {
		t.Fatalf("second FanOut = %d, %v; want 0", n, err)
	}
	ds, err := o.ClaimDeliveries(e.ctx, 100, 30*time.Second, now)
	if err != nil || len(ds) != 4 {
		t.Fatalf("claim = %d, %v; want 4", len(ds), err)
	}
	if again, err := o.ClaimDeliveries(e.ctx, 100, 30*time.Second, now.Add(time.Second)); err != nil || len(again) != 0 {
		t.Fatalf("claimed again within the lease: %d, %v", len(again), err)
	}
	// One fails and is retried later; the others are acknowledged.
	var failed ledger.Delivery
	for i, d := range ds {
		if d.Event.TopUpID != tu.ID {
			t.Fatalf("delivery of another top-up: %+v", d)
		}
		if i == 0 {
			failed = d
			if err := o.Retry(e.ctx, d.Event.ID, d.Endpoint, "HTTP 500", now.Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := o.Delivered(e.ctx, d.Event.ID, d.Endpoint, now); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := o.Backlog(e.ctx); err != nil || n != 1 {
		t.Fatalf("backlog = %d, %v; want 1", n, err)
	}
	if ds, err := o.ClaimDeliveries(e.ctx, 100, 30*time.Second, now.Add(time.Minute)); err != nil || len(ds) != 0 {
		t.Fatalf("retry claimed before its time: %d, %v", len(ds), err)
	}
	ds, err = o.ClaimDeliveries(e.ctx, 100, 30*time.Second, now.Add(time.Hour))
	if err != nil || len(ds) != 1 || ds[0].Event.ID != failed.Event.ID || ds[0].Attempts != 1 || ds[0].LastError != "HTTP 500" {
		t.Fatalf("retry claim = %+v, %v", ds, err)
	}
	if err := o.Delivered(e.ctx, ds[0].Event.ID, ds[0].Endpoint, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	// Redelivery makes a delivered event due again, for its owner only.
	if _, err := o.Redeliver(e.ctx, "other", failed.Event.ID, now); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("redeliver by another tenant: %v", err)
	}
	if _, err := o.Redeliver(e.ctx, ledger.DefaultTenant, uuid.New(), now); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("redeliver unknown event: %v", err)
	}
	n, err = o.Redeliver(e.ctx, ledger.DefaultTenant, failed.Event.ID, now.Add(2*time.Hour))
	if err != nil || n < 1 {
		t.Fatalf("redeliver = %d, %v", n, err)
	}
	ds, err = o.ClaimDeliveries(e.ctx, 100, 30*time.Second, now.Add(2*time.Hour))
	if err != nil || len(ds) != n {
		t.Fatalf("after redelivery claimed %d, %v; want %d", len(ds), err, n)
	}
	_, dels, err := o.ListEvents(e.ctx, ledger.DefaultTenant, tu.ID)
	if err != nil || len(dels) != 4 {
		t.Fatalf("listed deliveries %d, %v", len(dels), err)
	}
}

func testOutboxExpireResolve(t *testing.T, e *env, o ledger.Outbox) {
	old := e.create(ledger.Request{Amount: 100, Currency: "EUR"})
	if n, err := e.l.ExpirePending(e.ctx, old.ExpiresAt.Add(time.Second)); err != nil || n < 1 {
		t.Fatalf("ExpirePending = %d, %v", n, err)
	}
	evs, _, err := o.ListEvents(e.ctx, ledger.DefaultTenant, old.ID)
	if err != nil || eventTypes(evs) != "topup.expired(expired) " {
		t.Fatalf("expired events %q, %v", eventTypes(evs), err)
	}
	tu := e.create(ledger.Request{Amount: 100, Currency: "EUR"})
	s := e.session(tu.ID)
	card := e.card()
	tu = e.step(tu, s.ID, card, ledger.StatusInProgress)
	tu = e.step(tu, s.ID, card, ledger.StatusInDoubt)
	if _, err := e.l.Resolve(e.ctx, ledger.Resolution{TopUpID: tu.ID, From: ledger.StatusInDoubt, Outcome: ledger.StatusFailed,
		Actor: "key-1", Reason: "card destroyed", Now: base.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	evs, _, err = o.ListEvents(e.ctx, ledger.DefaultTenant, tu.ID)
	if err != nil || eventTypes(evs) != "topup.in_doubt(in_doubt) topup.resolved(failed) " {
		t.Fatalf("resolved events %q, %v", eventTypes(evs), err)
	}
}

// testOutboxConcurrent: claimers running at once never get the same
// delivery.
func testOutboxConcurrent(t *testing.T, e *env, o ledger.Outbox) {
	for range 5 {
		e.applied(500)
	}
	subs := []ledger.Subscription{{Endpoint: "all", Tenant: ledger.DefaultTenant, Types: ledger.EventTypes}}
	now := base.Add(time.Minute)
	if n, err := o.FanOut(e.ctx, subs, 100, now); err != nil || n != 15 {
		t.Fatalf("FanOut = %d, %v", n, err)
	}
	var (
		mu   sync.Mutex
		seen = map[string]int{}
		wg   sync.WaitGroup
	)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				ds, err := o.ClaimDeliveries(e.ctx, 2, time.Minute, now)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				for _, d := range ds {
					seen[fmt.Sprint(d.Event.ID, d.Endpoint)]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(seen) != 15 {
		t.Fatalf("claimed %d distinct deliveries, want 15", len(seen))
	}
	for k, n := range seen {
		if n != 1 {
			t.Fatalf("delivery %s claimed %d times", k, n)
		}
	}
}
