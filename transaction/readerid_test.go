package transaction_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"testing"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/desfire/simcard"
	"github.com/desfire-relay/relay/internal/testcard"
	"github.com/desfire-relay/relay/transaction"
	"github.com/desfire-relay/relay/transaction/keys"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/profile"
)

// ridProfile is AN12113 on cards whose Transaction MAC file requires
// CommitReaderID under the top-up key.
func ridProfile() profile.Profile {
	p := profile.AN12113()
	p.Name, p.CommitReaderID = "an12113-ev2-rid", true
	return p
}

type ridEnv struct {
	svc *transaction.Service
	l   ledger.Ledger
	kp  *keys.Static
}

// newRIDEnv serves the named profile (AN12113 and ridProfile share one
// application and its keys) with default reader ID def.
func newRIDEnv(t *testing.T, name string, def [16]byte) *ridEnv {
	t.Helper()
	rp := ridProfile()
	kp, _ := testcard.Keys(t, rp)
	svc, l := sqliteService(t, transaction.Config{Keys: kp, Profile: name, DefaultReaderID: def}, rp)
	return &ridEnv{svc: svc, l: l, kp: kp}
}

// run taps card for top-up tu (a fresh ticket) with reader ID rid (zero:
// the default) and returns the result, the exchanges and the stored
// top-up.
func (e *ridEnv) run(t *testing.T, card *simcard.Card, id string, rid [16]byte) (transaction.Result, int, ledger.TopUp) {
	return e.runOn(t, card, id, rid, true)
}

// runOn is run on a batching bridge or, with batch false, one APDU per
// exchange.
func (e *ridEnv) runOn(t *testing.T, card *simcard.Card, id string, rid [16]byte, batch bool) (transaction.Result, int, ledger.TopUp) {
	t.Helper()
	ctx := context.Background()
	tu, sess, ok := openTopUp(t, e.svc, id)
	if !ok {
		t.Fatalf("top-up %s is applied already", id)
	}
	card.Tap()
	c := &counting{t: card}
	var b transaction.Bridge = countingBridge{c}
	if !batch {
		b = plainBridge{c}
	}
	res := e.svc.RunWith(ctx, sess, hex.EncodeToString(card.UID()), b, transaction.RunOptions{ReaderID: rid})
	got, _ := e.l.GetTopUp(ctx, tu.ID)
	return res, c.n, got
}

func rid(b byte) [16]byte {
	var r [16]byte
	for i := range r {
		r[i] = b + byte(i)
	}
	return r
}

// TestCommitReaderID: a card whose Transaction MAC file requires
// CommitReaderID is topped up with the session's reader ID (or the
// configured default) committed under the session MAC and covered by the
// Transaction MAC; the ledger stores it and the previous reader ID the
// card returned. With the profile announcing it, the exchanges stay EV2
// 3. A card whose setting differs from its profile (required but not
// announced, announced but disabled) is topped up in the same session
// once its authenticated settings showed the difference, one credit,
// and costs the published exchanges from its next tap on.
func TestCommitReaderID(t *testing.T) {
	phone := rid(0xA0)
	t.Run("announced", func(t *testing.T) {
		e := newRIDEnv(t, ridProfile().Name, phone)
		card := testcard.IssueCard(t, ridProfile(), e.kp, simcard.Options{UID: testUID, Generation: simcard.GenEV3}, 1000)
		res, n, got := e.run(t, card, "rid-1", [16]byte{})
		if !res.OK || got.Status != ledger.StatusApplied || n != 3 {
			t.Fatalf("tap 1: %+v, ledger %s, %d exchanges", res, got.Status, n)
		}
		if !bytes.Equal(got.ReaderID, phone[:]) || !bytes.Equal(got.PrevReaderID, make([]byte, 16)) {
			t.Fatalf("tap 1: reader ID %X, previous %X", got.ReaderID, got.PrevReaderID)
		}
		kiosk := rid(0x30)
		res, n, got = e.run(t, card, "rid-2", kiosk)
		if !res.OK || got.Status != ledger.StatusApplied || n != 3 {
			t.Fatalf("tap 2: %+v, ledger %s, %d exchanges", res, got.Status, n)
		}
		if !bytes.Equal(got.ReaderID, kiosk[:]) || !bytes.Equal(got.PrevReaderID, phone[:]) {
			t.Fatalf("tap 2: reader ID %X, previous %X", got.ReaderID, got.PrevReaderID)
		}
		t.Logf("CommitReaderID required and announced: %d exchanges per top-up; reader %X after %X", n, got.ReaderID, got.PrevReaderID)
		rp := ridProfile()
		if v, _ := card.Value(rp.AIDBytes(), rp.ValueFile); v != 1200 {
			t.Fatalf("card value %d, want 1200", v)
		}
	})
	cases := []struct {
		name        string
		serve, card profile.Profile
		rid         bool
	}{
		{"required-not-announced", profile.AN12113(), ridProfile(), true},
		{"announced-but-disabled", ridProfile(), profile.AN12113(), false},
	}
	for _, c := range cases {
		for _, batch := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/batch=%v", c.name, batch), func(t *testing.T) {
				e := newRIDEnv(t, c.serve.Name, phone)
				card := testcard.IssueCard(t, c.card, e.kp, simcard.Options{UID: testUID, Generation: simcard.GenEV3}, 1000)
				ridTap(t, e, card, c.name, c.card, c.rid, batch)
			})
		}
	}
}

