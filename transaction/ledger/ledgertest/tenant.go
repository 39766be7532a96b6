package ledgertest

import (
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/desfire-relay/relay/transaction/ledger"
)

// testTenants: an idempotency key is unique per tenant, a top-up and its
// sessions carry their tenant, a session for another tenant's top-up is
// refused as not found, and listing filters by tenant.
func testTenants(t *testing.T, e *env) {
	req := ledger.Request{Amount: 700, Currency: "EUR", Reference: "same key"}
	def, created, err := e.l.CreateTopUp(e.ctx, req, "shared-key", base)
	if err != nil || !created || def.Tenant != ledger.DefaultTenant || def.IdempotencyKey != "shared-key" {
		t.Fatalf("default tenant create: %+v created=%v err=%v", def, created, err)
	}
	a := req
	a.Tenant = "acme"
	ta, created, err := e.l.CreateTopUp(e.ctx, a, "shared-key", base)
	if err != nil || !created || ta.ID == def.ID || ta.Tenant != "acme" || ta.IdempotencyKey != "shared-key" {
		t.Fatalf("acme with the same key: %+v created=%v err=%v", ta, created, err)
	}
	t.Run("replay stays in its tenant", func(t *testing.T) {
		again, created, err := e.l.CreateTopUp(e.ctx, a, "shared-key", base.Add(time.Second))
		if err != nil || created || again.ID != ta.ID {
			t.Fatalf("replay: id %s created=%v err=%v, want %s", again.ID, created, err, ta.ID)
		}
	})
	t.Run("conflict stays in its tenant", func(t *testing.T) {
		b := a
		b.Tenant, b.Amount = "globex", 50000
		tb, created, err := e.l.CreateTopUp(e.ctx, b, "shared-key", base)
		if err != nil || !created || tb.Tenant != "globex" {
			t.Fatalf("globex with the same key and another body: created=%v err=%v", created, err)
		}
	})
	t.Run("bad tenant", func(t *testing.T) {
		b := req
		b.Tenant = "Acme Corp"
		if _, _, err := e.l.CreateTopUp(e.ctx, b, e.key(), base); !errors.Is(err, ledger.ErrInvalid) {
			t.Fatalf("err = %v, want ErrInvalid", err)
		}
	})
	t.Run("sessions", func(t *testing.T) {
		s, err := e.l.CreateTenantSession(e.ctx, "acme", ledger.KindTopUp, ta.ID, base)
		if err != nil || s.Tenant != "acme" {
			t.Fatalf("acme session: %+v, %v", s, err)
		}
		got, err := e.l.GetSession(e.ctx, s.ID)
		if err != nil || got.Tenant != "acme" {
			t.Fatalf("GetSession: %+v, %v", got, err)
		}
		if _, err := e.l.CreateTenantSession(e.ctx, "globex", ledger.KindTopUp, ta.ID, base); !errors.Is(err, ledger.ErrNotFound) {
			t.Fatalf("globex session on acme's top-up: err = %v, want ErrNotFound", err)
		}
		if _, err := e.l.CreateSession(e.ctx, ledger.KindTopUp, ta.ID, base); !errors.Is(err, ledger.ErrNotFound) {
			t.Fatalf("default session on acme's top-up: err = %v, want ErrNotFound", err)
		}
		bs, err := e.l.CreateTenantSession(e.ctx, "globex", ledger.KindBalance, uuid.Nil, base)
		if err != nil || bs.Tenant != "globex" {
			t.Fatalf("balance session: %+v, %v", bs, err)
		}
	})
	t.Run("list", func(t *testing.T) {
		got, err := e.l.ListTopUps(e.ctx, ledger.Filter{Tenant: "acme"})
		if err != nil || len(got) != 1 || got[0].ID != ta.ID {
			t.Fatalf("acme's list = %d rows, %v; want only %s", len(got), err, ta.ID)
		}
	})
}

// testRevokeTokens: a new token for a top-up retires the unused tokens of
// its other open sessions; a used token's session is left alone.
func testRevokeTokens(t *testing.T, e *env) {
	tu := e.create(ledger.Request{Amount: 300, Currency: "EUR"})
	var issued time.Duration
	mk := func(name string) ledger.Session {
		issued += time.Microsecond // tickets in the order they are issued
		s, err := e.l.CreateSession(e.ctx, ledger.KindTopUp, tu.ID, base.Add(issued))
		if err != nil {
			t.Fatalf("CreateSession %s: %v", name, err)
		}
		if err := e.l.IssueToken(e.ctx, s.ID, tokenHash(name), base.Add(time.Hour)); err != nil {
			t.Fatalf("IssueToken %s: %v", name, err)
		}
		return s
	}
	used := mk("revoke-used")
	if _, err := e.l.ConsumeToken(e.ctx, tokenHash("revoke-used"), base); err != nil {
		t.Fatalf("consume: %v", err)
	}
	mk("revoke-old-1")
	mk("revoke-old-2")
	keep := mk("revoke-new")
	// A session issued after keep (a concurrent ticket) is not revoked by
	// keep's revocation; its own revocation would retire keep instead.
	later, err := e.l.CreateSession(e.ctx, ledger.KindTopUp, tu.ID, base.Add(time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.l.IssueToken(e.ctx, later.ID, tokenHash("revoke-later"), base.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	n, err := e.l.RevokeTokens(e.ctx, tu.ID, keep.ID, base.Add(time.Second))
	if err != nil || n != 2 {
		t.Fatalf("RevokeTokens = %d, %v; want 2", n, err)
	}
	if s, err := e.l.GetSession(e.ctx, later.ID); err != nil || s.Status != ledger.SessionOpen {
		t.Fatalf("a later ticket was revoked by an earlier one: %+v, %v", s, err)
	}
	for _, name := range []string{"revoke-old-1", "revoke-old-2"} {
		if _, err := e.l.ConsumeToken(e.ctx, tokenHash(name), base.Add(2*time.Second)); !errors.Is(err, ledger.ErrTokenUsed) {
			t.Errorf("%s after revocation: err = %v, want ErrTokenUsed", name, err)
		}
	}
	if s, err := e.l.GetSession(e.ctx, used.ID); err != nil || s.Status != ledger.SessionOpen {
		t.Errorf("the running session was ended: %+v, %v", s, err)
	}
	s, err := e.l.ConsumeToken(e.ctx, tokenHash("revoke-new"), base.Add(2*time.Second))
	if err != nil || s.ID != keep.ID {
		t.Fatalf("newest token: %+v, %v", s, err)
	}
	if n, err := e.l.RevokeTokens(e.ctx, tu.ID, keep.ID, base.Add(3*time.Second)); err != nil || n != 0 {
		t.Errorf("second RevokeTokens = %d, %v; want 0", n, err)
	}
	if n, err := e.l.RevokeTokens(e.ctx, tu.ID, later.ID, base.Add(3*time.Second)); err != nil || n != 0 {
		t.Errorf("later's RevokeTokens = %d, %v; want 0 (keep's token is in use)", n, err)
	}
}
