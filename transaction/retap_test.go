package transaction_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/transaction"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/lock"
	"github.com/desfire-relay/relay/transaction/profile"
)

// tearAt relays to the card and reports the card lost at the n-th
// command APDU (1-based): the card sees commands before it, and when
// after is set the n-th as well (the answer is what gets lost).
type tearAt struct {
	t     desfire.Transport
	n     int
	after bool
	seen  int
	lost  bool
}

func (a *tearAt) Transmit(ctx context.Context, apdu []byte) ([]byte, error) {
	if a.lost {
		return nil, desfire.ErrTagLost
	}
	a.seen++
	if a.seen == a.n {
		a.lost = true
		if a.after {
			a.t.Transmit(ctx, apdu)
		}
		return nil, desfire.ErrTagLost
	}
	return a.t.Transmit(ctx, apdu)
}

// retapBridge is a batching bridge whose card leaves the field per tear
// and comes back when the server asks, up to times.
type retapBridge struct {
	tear  *tearAt
	card  interface{ Tap() error }
	uid   string
	times int
	asked int
}

func (b *retapBridge) Transport() desfire.Transport     { return batched{b} }
func (*retapBridge) Prompt(transaction.Prompt, float64) {}
func (b *retapBridge) Transmit(ctx context.Context, a []byte) ([]byte, error) {
	return b.tear.Transmit(ctx, a)
}
func (b *retapBridge) AwaitCard(context.Context) (string, error) {
	b.asked++
	if b.asked > b.times {
		return "", errors.New("passenger walked away")
	}
	b.card.Tap()
	b.tear.lost, b.tear.n = false, 0 // honest from now on
	return b.uid, nil
}

// TestRetapWithinSession: the card leaves the field at every APDU of a
// top-up (before and after the card executed it); the server asks for it
// again within the same session, which then ends applied with exactly one
// credit, whichever side of the commit the tear fell. A card that never
// comes back leaves the outcome to the evidence (failed before the
// commit, in_doubt after), and a different card presented again is
// refused.
func TestRetapWithinSession(t *testing.T) {
	for _, p := range []profile.Profile{profile.AN12113(), profile.AN12113EV1()} {
		cases, retapped := 0, 0
		for _, after := range []bool{false, true} {
			for n := 1; ; n++ {
				ctx := context.Background()
				e := newEnv(t, p, sqliteLedger(t), lock.NewMemory())
				tu, tk, _, err := e.svc.CreateTopUp(ctx, "retap", ledger.Request{Amount: 70, Currency: "EUR"})
				if err != nil {
					t.Fatal(err)
				}
				uid := fmt.Sprintf("%X", testUID)
				tear := &tearAt{t: e.card, n: n, after: after}
				b := &retapBridge{tear: tear, card: e.card, uid: uid, times: 1}
				res := e.svc.Run(ctx, e.open(t, tk), uid, b)
				if tear.seen < n {
					break // every APDU position covered
				}
				got, _ := e.svc.GetTopUp(ctx, tu.ID)
				v, recs := e.cardState(t)
				if !res.OK || got.Status != ledger.StatusApplied || res.Retaps > 1 || v != 70 || recs != 1 {
					t.Fatalf("%s tear at APDU %d (after=%v): result %+v, ledger %s, card %d in %d records",
						p.Name, n, after, res, got.Status, v, recs)
				}
				cases++
				retapped += res.Retaps
			}
		}
		t.Logf("%s: %d tears, %d finished after a re-tap in the same session", p.Name, cases, retapped)
		if retapped == 0 || cases < 10 {
			t.Fatalf("%s: %d tears, %d re-taps", p.Name, cases, retapped)
		}
		t.Run(p.Name+"/other-card", func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, p, sqliteLedger(t), lock.NewMemory())
			_, tk, _, err := e.svc.CreateTopUp(ctx, "retap-other", ledger.Request{Amount: 70, Currency: "EUR"})
			if err != nil {
				t.Fatal(err)
			}
			tear := &tearAt{t: e.card, n: 2}
			b := &retapBridge{tear: tear, card: e.card, uid: "04112233445566", times: 1}
			res := e.svc.Run(ctx, e.open(t, tk), fmt.Sprintf("%X", testUID), b)
			if res.OK || res.Reason != transaction.ReasonCardMismatch || res.Retaps != 0 {
				t.Fatalf("a different card presented again: %+v", res)
			}
		})
	}
}
