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

// rollProfile is p on cards whose keys change themselves, rolled forward.
func rollProfile(p profile.Profile) profile.Profile {
	p.Name += "-roll"
	p.RollForward = true
	return p
}

type rollEnv struct {
	svc *transaction.Service
	l   ledger.Ledger
	kp  *keys.Static
	p   profile.Profile
}

// newRollEnv serves p with its top-up key in versions 1 (issuance) and 2.
func newRollEnv(t *testing.T, p profile.Profile) *rollEnv {
	t.Helper()
	_, f := testcard.Keys(t, p)
	f.Keys = append(f.Keys, keys.Entry{AID: fmt.Sprintf("%06X", p.AID), KeyNo: p.TopUpKeyNo, Version: 2, Key: strings.Repeat("5A", 16), Diversify: true})
	kp, err := keys.New(f)
	if err != nil {
		t.Fatal(err)
	}
	svc, l := sqliteService(t, transaction.Config{Keys: kp, Profile: p.Name}, p)
	return &rollEnv{svc: svc, l: l, kp: kp, p: p}
}

// apduCounter counts the APDUs sent to the card.
type apduCounter struct {
	t desfire.Transport
	n int
}

func (a *apduCounter) Transmit(ctx context.Context, c []byte) ([]byte, error) {
	a.n++
	return a.t.Transmit(ctx, c)
}

// topUp runs top-up id (created, or a fresh ticket for it) on card,
// torn after tear APDUs (negative: never). It returns the result, the
// exchanges, the APDUs and the stored top-up.
func (e *rollEnv) topUp(t *testing.T, card *simcard.Card, id string, tear int) (transaction.Result, int, int, ledger.TopUp) {
	t.Helper()
	ctx := context.Background()
	tu, sess, ok := openTopUp(t, e.svc, id)
	if !ok {
		return transaction.Result{OK: true}, 0, 0, tu
	}
	card.Tap()
	card.RemoveAfter(tear)
	a := &apduCounter{t: card}
	c := &counting{t: a}
	res := e.svc.Run(ctx, sess, hex.EncodeToString(card.UID()), countingBridge{c})
	got, _ := e.l.GetTopUp(ctx, tu.ID)
	return res, c.n, a.n, got
}

func (e *rollEnv) cardKey(t *testing.T, card *simcard.Card) (byte, ledger.CardKey) {
	t.Helper()
	_, v, err := card.Key(e.p.AIDBytes(), int(e.p.TopUpKeyNo))
	if err != nil {
		t.Fatal(err)
	}
	ck, _ := e.l.(ledger.CardKeys).GetCardKey(context.Background(), hex.EncodeToString(card.UID()), e.p.AID, e.p.TopUpKeyNo)
	return v, ck
}

// TestRollForward: a card holding version 1 of the top-up key gets
// version 2 after its top-up (one more exchange: ChangeKey of the
// session's own key), recorded in flight before the ChangeKey leaves;
// its next tap authenticates with version 2 (GetKeyVersion tells) and
// proves it. A card already at the newest version costs nothing more.
func TestRollForward(t *testing.T) {
	for _, base := range []profile.Profile{profile.AN12113(), profile.AN12113EV1()} {
		p := rollProfile(base)
		t.Run(p.Name, func(t *testing.T) {
			e := newRollEnv(t, p)
			card := testcard.IssueCard(t, p, e.kp, simcard.Options{UID: testUID}, 1000)
			clean := 3
			if p.Auth == profile.AuthEV1 {
				clean = 2
			}
			res, n, _, got := e.topUp(t, card, "roll-1", -1)
			v, ck := e.cardKey(t, card)
			if !res.OK || got.Status != ledger.StatusApplied || v != 2 || ck.Version != 1 || ck.Pending == nil || *ck.Pending != 2 {
				t.Fatalf("tap 1: %+v, ledger %s, card key v%d, record %+v", res, got.Status, v, ck)
			}
			t.Logf("%s tap 1 (rolls key %d to v2): %d exchanges", p.Name, p.TopUpKeyNo, n)
			if n != clean+1 {
				t.Fatalf("tap 1: %d exchanges, want %d", n, clean+1)
			}
			res, n, _, got = e.topUp(t, card, "roll-2", -1)
			v, ck = e.cardKey(t, card)
			if !res.OK || got.Status != ledger.StatusApplied || v != 2 || ck.Version != 2 || ck.Pending != nil {
				t.Fatalf("tap 2: %+v, ledger %s, card key v%d, record %+v", res, got.Status, v, ck)
			}
			t.Logf("%s tap 2 (key v2 proven): %d exchanges", p.Name, n)
			if n != clean {
				t.Fatalf("tap 2: %d exchanges, want %d", n, clean)
			}
			if val, _ := card.Value(p.AIDBytes(), p.ValueFile); val != 1200 {
				t.Fatalf("card value %d, want 1200", val)
			}
		})
	}
}

