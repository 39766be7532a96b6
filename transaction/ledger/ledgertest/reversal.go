package ledgertest

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/desfire-relay/relay/transaction/ledger"
)

// testReversal: a reversal is a pending entry of the credit's amount,
// currency and card, kind reversal, naming the credit; asking again
// returns it; only an applied credit of the same tenant qualifies.
func testReversal(t *testing.T, e *env) {
	orig, _ := e.applied(640)
	at := base.Add(time.Hour)
	rv, created, err := e.l.CreateReversal(e.ctx, ledger.DefaultTenant, orig.ID, at)
	if err != nil || !created {
		t.Fatalf("CreateReversal = %v, %v", created, err)
	}
	if rv.Kind != ledger.TopUpReversal || rv.Reverses != orig.ID || rv.Amount != orig.Amount || rv.Currency != orig.Currency ||
		rv.CardUID != orig.CardUID || rv.Status != ledger.StatusPending || rv.ID == orig.ID || !rv.ExpiresAt.After(at) {
		t.Fatalf("reversal %+v of %+v", rv, orig)
	}
	if got, _ := e.l.GetTopUp(e.ctx, orig.ID); got.Kind != ledger.TopUpCredit || got.Status != ledger.StatusApplied {
		t.Fatalf("credit after reversal: %+v", got)
	}
	again, created, err := e.l.CreateReversal(e.ctx, ledger.DefaultTenant, orig.ID, at)
	if err != nil || created || again.ID != rv.ID {
		t.Fatalf("second CreateReversal = %s created=%v, %v; want %s", again.ID, created, err, rv.ID)
	}
	if _, _, err := e.l.CreateReversal(e.ctx, "globex", orig.ID, at); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("another tenant: %v", err)
	}
	if _, _, err := e.l.CreateReversal(e.ctx, ledger.DefaultTenant, rv.ID, at); !errors.Is(err, ledger.ErrNotReversible) {
		t.Fatalf("reversal of a reversal: %v", err)
	}
	pending := e.create(ledger.Request{Amount: 5, Currency: "EUR", CardUID: e.card()})
	if _, _, err := e.l.CreateReversal(e.ctx, ledger.DefaultTenant, pending.ID, at); !errors.Is(err, ledger.ErrNotReversible) {
		t.Fatalf("reversal of a pending top-up: %v", err)
	}
	// The reversal runs through the same state machine.
	s := e.session(rv.ID)
	for _, to := range []ledger.Status{ledger.StatusInProgress, ledger.StatusInDoubt, ledger.StatusApplied} {
		rv = e.step(rv, s.ID, rv.CardUID, to)
	}
	if rv.Status != ledger.StatusApplied || rv.Kind != ledger.TopUpReversal {
		t.Fatalf("applied reversal %+v", rv)
	}
	hist, err := e.l.ListTopUpsByCard(e.ctx, orig.CardUID)
	if err != nil || len(hist) != 2 {
		t.Fatalf("card history %d entries, %v", len(hist), err)
	}
}

// testReversalConcurrent: of concurrent requests for one credit's
// reversal, one creates it and all get the same entry.
func testReversalConcurrent(t *testing.T, e *env) {
	orig, _ := e.applied(10)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		ids     = map[string]int{}
		created int
	)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rv, c, err := e.l.CreateReversal(e.ctx, ledger.DefaultTenant, orig.ID, base.Add(time.Hour))
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			ids[rv.ID.String()]++
			if c {
				created++
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if len(ids) != 1 || created != 1 {
		t.Fatalf("%d reversals, %d created", len(ids), created)
	}
}
