package ledgertest

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/desfire-relay/relay/transaction/ledger"
)

// RunProvision runs the provisioning ledger suite against ledgers made by
// open, which must implement ledger.ProvisionLedger.
func RunProvision(t *testing.T, open func(testing.TB) ledger.Ledger) {
	ctx := context.Background()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	get := func(t *testing.T) ledger.ProvisionLedger {
		l := open(t)
		pl, ok := l.(ledger.ProvisionLedger)
		if !ok {
			t.Fatalf("%T is not a ProvisionLedger", l)
		}
		return pl
	}
	t.Run("write ahead", func(t *testing.T) {
		pl := get(t)
		r, err := pl.BeginProvision(ctx, "04AABBCCDDEEFF", ledger.ProvisionNTAG424, 5, 1, now)
		if err != nil || r.Step != ledger.StepStarted || len(r.Keys) != 5 || r.Keys[3].Version != 0 || r.Keys[3].Pending != nil {
			t.Fatalf("begin: %+v %v", r, err)
		}
		if err := pl.IntendKey(ctx, r.UID, 3, 0, 1, 1, now); err != nil {
			t.Fatal(err)
		}
		if err := pl.IntendKey(ctx, r.UID, 3, 0, 1, 1, now); err != nil {
			t.Fatalf("same intent again: %v", err)
		}
		if err := pl.IntendKey(ctx, r.UID, 3, 0, 2, 1, now); !errors.Is(err, ledger.ErrKeyState) {
			t.Fatalf("other intent while pending: %v", err)
		}
		if err := pl.ConfirmKey(ctx, r.UID, 3, 7, "mac", 1, now); !errors.Is(err, ledger.ErrKeyState) {
			t.Fatalf("unknown version confirmed: %v", err)
		}
		r, _ = pl.GetProvision(ctx, r.UID)
		if r.Keys[3].Pending == nil || *r.Keys[3].Pending != 1 {
			t.Fatalf("pending not recorded: %+v", r.Keys[3])
		}
		if err := pl.ConfirmKey(ctx, r.UID, 3, 1, "mac", 1, now); err != nil {
			t.Fatal(err)
		}
		r, _ = pl.GetProvision(ctx, r.UID)
		if r.Keys[3].Pending != nil || r.Keys[3].Version != 1 || r.Keys[3].Evidence != "mac" {
			t.Fatalf("confirm: %+v", r.Keys[3])
		}
		// A torn change proven not to have happened: confirm the old one.
		if err := pl.IntendKey(ctx, r.UID, 0, 0, 1, 1, now); err != nil {
			t.Fatal(err)
		}
		if err := pl.ConfirmKey(ctx, r.UID, 0, 0, "auth", 1, now); err != nil {
			t.Fatal(err)
		}
		h, err := pl.ProvisionHistory(ctx, r.UID)
		if err != nil || len(h) != 6 || h[0].What != "begin" || h[5].Seq != 6 {
			t.Fatalf("history %+v %v", h, err)
		}
	})
	t.Run("steps and fences", func(t *testing.T) {
		pl := get(t)
		uid := "04010203040506"
		if _, err := pl.BeginProvision(ctx, uid, ledger.ProvisionNTAG424, 5, 5, now); err != nil {
			t.Fatal(err)
		}
		if _, err := pl.BeginProvision(ctx, uid, ledger.ProvisionNTAG424, 5, 4, now); !errors.Is(err, ledger.ErrStaleFence) {
			t.Fatalf("stale begin: %v", err)
		}
		if _, err := pl.BeginProvision(ctx, uid, ledger.ProvisionDESFire, 5, 6, now); !errors.Is(err, ledger.ErrInvalid) {
			t.Fatalf("other kind: %v", err)
		}
		if err := pl.AdvanceProvision(ctx, uid, ledger.StepStarted, ledger.StepFiles, 6, now); !errors.Is(err, ledger.ErrInvalidTransition) {
			t.Fatalf("skip: %v", err)
		}
		if err := pl.AdvanceProvision(ctx, uid, ledger.StepStarted, ledger.StepKeys, 6, now); err != nil {
			t.Fatal(err)
		}
		if err := pl.AdvanceProvision(ctx, uid, ledger.StepStarted, ledger.StepKeys, 6, now); !errors.Is(err, ledger.ErrConflict) {
			t.Fatalf("replay: %v", err)
		}
		if err := pl.IntendKey(ctx, uid, 1, 0, 1, 5, now); !errors.Is(err, ledger.ErrStaleFence) {
			t.Fatalf("stale intent: %v", err)
		}
		if _, err := pl.GetProvision(ctx, "04FFFFFFFFFFFF"); !errors.Is(err, ledger.ErrNotFound) {
			t.Fatalf("missing: %v", err)
		}
		if _, err := pl.BeginProvision(ctx, "", ledger.ProvisionNTAG424, 5, 1, now); !errors.Is(err, ledger.ErrInvalid) {
			t.Fatalf("empty uid: %v", err)
		}
	})
	t.Run("sessions", func(t *testing.T) {
		l := open(t)
		ps, ok := l.(ledger.ProvisionSessions)
		if !ok {
			t.Fatalf("%T is not ProvisionSessions", l)
		}
		hash := bytes.Repeat([]byte{7}, 32)
		s, err := ps.CreateProvisionSession(ctx, "acme", "provision_ntag424", []byte(`{"lock":true}`), hash, now.Add(time.Minute), now)
		if err != nil || s.Status != "open" || string(s.Params) != `{"lock":true}` || s.Tenant != "acme" {
			t.Fatalf("create: %+v %v", s, err)
		}
		if _, err := ps.ConsumeProvisionToken(ctx, bytes.Repeat([]byte{8}, 32), now); !errors.Is(err, ledger.ErrTokenUnknown) {
			t.Fatalf("unknown token: %v", err)
		}
		if _, err := ps.ConsumeProvisionToken(ctx, hash, now.Add(2*time.Minute)); !errors.Is(err, ledger.ErrTokenExpired) {
			t.Fatalf("expired token: %v", err)
		}
		got, err := ps.ConsumeProvisionToken(ctx, hash, now)
		if err != nil || got.ID != s.ID {
			t.Fatalf("consume: %+v %v", got, err)
		}
		if _, err := ps.ConsumeProvisionToken(ctx, hash, now); !errors.Is(err, ledger.ErrTokenUsed) {
			t.Fatalf("used token: %v", err)
		}
		if err := ps.FinishProvisionSession(ctx, s.ID, true, "04AA", "", []byte(`{"ok":true}`), now); err != nil {
			t.Fatal(err)
		}
		if err := ps.FinishProvisionSession(ctx, s.ID, false, "04AA", "x", nil, now); !errors.Is(err, ledger.ErrSessionClosed) {
			t.Fatalf("finish twice: %v", err)
		}
		got, err = ps.GetProvisionSession(ctx, s.ID)
		if err != nil || got.Status != "ok" || got.CardUID != "04AA" || string(got.Result) != `{"ok":true}` || got.EndedAt == nil {
			t.Fatalf("get: %+v %v", got, err)
		}
		if _, err := ps.CreateProvisionSession(ctx, "Bad Tenant", "issue", nil, bytes.Repeat([]byte{9}, 32), now.Add(time.Minute), now); !errors.Is(err, ledger.ErrInvalid) {
			t.Fatalf("bad tenant: %v", err)
		}
	})
	t.Run("list per tenant", func(t *testing.T) {
		l := open(t)
		ps := l.(ledger.ProvisionSessions)
		var acme []uuid.UUID
		for i := 0; i < 5; i++ {
			tenant := "acme"
			if i%2 == 1 {
				tenant = "globex"
			}
			s, err := ps.CreateProvisionSession(ctx, tenant, "provision_ntag424", []byte(`{}`), bytes.Repeat([]byte{byte(20 + i)}, 32), now.Add(time.Hour), now.Add(time.Duration(i)*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			if tenant == "acme" {
				acme = append(acme, s.ID)
			}
		}
		if err := ps.FinishProvisionSession(ctx, acme[0], false, "04AB", "card_error", nil, now); err != nil {
			t.Fatal(err)
		}
		got, err := ps.ListProvisionSessions(ctx, "acme", ledger.ProvisionSessionFilter{})
		if err != nil || len(got) != 3 || got[0].ID != acme[2] || got[2].ID != acme[0] {
			t.Fatalf("acme, newest first: %d %v", len(got), err)
		}
		for _, s := range got {
			if s.Tenant != "acme" {
				t.Fatalf("other tenant's session listed: %+v", s)
			}
		}
		if got, err = ps.ListProvisionSessions(ctx, "acme", ledger.ProvisionSessionFilter{Status: "failed"}); err != nil || len(got) != 1 || got[0].ID != acme[0] {
			t.Fatalf("failed only: %v %v", got, err)
		}
		if got, err = ps.ListProvisionSessions(ctx, "acme", ledger.ProvisionSessionFilter{Limit: 1, Before: now.Add(2 * time.Second)}); err != nil || len(got) != 1 || got[0].ID != acme[0] {
			t.Fatalf("page before: %v %v", got, err)
		}
		if got, err = ps.ListProvisionSessions(ctx, "initech", ledger.ProvisionSessionFilter{}); err != nil || len(got) != 0 {
			t.Fatalf("no sessions: %v %v", got, err)
		}
		if _, err := ps.ListProvisionSessions(ctx, "acme", ledger.ProvisionSessionFilter{Status: "weird"}); !errors.Is(err, ledger.ErrInvalid) {
			t.Fatalf("bad status: %v", err)
		}
	})
}
