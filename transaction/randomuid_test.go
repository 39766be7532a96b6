package transaction_test

import (
	"context"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/desfire/simcard"
	"github.com/desfire-relay/relay/internal/testcard"
	"github.com/desfire-relay/relay/transaction"
	"github.com/desfire-relay/relay/transaction/keys"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/profile"
)

// randomProfile is p on cards with a random ID: key 4 is the UID key.
func randomProfile(p profile.Profile) profile.Profile {
	p.Name += "-random"
	p.RandomUID, p.UIDKeyNo = true, 4
	return p
}

type randomEnv struct {
	svc            *transaction.Service
	l              ledger.Ledger
	kp             *keys.Static
	ev2, ev1, norm profile.Profile
}

// newRandomEnv serves a fleet of fixed-UID EV2 cards and random-ID EV2
// and EV1 cards of one application; the UID key (4) is not diversified.
func newRandomEnv(t *testing.T) *randomEnv {
	t.Helper()
	e := &randomEnv{ev2: randomProfile(profile.AN12113()), ev1: randomProfile(profile.AN12113EV1()), norm: profile.AN12113()}
	_, f := testcard.Keys(t, e.norm)
	f.Keys = append(f.Keys, keys.Entry{AID: "014499", KeyNo: 4, Version: 1, Key: strings.Repeat("4B", 16), Diversify: false})
	kp, err := keys.New(f)
	if err != nil {
		t.Fatal(err)
	}
	e.kp = kp
	e.svc, e.l = sqliteService(t, transaction.Config{Keys: kp, Fleet: []string{e.norm.Name, e.ev2.Name, e.ev1.Name}}, e.ev2, e.ev1)
	return e
}

// ticket opens a session on a fresh ticket for top-up id (created with
// amount 100 when new).
func (e *randomEnv) ticket(t *testing.T, id string) (ledger.TopUp, ledger.Session) {
	t.Helper()
	tu, sess, ok := openTopUp(t, e.svc, id)
	if !ok {
		t.Fatalf("top-up %s is applied already", id)
	}
	return tu, sess
}

// openTopUp creates top-up id (100 EUR) or finds it again, and opens a
// session on a fresh ticket for it; false (and no session) when the
// top-up is applied already.
func openTopUp(t *testing.T, svc *transaction.Service, id string) (ledger.TopUp, ledger.Session, bool) {
	t.Helper()
	ctx := context.Background()
	tu, tk, _, err := svc.CreateTopUp(ctx, id, ledger.Request{Amount: 100, Currency: "EUR"})
	if err != nil {
		t.Fatal(err)
	}
	if tk == nil {
		if tu.Status == ledger.StatusApplied {
			return tu, ledger.Session{}, false
		}
		if tk, err = svc.TopUpTicket(ctx, tu.ID); err != nil {
			t.Fatal(err)
		}
	}
	sess, err := svc.OpenSession(ctx, tk.Token)
	if err != nil {
		t.Fatal(err)
	}
	return tu, sess, true
}

// tap presents card (a new random ID) and runs the session over tr
// (nil: the card), naming the card's anticollision ID unless named is
// set.
func (e *randomEnv) tap(t *testing.T, sess ledger.Session, card *simcard.Card, tr desfire.Transport, named []byte) (transaction.Result, int) {
	t.Helper()
	card.Tap()
	if tr == nil {
		tr = card
	}
	if named == nil {
		named = card.AnticollisionUID()
	}
	c := &counting{t: tr}
	res := e.svc.Run(context.Background(), sess, hex.EncodeToString(named), countingBridge{c})
	return res, c.n
}

