package transaction_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/desfire/simcard"
	"github.com/desfire-relay/relay/internal/testcard"
	"github.com/desfire-relay/relay/transaction"
	"github.com/desfire-relay/relay/transaction/keys"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/lock"
	"github.com/desfire-relay/relay/transaction/profile"
)

// transitEV3 is a second application of the fleet: another AID, served to
// EV3 cards only.
func transitEV3() profile.Profile {
	p := profile.AN12113()
	p.Name, p.AID, p.Generations = "transit-ev3", 0x015500, []string{profile.GenEV3}
	return p
}

type fleetEnv struct {
	svc *transaction.Service
	l   ledger.Ledger
	kp  *keys.Static
	set profile.Set
}

func newFleet(t *testing.T, names ...string) *fleetEnv {
	t.Helper()
	set := profile.DefaultSet()
	tr := transitEV3()
	set[tr.Name] = tr
	f, err := keys.DevFile(nil, 0x014499, tr.AID)
	if err != nil {
		t.Fatal(err)
	}
	// A second version of the AN12113 AppTransactionMACKey (version 0,
	// as other issuance tools leave it) lives beside version 1.
	k := make([]byte, 16)
	rand.Read(k)
	f.Keys = append(f.Keys, keys.Entry{AID: "014499", Name: keys.TMACName, Version: 0, Key: hex.EncodeToString(k), Diversify: true})
	kp, err := keys.New(f)
	if err != nil {
		t.Fatal(err)
	}
	l := sqliteLedger(t)
	svc, err := transaction.New(transaction.Config{Ledger: l, Locker: lock.NewMemory(), Keys: kp, Profiles: set, Fleet: names, LockTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return &fleetEnv{svc: svc, l: l, kp: kp, set: set}
}

// topUp runs one top-up of amount for card on a counting batching bridge
// and returns the result, the exchanges and the stored top-up.
func (f *fleetEnv) topUp(t *testing.T, card *simcard.Card, amount int64, tr desfire.Transport) (transaction.Result, int, ledger.TopUp) {
	t.Helper()
	ctx := context.Background()
	tu, tk, _, err := f.svc.CreateTopUp(ctx, fmt.Sprintf("fleet-%X-%d-%d", card.UID(), amount, time.Now().UnixNano()), ledger.Request{Amount: amount, Currency: "EUR"})
	if err != nil {
		t.Fatal(err)
	}
	sess, err := f.svc.OpenSession(ctx, tk.Token)
	if err != nil {
		t.Fatal(err)
	}
	if tr == nil {
		tr = card
	}
	card.Tap()
	c := &counting{t: tr}
	res := f.svc.Run(ctx, sess, hex.EncodeToString(card.UID()), countingBridge{c})
	got, _ := f.l.GetTopUp(ctx, tu.ID)
	return res, c.n, got
}

// TestMixedFleet: one server serves EV1, EV2 and EV3 cards of two
// applications, with 4-, 7- and 10-byte UIDs and a Transaction MAC key of
// version 0; each tap picks the profile from GetVersion in the first
// exchange. A card of a kind the server has seen costs the published
// exchanges (EV2 3, EV1 2); the first tap of a card whose kind differs
// from the fleet's first profile costs one more per profile tried. The
// ledger records the profile of every tap.
func TestMixedFleet(t *testing.T) {
	f := newFleet(t, "an12113-ev2", "an12113-ev1", "transit-ev3")
	ev2, ev1, tr := f.set["an12113-ev2"], f.set["an12113-ev1"], f.set["transit-ev3"]
	cases := []struct {
		name        string
		prof        profile.Profile
		opts        simcard.Options
		tmacV0      bool
		first, next int // exchanges on the first tap and on later ones
	}{
		{"ev2-7byte", ev2, simcard.Options{UID: []byte{4, 1, 2, 3, 4, 5, 0x10}, Generation: simcard.GenEV2}, false, 3, 3},
		{"ev3-4byte-tmac-v0", ev2, simcard.Options{UID: []byte{0x08, 1, 2, 0x11}, Generation: simcard.GenEV3}, true, 3, 3},
		{"ev1-7byte", ev1, simcard.Options{UID: []byte{4, 1, 2, 3, 4, 5, 0x12}, Generation: simcard.GenEV1}, false, 3, 2},
		{"ev1-10byte", ev1, simcard.Options{UID: []byte{4, 1, 2, 3, 4, 5, 6, 7, 8, 0x13}, Generation: simcard.GenEV1}, false, 3, 2},
		{"ev3-transit", tr, simcard.Options{UID: []byte{4, 9, 2, 3, 4, 5, 0x14}, Generation: simcard.GenEV3}, false, 5, 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			card := testcard.IssueCard(t, c.prof, f.kp, c.opts, 1000)
			if c.tmacV0 {
				reissueTMAC(t, card, c.prof, f.kp, 0)
			}
			for i, want := range []int{c.first, c.next} {
				res, n, got := f.topUp(t, card, 100, nil)
				if !res.OK || got.Status != ledger.StatusApplied || res.Profile != c.prof.Name || got.Profile != c.prof.Name {
					t.Fatalf("tap %d: result %+v, ledger %s profile %q", i+1, res, got.Status, got.Profile)
				}
				if c.prof.HasTMAC && got.TMC == nil {
					t.Fatalf("tap %d: no Transaction MAC recorded", i+1)
				}
				v, err := card.Value(c.prof.AIDBytes(), c.prof.ValueFile)
				if err != nil || int64(v) != 1000+100*int64(i+1) {
					t.Fatalf("tap %d: card value %d (%v)", i+1, v, err)
				}
				t.Logf("%s tap %d: %d exchanges (profile %s)", c.name, i+1, n, res.Profile)
				if n != want {
					t.Errorf("tap %d: %d exchanges, want %d", i+1, n, want)
				}
				atts, err := f.l.ListAttempts(context.Background(), got.ID)
				if err != nil || len(atts) != 1 || atts[0].Profile != c.prof.Name {
					t.Fatalf("attempts %+v (%v)", atts, err)
				}
			}
		})
	}
	t.Run("10-byte-uid-on-tmac-profile", func(t *testing.T) {
		// The Transaction MAC session vector has room for 7 UID bytes: the
		// server refuses before anything that could commit.
		card := testcard.IssueCard(t, tr, f.kp, simcard.Options{UID: []byte{4, 9, 2, 3, 4, 5, 6, 7, 8, 0x16}, Generation: simcard.GenEV3}, 1000)
		res, _, got := f.topUp(t, card, 100, nil)
		v, _ := card.Value(tr.AIDBytes(), tr.ValueFile)
		if res.OK || res.Reason != transaction.ReasonCardUnknown || got.Status != ledger.StatusFailed || v != 1000 {
			t.Fatalf("10-byte UID on a TMAC profile: %+v, ledger %s, value %d", res, got.Status, v)
		}
	})
	t.Run("unknown-application", func(t *testing.T) {
		other := profile.AN12113()
		other.Name, other.AID = "elsewhere", 0x017700
		kf, err := keys.DevFile(nil, other.AID)
		if err != nil {
			t.Fatal(err)
		}
		okp, err := keys.New(kf)
		if err != nil {
			t.Fatal(err)
		}
		card := testcard.IssueCard(t, other, okp, simcard.Options{UID: []byte{4, 1, 2, 3, 4, 5, 0x15}, Generation: simcard.GenEV2}, 1000)
		res, _, got := f.topUp(t, card, 100, nil)
		v, _ := card.Value(other.AIDBytes(), other.ValueFile)
		if res.OK || res.Reason != transaction.ReasonCardUnknown || got.Status != ledger.StatusFailed || got.CardUID != "" || v != 1000 {
			t.Fatalf("card without an application of the fleet: %+v, ledger %s bound to %q, value %d", res, got.Status, got.CardUID, v)
		}
	})
}

// rewriter relays to the card and rewrites the answer to the n-th APDU
// whose native code is ins (1-based; 0: every one).
type rewriter struct {
	t    desfire.Transport
	ins  byte
	nth  int
	seen int
	f    func([]byte) []byte
}

func (r *rewriter) Transmit(ctx context.Context, a []byte) ([]byte, error) {
	out, err := r.t.Transmit(ctx, a)
	if err != nil || len(a) < 2 || a[1] != r.ins {
		return out, err
	}
	r.seen++
	if r.nth == 0 || r.seen == r.nth {
		return r.f(append([]byte(nil), out...)), nil
	}
	return out, nil
}

// TestFleetLies: what exchange 1 shows before authentication (GetVersion,
// the UID the bridge names, an ILLEGAL_COMMAND to the EV2 authentication)
// is unauthenticated. A bridge lying about it can only end the session
// (unknown card, integrity, failed authentication) or make the card take
// another path of the same application whose keys it holds — never a
// credit to another card, never two credits, never applied without the
// card's proof.
func TestFleetLies(t *testing.T) {
	f := newFleet(t, "an12113-ev2", "an12113-ev1")
	ev2 := f.set["an12113-ev2"]
	lies := []struct {
		name string
		tr   func(card *simcard.Card) desfire.Transport
		// applied: the lie may leave the credit applied (another path of
		// the same application, proven by the card); otherwise the
		// session must fail with nothing on the card.
		applied bool
	}{
		{"version-claims-ev1", func(c *simcard.Card) desfire.Transport {
			return &rewriter{t: c, ins: desfire.CmdGetVersion, nth: 1, f: func(b []byte) []byte { b[3] = 0x01; return b }}
		}, true},
		{"version-unknown-product", func(c *simcard.Card) desfire.Transport {
			return &rewriter{t: c, ins: desfire.CmdGetVersion, nth: 1, f: func(b []byte) []byte { b[1] = 0x04; return b }}
		}, false},
		{"version-other-uid", func(c *simcard.Card) desfire.Transport {
			return &rewriter{t: c, ins: 0xAF, nth: 2, f: func(b []byte) []byte { b[1] ^= 0xFF; return b }}
		}, false},
		{"ev2-auth-illegal-command", func(c *simcard.Card) desfire.Transport {
			return &rewriter{t: c, ins: 0x71, nth: 1, f: func([]byte) []byte { return []byte{0x91, 0x1C} }}
		}, true},
		{"ev2-auth-no-such-app", func(c *simcard.Card) desfire.Transport {
			return &rewriter{t: c, ins: desfire.CmdSelectApplication, nth: 0, f: func([]byte) []byte { return []byte{0x91, 0xA0} }}
		}, false},
	}
	for i, lie := range lies {
		t.Run(lie.name, func(t *testing.T) {
			uid := []byte{4, 0x20, 2, 3, 4, 5, byte(i)}
			card := testcard.IssueCard(t, ev2, f.kp, simcard.Options{UID: uid, Generation: simcard.GenEV2}, 1000)
			res, _, got := f.topUp(t, card, 100, lie.tr(card))
			v, _ := card.Value(ev2.AIDBytes(), ev2.ValueFile)
			switch {
			case res.OK && lie.applied && got.Status == ledger.StatusApplied && v == 1100:
				t.Logf("%s: applied through profile %s, one credit", lie.name, res.Profile)
			case !res.OK && got.Status == ledger.StatusFailed && v == 1000:
				t.Logf("%s: refused (%s), nothing on the card", lie.name, res.Reason)
			default:
				t.Fatalf("%s: result %+v, ledger %s, card value %d", lie.name, res, got.Status, v)
			}
		})
	}
	t.Run("names-another-card", func(t *testing.T) {
		a := testcard.IssueCard(t, ev2, f.kp, simcard.Options{UID: []byte{4, 0x21, 2, 3, 4, 5, 1}, Generation: simcard.GenEV2}, 1000)
		b := testcard.IssueCard(t, ev2, f.kp, simcard.Options{UID: []byte{4, 0x21, 2, 3, 4, 5, 2}, Generation: simcard.GenEV2}, 1000)
		ctx := context.Background()
		tu, tk, _, err := f.svc.CreateTopUp(ctx, "names-another", ledger.Request{Amount: 100, Currency: "EUR"})
		if err != nil {
			t.Fatal(err)
		}
		sess, err := f.svc.OpenSession(ctx, tk.Token)
		if err != nil {
			t.Fatal(err)
		}
		a.Tap()
		// Card a in the field, card b's UID named.
		res := f.svc.Run(ctx, sess, hex.EncodeToString(b.UID()), countingBridge{&counting{t: a}})
		got, _ := f.l.GetTopUp(ctx, tu.ID)
		va, _ := a.Value(ev2.AIDBytes(), ev2.ValueFile)
		vb, _ := b.Value(ev2.AIDBytes(), ev2.ValueFile)
		if res.OK || got.Status != ledger.StatusFailed || got.CardUID != "" || va != 1000 || vb != 1000 {
			t.Fatalf("another card's UID named: %+v, ledger %s bound to %q, values %d %d", res, got.Status, got.CardUID, va, vb)
		}
		t.Logf("another card's UID named: refused (%s)", res.Reason)
	})
}

// TestTopUpScheme: a top-up request may name the card profile; the
// session then refuses a card of another profile (card_unknown, nothing
// written, the top-up free for the right card) and serves one of that
// profile. A name the server does not serve is refused at create.
func TestTopUpScheme(t *testing.T) {
	f := newFleet(t, "an12113-ev2", "an12113-ev1")
	ctx := context.Background()
	ev2, ev1 := f.set["an12113-ev2"], f.set["an12113-ev1"]
	if _, _, _, err := f.svc.CreateTopUp(ctx, "scheme-unknown", ledger.Request{Amount: 100, Currency: "EUR", Scheme: "transit-ev3"}); !errors.Is(err, profile.ErrUnknownProfile) {
		t.Fatalf("unserved profile named: %v", err)
	}
	tu, tk, _, err := f.svc.CreateTopUp(ctx, "scheme-ev1", ledger.Request{Amount: 100, Currency: "EUR", Scheme: ev1.Name})
	if err != nil || tu.Scheme != ev1.Name {
		t.Fatalf("create: %+v (%v)", tu, err)
	}
	if _, _, _, err := f.svc.CreateTopUp(ctx, "scheme-ev1", ledger.Request{Amount: 100, Currency: "EUR"}); !errors.Is(err, ledger.ErrIdempotencyConflict) {
		t.Fatalf("same key without the profile: %v", err)
	}
	run := func(card *simcard.Card, tk *transaction.Ticket) (transaction.Result, ledger.TopUp) {
		sess, err := f.svc.OpenSession(ctx, tk.Token)
		if err != nil {
			t.Fatal(err)
		}
		card.Tap()
		res := f.svc.Run(ctx, sess, hex.EncodeToString(card.UID()), countingBridge{&counting{t: card}})
		got, _ := f.l.GetTopUp(ctx, tu.ID)
		return res, got
	}
	wrong := testcard.IssueCard(t, ev2, f.kp, simcard.Options{UID: []byte{4, 0x40, 2, 3, 4, 5, 1}, Generation: simcard.GenEV3}, 1000)
	res, got := run(wrong, tk)
	if v, _ := wrong.Value(ev2.AIDBytes(), ev2.ValueFile); res.OK || res.Reason != transaction.ReasonCardUnknown || got.Status != ledger.StatusFailed || got.CardUID != "" || v != 1000 {
		t.Fatalf("card of another profile: %+v, ledger %s bound to %q, value %d", res, got.Status, got.CardUID, v)
	}
	right := testcard.IssueCard(t, ev1, f.kp, simcard.Options{UID: []byte{4, 0x40, 2, 3, 4, 5, 2}, Generation: simcard.GenEV1}, 1000)
	if tk, err = f.svc.TopUpTicket(ctx, tu.ID); err != nil {
		t.Fatal(err)
	}
	res, got = run(right, tk)
	if v, _ := right.Value(ev1.AIDBytes(), ev1.ValueFile); !res.OK || got.Status != ledger.StatusApplied || got.Profile != ev1.Name || v != 1100 {
		t.Fatalf("card of the named profile: %+v, ledger %s profile %s, value %d", res, got.Status, got.Profile, v)
	}
}