// ridTap taps card (issued with profile issued) twice on e: both top-ups
// applied in their own session, with a reader ID when rid; on a batching
// bridge the second costs 3 exchanges.
func ridTap(t *testing.T, e *ridEnv, card *simcard.Card, name string, issued profile.Profile, rid, batch bool) {
	t.Helper()
	for tap, want := range []int{0, 3} {
		res, n, got := e.runOn(t, card, fmt.Sprintf("%s-%v-%d", name, batch, tap), [16]byte{}, batch)
		if !res.OK || got.Status != ledger.StatusApplied {
			t.Fatalf("tap %d: %+v, ledger %s", tap+1, res, got.Status)
		}
		if (got.ReaderID != nil) != rid {
			t.Fatalf("tap %d: reader ID %X", tap+1, got.ReaderID)
		}
		t.Logf("%s batch=%v tap %d: %d exchanges", name, batch, tap+1, n)
		if batch && want != 0 && n != want {
			t.Fatalf("tap %d: %d exchanges, want %d", tap+1, n, want)
		}
		if v, _ := card.Value(issued.AIDBytes(), issued.ValueFile); v != 1000+100*int32(tap+1) {
			t.Fatalf("tap %d: card value %d", tap+1, v)
		}
	}
}

// TestCommitReaderIDTear: a tear at every APDU of a top-up on a card that
// requires CommitReaderID (announced or not) still ends, after the next
// tap, in exactly one credit.
func TestCommitReaderIDTear(t *testing.T) {
	for _, serve := range []profile.Profile{ridProfile(), profile.AN12113()} {
		t.Run(serve.Name, func(t *testing.T) {
			e := newRIDEnv(t, serve.Name, rid(0x10))
			ctx := context.Background()
			for n := 0; ; n++ {
				uid := []byte{4, 0x31, 2, 3, 4, byte(n >> 8), byte(n)}
				card := testcard.IssueCard(t, ridProfile(), e.kp, simcard.Options{UID: uid, Generation: simcard.GenEV3}, 1000)
				id := fmt.Sprintf("tear-%s-%d", serve.Name, n)
				tu, tk, _, err := e.svc.CreateTopUp(ctx, id, ledger.Request{Amount: 100, Currency: "EUR"})
				if err != nil {
					t.Fatal(err)
				}
				sess, err := e.svc.OpenSession(ctx, tk.Token)
				if err != nil {
					t.Fatal(err)
				}
				card.Tap()
				card.RemoveAfter(n)
				first := e.svc.Run(ctx, sess, hex.EncodeToString(uid), countingBridge{&counting{t: card}})
				if first.OK {
					t.Logf("%s: %d tear points, each ends in one credit", serve.Name, n)
					return
				}
				cur, _ := e.l.GetTopUp(ctx, tu.ID)
				if cur.Status != ledger.StatusApplied {
					res, _, got := e.run(t, card, id, [16]byte{})
					if !res.OK || got.Status != ledger.StatusApplied {
						t.Fatalf("tear after %d APDUs: retap %+v, ledger %s", n, res, got.Status)
					}
				}
				rp := ridProfile()
				v, _ := card.Value(rp.AIDBytes(), rp.ValueFile)
				recs, _ := card.Records(rp.AIDBytes(), rp.TopUpLogFile)
				if v != 1100 || len(recs) != 1 {
					t.Fatalf("tear after %d APDUs: card value %d, %d log records", n, v, len(recs))
				}
			}
		})
	}
}

// plainBridge is a bridge without batching: one APDU per exchange.
type plainBridge struct{ c *counting }

func (b plainBridge) Transport() desfire.Transport     { return plainOnly{b.c} }
func (plainBridge) Prompt(transaction.Prompt, float64) {}

