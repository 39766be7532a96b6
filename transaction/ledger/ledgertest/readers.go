package ledgertest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/desfire-relay/relay/transaction/ledger"
)

// RunReaders runs the registered-reader suite against ledgers made by
// open, which must implement ledger.ReaderStore.
func RunReaders(t *testing.T, open func(testing.TB) ledger.Ledger) {
	ctx := context.Background()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	get := func(t *testing.T) (ledger.Ledger, ledger.ReaderStore) {
		l := open(t)
		rs, ok := l.(ledger.ReaderStore)
		if !ok {
			t.Fatalf("%T is not a ReaderStore", l)
		}
		return l, rs
	}
	secret := func(s string) []byte { h := sha256.Sum256([]byte(s)); return h[:] }
	desk := ledger.Reader{Tenant: "acme", ID: "desk-1", Location: "Front desk, 2nd floor", SecretHash: secret("a"),
		DESFireReaderID: bytes.Repeat([]byte{0xA5}, 16), CreatedAt: now}

	t.Run("register, find, list, delete", func(t *testing.T) {
		_, rs := get(t)
		got, err := rs.CreateReader(ctx, desk)
		if err != nil || got.ID != "desk-1" || got.Location != desk.Location || !bytes.Equal(got.DESFireReaderID, desk.DESFireReaderID) || !got.CreatedAt.Equal(now) || !got.AgentSeenAt.IsZero() {
			t.Fatalf("create: %+v %v", got, err)
		}
		if _, err := rs.CreateReader(ctx, ledger.Reader{Tenant: "acme", ID: "desk-1", SecretHash: secret("b"), CreatedAt: now}); !errors.Is(err, ledger.ErrReaderExists) {
			t.Fatalf("same id again: %v", err)
		}
		// Another tenant may use the same id; no DESFire reader id is fine.
		other := ledger.Reader{Tenant: "other", ID: "desk-1", SecretHash: secret("c"), CreatedAt: now}
		if got, err := rs.CreateReader(ctx, other); err != nil || got.DESFireReaderID != nil {
			t.Fatalf("other tenant: %+v %v", got, err)
		}
		if r, err := rs.ReaderBySecret(ctx, secret("a")); err != nil || r.Tenant != "acme" || r.ID != "desk-1" {
			t.Fatalf("by secret: %+v %v", r, err)
		}
		if _, err := rs.ReaderBySecret(ctx, secret("zzz")); !errors.Is(err, ledger.ErrNotFound) {
			t.Fatalf("unknown secret: %v", err)
		}
		if _, err := rs.GetReader(ctx, "acme", "nope"); !errors.Is(err, ledger.ErrNotFound) {
			t.Fatalf("unknown reader: %v", err)
		}
		list, err := rs.ListReaders(ctx, "acme")
		if err != nil || len(list) != 1 || list[0].ID != "desk-1" {
			t.Fatalf("list: %+v %v", list, err)
		}
		if err := rs.DeleteReader(ctx, "acme", "desk-1"); err != nil {
			t.Fatal(err)
		}
		if err := rs.DeleteReader(ctx, "acme", "desk-1"); !errors.Is(err, ledger.ErrNotFound) {
			t.Fatalf("delete twice: %v", err)
		}
		if list, _ := rs.ListReaders(ctx, "other"); len(list) != 1 {
			t.Fatalf("other tenant's reader went too: %+v", list)
		}
	})

	t.Run("bad input is refused", func(t *testing.T) {
		_, rs := get(t)
		for name, r := range map[string]ledger.Reader{
			"empty id":         {Tenant: "acme", SecretHash: secret("a"), CreatedAt: now},
			"id with space":    {Tenant: "acme", ID: "desk 1", SecretHash: secret("a"), CreatedAt: now},
			"id too long":      {Tenant: "acme", ID: string(bytes.Repeat([]byte("x"), 65)), SecretHash: secret("a"), CreatedAt: now},
			"short reader id":  {Tenant: "acme", ID: "d", DESFireReaderID: []byte{1, 2, 3}, SecretHash: secret("a"), CreatedAt: now},
			"control location": {Tenant: "acme", ID: "d", Location: "a\x00b", SecretHash: secret("a"), CreatedAt: now},
			"no secret":        {Tenant: "acme", ID: "d", CreatedAt: now},
			"bad tenant":       {Tenant: "Bad Tenant", ID: "d", SecretHash: secret("a"), CreatedAt: now},
		} {
			if _, err := rs.CreateReader(ctx, r); !errors.Is(err, ledger.ErrInvalid) {
				t.Errorf("%s: %v", name, err)
			}
		}
		if list, _ := rs.ListReaders(ctx, "acme"); len(list) != 0 {
			t.Fatalf("refused readers stored: %+v", list)
		}
	})

	t.Run("presence lease", func(t *testing.T) {
		_, rs := get(t)
		if _, err := rs.CreateReader(ctx, desk); err != nil {
			t.Fatal(err)
		}
		if err := rs.TouchAgent(ctx, "acme", "desk-1", "conn-1", now); err != nil {
			t.Fatal(err)
		}
		r, _ := rs.GetReader(ctx, "acme", "desk-1")
		if !r.Online(now.Add(5*time.Second), 15*time.Second) || r.Online(now.Add(20*time.Second), 15*time.Second) {
			t.Fatalf("presence: %+v", r)
		}
		// A newer connection took over: the old one's drop changes nothing.
		if err := rs.TouchAgent(ctx, "acme", "desk-1", "conn-2", now.Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		if err := rs.DropAgent(ctx, "acme", "desk-1", "conn-1"); err != nil {
			t.Fatal(err)
		}
		if r, _ := rs.GetReader(ctx, "acme", "desk-1"); !r.Online(now.Add(2*time.Second), 15*time.Second) {
			t.Fatalf("an old connection's drop ended the new one's presence: %+v", r)
		}
		if err := rs.DropAgent(ctx, "acme", "desk-1", "conn-2"); err != nil {
			t.Fatal(err)
		}
		if r, _ := rs.GetReader(ctx, "acme", "desk-1"); r.Online(now.Add(2*time.Second), 15*time.Second) {
			t.Fatalf("dropped agent still online: %+v", r)
		}
		if err := rs.TouchAgent(ctx, "acme", "nope", "c", now); !errors.Is(err, ledger.ErrNotFound) {
			t.Fatalf("touch unknown reader: %v", err)
		}
	})

	t.Run("addressed sessions are claimed once, oldest first", func(t *testing.T) {
		l, rs := get(t)
		if _, err := rs.CreateReader(ctx, desk); err != nil {
			t.Fatal(err)
		}
		var ids []uuid.UUID
		for i := range 3 {
			sess, err := l.CreateTenantSession(ctx, "acme", ledger.KindBalance, uuid.Nil, now.Add(time.Duration(i)*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			exp := now.Add(time.Minute)
			if i == 2 {
				exp = now.Add(2 * time.Second) // expires before it is claimed
			}
			if err := rs.AddressSession(ctx, "acme", "desk-1", sess.ID, now.Add(time.Duration(i)*time.Second), exp); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, sess.ID)
		}
		if _, ok, err := rs.ClaimSession(ctx, "other", "desk-1", now.Add(3*time.Second)); ok || err != nil {
			t.Fatalf("another tenant's reader claimed a session: %v %v", ok, err)
		}
		var (
			mu  sync.Mutex
			got []uuid.UUID
			wg  sync.WaitGroup
		)
		for range 6 { // nodes racing for the same reader's sessions
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					id, ok, err := rs.ClaimSession(ctx, "acme", "desk-1", now.Add(3*time.Second))
					if err != nil {
						t.Error(err)
						return
					}
					if !ok {
						return
					}
					mu.Lock()
					got = append(got, id)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if len(got) != 2 || !containsAll(got, ids[:2]) {
			t.Fatalf("claimed %v, want once each of %v (the third expired)", got, ids[:2])
		}
	})
}

func containsAll(got, want []uuid.UUID) bool {
	seen := map[uuid.UUID]int{}
	for _, g := range got {
		seen[g]++
	}
	for _, w := range want {
		if seen[w] != 1 {
			return false
		}
	}
	return true
}
