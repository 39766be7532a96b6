package transaction_test

import (
	"context"
	"testing"
	"time"

	"github.com/desfire-relay/relay/transaction"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/lock"
	"github.com/desfire-relay/relay/transaction/profile"
)

// TestReopenUsesConfiguredTTL: a failed top-up reopened with a new token
// is payable for the configured TopUpTTL, not a built-in default.
func TestReopenUsesConfiguredTTL(t *testing.T) {
	ctx := context.Background()
	p := profile.AN12113()
	l := sqliteLedger(t)
	e := newEnv(t, p, l, lock.NewMemory())
	now := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	svc, err := transaction.New(transaction.Config{Ledger: l, Locker: lock.NewMemory(), Keys: failingKeys{e.kp}, Profile: p.Name,
		LockTTL: time.Second, TopUpTTL: 3 * time.Hour, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	e.svc = svc
	tu, tk, _, err := svc.CreateTopUp(ctx, "reopen-ttl", ledger.Request{Amount: 10, Currency: "EUR"})
	if err != nil {
		t.Fatal(err)
	}
	e.run(t, e.open(t, tk), true)
	if got, _ := l.GetTopUp(ctx, tu.ID); got.Status != ledger.StatusFailed {
		t.Fatalf("status %s, want failed", got.Status)
	}
	if _, err := svc.TopUpTicket(ctx, tu.ID); err != nil {
		t.Fatal(err)
	}
	got, _ := l.GetTopUp(ctx, tu.ID)
	if got.Status != ledger.StatusPending || !got.ExpiresAt.Equal(now.Add(3*time.Hour)) {
		t.Fatalf("reopened: %s, expires %s, want pending until %s", got.Status, got.ExpiresAt, now.Add(3*time.Hour))
	}
}
