package transaction_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/desfire/simcard"
	"github.com/desfire-relay/relay/internal/testcard"
	"github.com/desfire-relay/relay/transaction"
	"github.com/desfire-relay/relay/transaction/issue"
	"github.com/desfire-relay/relay/transaction/keys"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/lock"
	"github.com/desfire-relay/relay/transaction/profile"
)

// reissueTMAC replaces the card's Transaction MAC file with one holding
// the AppTransactionMACKey of version ver, as another vendor's issuance
// tool may have left it (version 0 is common).
func reissueTMAC(t *testing.T, card *simcard.Card, p profile.Profile, kp keys.Provider, ver byte) {
	t.Helper()
	ctx := context.Background()
	c := desfire.NewCard(card)
	mk, err := kp.CardKey(ctx, keys.Ref{AID: p.AID, KeyNo: p.MasterKeyNo, Version: issue.KeyVersion}, testUID)
	if err != nil {
		t.Fatal(err)
	}
	tmk, err := kp.CardKey(ctx, keys.Ref{AID: p.AID, Name: keys.TMACName, Version: ver}, testUID)
	if err != nil {
		t.Fatal(err)
	}
	card.Tap()
	steps := []func() error{
		func() error { return c.SelectApplication(ctx, p.AIDBytes()) },
		func() error { return c.Authenticate(ctx, desfire.NewAuthEV2First(p.MasterKeyNo, mk, rand.Reader)) },
		func() error { return c.DeleteFile(ctx, p.TMACFile) },
		func() error {
			access := issue.Access{Read: p.ReadKeyNo, Write: 0xF, ReadWrite: 0xF, Change: p.MasterKeyNo}.Bytes()
			return c.CreateTransactionMACFile(ctx, p.TMACFile, byte(desfire.CommPlain), access, tmk, ver)
		},
	}
	for i, st := range steps {
		if err := st(); err != nil {
			t.Fatalf("re-issue step %d: %v", i, err)
		}
	}
	card.Tap()
}

// TestTMACKeyByCardVersion: the AppTransactionMACKey is chosen by the
// version the card's Transaction MAC file settings name (read under the
// session MAC with the credit, at no extra exchange), so cards issued
// with version 0, 1 or 2 are all topped up while several versions are
// configured at once; a card naming a version that is not configured
// leaves the top-up in_doubt (the commit may have landed) and its next
// tap settles it from the log once the key is there.
func TestTMACKeyByCardVersion(t *testing.T) {
	p := profile.AN12113()
	for _, ver := range []byte{0, 1, 2} {
		t.Run(fmt.Sprintf("v%d", ver), func(t *testing.T) {
			ctx := context.Background()
			_, f := testcard.Keys(t, p)
			for _, v := range []byte{0, 2} {
				k := make([]byte, 16)
				rand.Read(k)
				f.Keys = append(f.Keys, keys.Entry{AID: fmt.Sprintf("%06X", p.AID), Name: keys.TMACName, Version: v, Key: hex.EncodeToString(k), Diversify: true})
			}
			kp, err := keys.New(f)
			if err != nil {
				t.Fatal(err)
			}
			card := testcard.Issue(t, p, kp, testUID, 0)
			if ver != issue.KeyVersion {
				reissueTMAC(t, card, p, kp, ver)
			}
			l := sqliteLedger(t)
			svc, err := transaction.New(transaction.Config{Ledger: l, Locker: lock.NewMemory(), Keys: kp, Profile: p.Name, LockTTL: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			tu, tk, _, err := svc.CreateTopUp(ctx, "tmac-v", ledger.Request{Amount: 120, Currency: "EUR"})
			if err != nil {
				t.Fatal(err)
			}
			sess, err := svc.OpenSession(ctx, tk.Token)
			if err != nil {
				t.Fatal(err)
			}
			c := &counting{t: card}
			res := svc.Run(ctx, sess, hex.EncodeToString(testUID), countingBridge{c})
			got, _ := l.GetTopUp(ctx, tu.ID)
			if !res.OK || got.Status != ledger.StatusApplied || got.TMC == nil || *got.TMC != 1 {
				t.Fatalf("TMAC key version %d: result %+v, ledger %s TMC %v", ver, res, got.Status, got.TMC)
			}
			if c.n != 3 {
				t.Fatalf("%d exchanges, want 3", c.n)
			}
		})
	}
	t.Run("unconfigured", func(t *testing.T) {
		ctx := context.Background()
		kp, f := testcard.Keys(t, p)
		card := testcard.Issue(t, p, kp, testUID, 0)
		// The card holds version 1; the server is configured with version 2 only.
		for i := range f.Keys {
			if f.Keys[i].Name == keys.TMACName {
				f.Keys[i].Version = 2
			}
		}
		only2, err := keys.New(f)
		if err != nil {
			t.Fatal(err)
		}
		l := sqliteLedger(t)
		run := func(kp keys.Provider) (transaction.Result, ledger.TopUp, *transaction.Service) {
			svc, err := transaction.New(transaction.Config{Ledger: l, Locker: lock.NewMemory(), Keys: kp, Profile: p.Name, LockTTL: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			tus, _ := l.ListTopUps(ctx, ledger.Filter{})
			var tk *transaction.Ticket
			if len(tus) == 0 {
				_, tk, _, err = svc.CreateTopUp(ctx, "tmac-unconfigured", ledger.Request{Amount: 80, Currency: "EUR"})
			} else {
				tk, err = svc.TopUpTicket(ctx, tus[0].ID)
			}
			if err != nil {
				t.Fatal(err)
			}
			sess, err := svc.OpenSession(ctx, tk.Token)
			if err != nil {
				t.Fatal(err)
			}
			card.Tap()
			res := svc.Run(ctx, sess, hex.EncodeToString(testUID), bridge{t: card, batch: true})
			got, _ := l.GetTopUp(ctx, sess.TopUpID)
			return res, got, svc
		}
		res, got, _ := run(only2)
		if res.OK || got.Status != ledger.StatusInDoubt {
			t.Fatalf("unconfigured TMAC key version: result %+v, ledger %s", res, got.Status)
		}
		res, got, _ = run(kp)
		if !res.OK || got.Status != ledger.StatusApplied {
			t.Fatalf("retap with the key configured: result %+v, ledger %s", res, got.Status)
		}
		if v, n := (&env{card: card, kp: kp, p: p}).cardState(t); v != 80 || n != 1 {
			t.Fatalf("card holds %d in %d records, want one credit of 80", v, n)
		}
	})
}