// TestRandomUIDTopUp: a random-ID card is topped up end to end: the
// session authenticates with the UID key, reads the real UID enciphered,
// authenticates with the key diversified from it, and the lock, the
// ledger, the history and the result name the real UID, never the random
// one. Exchanges on a batching bridge: EV2/EV3 5 (3 + 2), EV1 4 in a
// fleet led by EV2 profiles (2 + 1, + 1 for the generation guessed wrong).
func TestRandomUIDTopUp(t *testing.T) {
	e := newRandomEnv(t)
	cases := []struct {
		name string
		prof profile.Profile
		gen  simcard.Generation
		want int
	}{
		{"ev3", e.ev2, simcard.GenEV3, 5},
		{"ev2", e.ev2, simcard.GenEV2, 5},
		{"ev1", e.ev1, simcard.GenEV1, 4},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			real := []byte{4, 0x51, 2, 3, 4, 5, byte(i)}
			card := testcard.IssueCard(t, c.prof, e.kp, simcard.Options{UID: real, RandomUID: true, Generation: c.gen}, 1000)
			ids := map[string]bool{}
			for tap := 1; tap <= 2; tap++ {
				tu, sess := e.ticket(t, fmt.Sprintf("random-%s-%d", c.name, tap))
				res, n := e.tap(t, sess, card, nil, nil)
				ids[hex.EncodeToString(card.AnticollisionUID())] = true
				got, _ := e.l.GetTopUp(context.Background(), tu.ID)
				if !res.OK || got.Status != ledger.StatusApplied || got.CardUID != fmt.Sprintf("%X", real) || res.CardUID != got.CardUID || res.Profile != c.prof.Name {
					t.Fatalf("tap %d: %+v, ledger %s card %s", tap, res, got.Status, got.CardUID)
				}
				t.Logf("%s random-ID tap %d: %d exchanges, real UID %s", c.name, tap, n, got.CardUID)
				if n != c.want {
					t.Errorf("tap %d: %d exchanges, want %d", tap, n, c.want)
				}
			}
			if len(ids) != 2 {
				t.Fatalf("the card showed %d random IDs in two taps", len(ids))
			}
			hist, err := e.svc.CardTopUps(context.Background(), fmt.Sprintf("%X", real))
			if err != nil || len(hist) != 2 {
				t.Fatalf("history under the real UID: %d (%v)", len(hist), err)
			}
			if v, _ := card.Value(c.prof.AIDBytes(), c.prof.ValueFile); v != 1200 {
				t.Fatalf("card value %d, want 1200", v)
			}
		})
	}
	t.Run("balance", func(t *testing.T) {
		real := []byte{4, 0x52, 2, 3, 4, 5, 6}
		card := testcard.IssueCard(t, e.ev2, e.kp, simcard.Options{UID: real, RandomUID: true, Generation: simcard.GenEV3}, 700)
		tk, err := e.svc.BalanceTicket(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		sess, err := e.svc.OpenSession(context.Background(), tk.Token)
		if err != nil {
			t.Fatal(err)
		}
		res, _ := e.tap(t, sess, card, nil, nil)
		if !res.OK || res.Balance == nil || *res.Balance != 700 || res.CardUID != fmt.Sprintf("%X", real) {
			t.Fatalf("balance of a random-ID card: %+v", res)
		}
	})
}

// TestRandomUIDTear: a tear at every APDU of a random-ID card's top-up
// ends, after the next tap (which shows another random ID), in exactly
// one credit.
func TestRandomUIDTear(t *testing.T) {
	e := newRandomEnv(t)
	ctx := context.Background()
	for n := 0; ; n++ {
		real := []byte{4, 0x53, 2, 3, 4, byte(n >> 8), byte(n)}
		card := testcard.IssueCard(t, e.ev2, e.kp, simcard.Options{UID: real, RandomUID: true, Generation: simcard.GenEV3}, 1000)
		id := fmt.Sprintf("random-tear-%d", n)
		tu, sess := e.ticket(t, id)
		card.Tap()
		card.RemoveAfter(n)
		first := e.svc.Run(ctx, sess, hex.EncodeToString(card.AnticollisionUID()), countingBridge{&counting{t: card}})
		if first.OK {
			t.Logf("random-ID EV3: %d tear points, each ends in one credit", n)
			return
		}
		if cur, _ := e.l.GetTopUp(ctx, tu.ID); cur.Status != ledger.StatusApplied {
			_, sess := e.ticket(t, id)
			res, _ := e.tap(t, sess, card, nil, nil)
			got, _ := e.l.GetTopUp(ctx, tu.ID)
			if !res.OK || got.Status != ledger.StatusApplied || got.CardUID != fmt.Sprintf("%X", real) {
				t.Fatalf("tear after %d APDUs: retap %+v, ledger %s card %s", n, res, got.Status, got.CardUID)
			}
		}
		v, _ := card.Value(e.ev2.AIDBytes(), e.ev2.ValueFile)
		recs, _ := card.Records(e.ev2.AIDBytes(), e.ev2.TopUpLogFile)
		if v != 1100 || len(recs) != 1 {
			t.Fatalf("tear after %d APDUs: card value %d, %d log records", n, v, len(recs))
		}
	}
}