// plainOnly hides the Batcher of the transport it wraps.
type plainOnly struct{ t desfire.Transport }

func (p plainOnly) Transmit(ctx context.Context, a []byte) ([]byte, error) {
	return p.t.Transmit(ctx, a)
}

// TestCommitReaderIDOtherKey: a card whose Transaction MAC file requires
// CommitReaderID under a key the top-up does not hold (the read key) is
// never credited: the mismatch is read from the authenticated settings
// (card_unknown); without batching nothing leaves before it is known, with
// batching the top-up stays in_doubt and the next tap settles it failed
// from the card's log.
func TestCommitReaderIDOtherKey(t *testing.T) {
	p := profile.AN12113()
	for _, batch := range []bool{false, true} {
		t.Run(fmt.Sprintf("batch=%v", batch), func(t *testing.T) {
			e := newRIDEnv(t, p.Name, rid(1))
			card := testcard.IssueCard(t, p, e.kp, simcard.Options{UID: testUID, Generation: simcard.GenEV3}, 1000)
			recreateTMAC(t, card, p, e.kp, p.ReadKeyNo)
			res, _, got := e.runOn(t, card, "other-key", [16]byte{}, batch)
			if res.OK || res.Reason != transaction.ReasonCardUnknown || got.Status == ledger.StatusApplied {
				t.Fatalf("%+v, ledger %s", res, got.Status)
			}
			res, _, got = e.runOn(t, card, "other-key", [16]byte{}, batch)
			if v, _ := card.Value(p.AIDBytes(), p.ValueFile); res.OK || got.Status == ledger.StatusApplied || v != 1000 {
				t.Fatalf("next tap: %+v, ledger %s, value %d", res, got.Status, v)
			}
			t.Logf("batch=%v: %s, then %s (%s); nothing on the card", batch, res.Reason, got.Status, res.Reason)
		})
	}
}

// recreateTMAC replaces the card's Transaction MAC file by one (key
// version 1) whose AppCommitReaderIDKey is ridKey.
func recreateTMAC(t *testing.T, card *simcard.Card, p profile.Profile, kp keys.Provider, ridKey byte) {
	t.Helper()
	ctx := context.Background()
	c := desfire.NewCard(card)
	mk, err := kp.CardKey(ctx, keys.Ref{AID: p.AID, KeyNo: p.MasterKeyNo, Version: 1}, card.UID())
	if err != nil {
		t.Fatal(err)
	}
	tmk, err := kp.CardKey(ctx, keys.Ref{AID: p.AID, Name: keys.TMACName, Version: 1}, card.UID())
	if err != nil {
		t.Fatal(err)
	}
	card.Tap()
	steps := []func() error{
		func() error { return c.SelectApplication(ctx, p.AIDBytes()) },
		func() error { return c.Authenticate(ctx, desfire.NewAuthEV2First(p.MasterKeyNo, mk, nil)) },
		func() error { return c.DeleteFile(ctx, p.TMACFile) },
		func() error {
			access := desfire.NewAccessRights(p.ReadKeyNo, 0xF, ridKey, p.MasterKeyNo).Bytes()
			return c.CreateTransactionMACFile(ctx, p.TMACFile, byte(desfire.CommPlain), access, tmk, 1)
		},
	}
	for i, st := range steps {
		if err := st(); err != nil {
			t.Fatalf("re-create step %d: %v", i, err)
		}
	}
	card.Tap()
}

// TestCommitReaderIDFree: a Transaction MAC file that enables
// CommitReaderID with free access (E) does not require it: a profile that
// does not announce it tops up without, one that does commits the reader
// ID (accepted, covered by the TMV); both in 3 exchanges.
func TestCommitReaderIDFree(t *testing.T) {
	for _, serve := range []profile.Profile{profile.AN12113(), ridProfile()} {
		t.Run(serve.Name, func(t *testing.T) {
			e := newRIDEnv(t, serve.Name, rid(7))
			p := profile.AN12113()
			card := testcard.IssueCard(t, p, e.kp, simcard.Options{UID: testUID, Generation: simcard.GenEV3}, 1000)
			recreateTMAC(t, card, p, e.kp, desfire.AccessFree)
			res, n, got := e.run(t, card, "free", [16]byte{})
			if !res.OK || got.Status != ledger.StatusApplied || n != 3 || (got.ReaderID != nil) != serve.CommitReaderID {
				t.Fatalf("%+v, ledger %s, %d exchanges, reader ID %X", res, got.Status, n, got.ReaderID)
			}
		})
	}
}