// TestRollForwardTear: a tear at every APDU of a top-up that rolls the key
// forward (the credit and the ChangeKey) ends, over the next taps, in
// exactly one credit per top-up, the card on version 2 and the ledger
// agreeing with nothing in flight.
func TestRollForwardTear(t *testing.T) {
	p := rollProfile(profile.AN12113())
	e := newRollEnv(t, p)
	for n := 0; ; n++ {
		uid := []byte{4, 0x61, 2, 3, 4, byte(n >> 8), byte(n)}
		card := testcard.IssueCard(t, p, e.kp, simcard.Options{UID: uid}, 1000)
		id := fmt.Sprintf("roll-tear-%d", n)
		_, _, apdus, _ := e.topUp(t, card, id, n)
		if res, _, _, got := e.topUp(t, card, id, -1); !res.OK || got.Status != ledger.StatusApplied {
			t.Fatalf("tear after %d APDUs: next tap %+v, ledger %s", n, res, got.Status)
		}
		for i := 0; i < 2; i++ { // roll forward if still needed, then prove
			if res, _, _, got := e.topUp(t, card, fmt.Sprintf("%s-after-%d", id, i), -1); !res.OK || got.Status != ledger.StatusApplied {
				t.Fatalf("tear after %d APDUs: later tap %+v, ledger %s", n, res, got.Status)
			}
		}
		v, ck := e.cardKey(t, card)
		val, _ := card.Value(p.AIDBytes(), p.ValueFile)
		if val != 1300 || v != 2 || ck.Version != 2 || ck.Pending != nil {
			t.Fatalf("tear after %d APDUs: card value %d (want 1300), key v%d, record %+v", n, val, v, ck)
		}
		if apdus <= n {
			t.Logf("%d tear points (credit and ChangeKey), each ends in one credit per top-up and the key on v2", n)
			return
		}
	}
}

// answerLost relays every APDU to the card and loses the answer to the
// first one with native code ins (the command ran on the card).
type answerLost struct {
	t    desfire.Transport
	ins  byte
	done bool
}

func (a *answerLost) Transmit(ctx context.Context, c []byte) ([]byte, error) {
	out, err := a.t.Transmit(ctx, c)
	if !a.done && len(c) > 1 && c[1] == a.ins {
		a.done = true
		return nil, fmt.Errorf("answer lost: %w", simcard.ErrCardRemoved)
	}
	return out, err
}

// TestRollForwardAnswerLost: the ChangeKey ran on the card but its answer
// never came back. The top-up stands, the ledger keeps version 2 in
// flight, and the next tap authenticates with version 2 (GetKeyVersion)
// and proves it.
func TestRollForwardAnswerLost(t *testing.T) {
	p := rollProfile(profile.AN12113())
	e := newRollEnv(t, p)
	card := testcard.IssueCard(t, p, e.kp, simcard.Options{UID: testUID}, 1000)
	ctx := context.Background()
	_, tk, _, err := e.svc.CreateTopUp(ctx, "lost-1", ledger.Request{Amount: 100, Currency: "EUR"})
	if err != nil {
		t.Fatal(err)
	}
	sess, err := e.svc.OpenSession(ctx, tk.Token)
	if err != nil {
		t.Fatal(err)
	}
	card.Tap()
	res := e.svc.Run(ctx, sess, hex.EncodeToString(card.UID()), countingBridge{&counting{t: &answerLost{t: card, ins: desfire.CmdChangeKey}}})
	v, ck := e.cardKey(t, card)
	if !res.OK || v != 2 || ck.Version != 1 || ck.Pending == nil || *ck.Pending != 2 {
		t.Fatalf("answer lost: %+v, card key v%d, record %+v", res, v, ck)
	}
	res2, _, _, got := e.topUp(t, card, "lost-2", -1)
	v, ck = e.cardKey(t, card)
	if !res2.OK || got.Status != ledger.StatusApplied || v != 2 || ck.Version != 2 || ck.Pending != nil {
		t.Fatalf("next tap: %+v, card key v%d, record %+v", res2, v, ck)
	}
}