// TestRandomUIDLies: the UID the bridge names, GetVersion and everything
// before authentication are unauthenticated. Naming a wrong UID for a
// random-ID card, a random ID for a fixed-UID card, or forging the
// enciphered GetCardUID answer ends in a failed session with nothing on
// either card; a random-ID card presented for a top-up bound to another
// card is refused by the binding of the real UID.
func TestRandomUIDLies(t *testing.T) {
	e := newRandomEnv(t)
	ctx := context.Background()
	realA := []byte{4, 0x54, 2, 3, 4, 5, 1}
	a := testcard.IssueCard(t, e.ev2, e.kp, simcard.Options{UID: realA, RandomUID: true, Generation: simcard.GenEV3}, 1000)
	fixed := []byte{4, 0x54, 2, 3, 4, 5, 2}
	b := testcard.IssueCard(t, e.norm, e.kp, simcard.Options{UID: fixed, Generation: simcard.GenEV3}, 1000)
	value := func(c *simcard.Card, p profile.Profile) int32 {
		v, _ := c.Value(p.AIDBytes(), p.ValueFile)
		return v
	}
	lies := []struct {
		name  string
		card  *simcard.Card
		prof  profile.Profile
		named []byte
		tr    func(c *simcard.Card) desfire.Transport
	}{
		{"random-card-named-by-its-real-uid", a, e.ev2, realA, nil},
		{"random-card-named-by-another-uid", a, e.ev2, fixed, nil},
		{"fixed-card-named-by-a-random-id", b, e.norm, []byte{0x08, 1, 2, 3}, nil},
		{"forged-card-uid-answer", a, e.ev2, nil, func(c *simcard.Card) desfire.Transport {
			return &rewriter{t: c, ins: desfire.CmdGetCardUID, nth: 1, f: func(r []byte) []byte { r[0] ^= 0x01; return r }}
		}},
		{"version-shows-a-uid", a, e.ev2, nil, func(c *simcard.Card) desfire.Transport {
			return &rewriter{t: c, ins: 0xAF, nth: 2, f: func(r []byte) []byte { r[1] = 0x04; return r }}
		}},
	}
	for i, lie := range lies {
		t.Run(lie.name, func(t *testing.T) {
			tu, sess := e.ticket(t, fmt.Sprintf("lie-%d", i))
			var tr desfire.Transport
			if lie.tr != nil {
				tr = lie.tr(lie.card)
			}
			res, _ := e.tap(t, sess, lie.card, tr, lie.named)
			got, _ := e.l.GetTopUp(ctx, tu.ID)
			if res.OK || got.Status == ledger.StatusApplied || got.Status == ledger.StatusInDoubt || value(a, e.ev2) != 1000 || value(b, e.norm) != 1000 {
				t.Fatalf("%s: %+v, ledger %s, values %d %d", lie.name, res, got.Status, value(a, e.ev2), value(b, e.norm))
			}
			t.Logf("%s: refused (%s), nothing on either card", lie.name, res.Reason)
		})
	}
	t.Run("bound-to-another-card", func(t *testing.T) {
		other := []byte{4, 0x54, 2, 3, 4, 5, 3}
		c := testcard.IssueCard(t, e.ev2, e.kp, simcard.Options{UID: other, RandomUID: true, Generation: simcard.GenEV3}, 1000)
		tu, sess := e.ticket(t, "bound")
		c.Tap()
		c.RemoveAfter(14) // in_doubt on card c: the top-up is bound to c's real UID
		e.svc.Run(ctx, sess, hex.EncodeToString(c.AnticollisionUID()), countingBridge{&counting{t: c}})
		cur, _ := e.l.GetTopUp(ctx, tu.ID)
		if cur.CardUID != fmt.Sprintf("%X", other) {
			t.Fatalf("top-up bound to %q, status %s", cur.CardUID, cur.Status)
		}
		_, sess = e.ticket(t, "bound")
		res, _ := e.tap(t, sess, a, nil, nil)
		if res.OK || res.Reason != transaction.ReasonCardMismatch || value(a, e.ev2) != 1000 {
			t.Fatalf("random-ID card for a top-up bound to another card: %+v, value %d", res, value(a, e.ev2))
		}
	})
}

// randomRetap is a retapBridge for a random-ID card: presented again, the
// card shows a new random ID, which the bridge names.
type randomRetap struct {
	*retapBridge
	c *simcard.Card
}

func (b randomRetap) AwaitCard(ctx context.Context) (string, error) {
	if _, err := b.retapBridge.AwaitCard(ctx); err != nil {
		return "", err
	}
	return hex.EncodeToString(b.c.AnticollisionUID()), nil
}

// TestRandomUIDRetap: a random-ID card lifted at any APDU of its top-up
// and presented again within the session (showing a new random ID)
// finishes the same session with exactly one credit, keyed on its real
// UID.
func TestRandomUIDRetap(t *testing.T) {
	e := newRandomEnv(t)
	ctx := context.Background()
	cases, retapped := 0, 0
	for n := 1; ; n++ {
		real := []byte{4, 0x55, 2, 3, 4, byte(n >> 8), byte(n)}
		card := testcard.IssueCard(t, e.ev2, e.kp, simcard.Options{UID: real, RandomUID: true, Generation: simcard.GenEV3}, 1000)
		tu, sess := e.ticket(t, fmt.Sprintf("random-retap-%d", n))
		card.Tap()
		tear := &tearAt{t: card, n: n, after: n%2 == 0}
		b := randomRetap{&retapBridge{tear: tear, card: card, times: 1}, card}
		res := e.svc.Run(ctx, sess, hex.EncodeToString(card.AnticollisionUID()), b)
		if tear.seen < n {
			break
		}
		got, _ := e.l.GetTopUp(ctx, tu.ID)
		v, _ := card.Value(e.ev2.AIDBytes(), e.ev2.ValueFile)
		recs, _ := card.Records(e.ev2.AIDBytes(), e.ev2.TopUpLogFile)
		if !res.OK || got.Status != ledger.StatusApplied || got.CardUID != fmt.Sprintf("%X", real) || v != 1100 || len(recs) != 1 {
			t.Fatalf("tear at APDU %d: %+v, ledger %s card %s, value %d in %d records", n, res, got.Status, got.CardUID, v, len(recs))
		}
		cases++
		retapped += res.Retaps
	}
	t.Logf("random-ID EV3: %d tears, %d finished after a re-tap (new random ID) in the same session", cases, retapped)
	if retapped == 0 {
		t.Fatal("no re-tap happened")
	}
}
