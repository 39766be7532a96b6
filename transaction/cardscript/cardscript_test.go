package cardscript_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/desfire/simcard"
	"github.com/desfire-relay/relay/internal/testcard"
	"github.com/desfire-relay/relay/transaction/cardscript"
	"github.com/desfire-relay/relay/transaction/keys"
	"github.com/desfire-relay/relay/transaction/profile"
)

var uid = []byte{0x04, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66}

// counter counts round trips; with batch it also offers TransmitBatch.
type counter struct {
	t     desfire.Transport
	trips int
}

func (c *counter) Transmit(ctx context.Context, a []byte) ([]byte, error) {
	c.trips++
	return c.t.Transmit(ctx, a)
}

type batcher struct{ *counter }

func (b batcher) TransmitBatch(ctx context.Context, cmds []desfire.BatchCommand) ([][]byte, error) {
	b.trips++
	return desfire.SequentialBatch(ctx, b.t, cmds)
}

func transport(card desfire.Transport, batch bool) (desfire.Transport, *counter) {
	c := &counter{t: card}
	if batch {
		return batcher{c}, c
	}
	return c, c
}

func setup(t *testing.T, p profile.Profile) (*simcard.Card, keys.Provider) {
	t.Helper()
	kp, _ := testcard.Keys(t, p)
	return testcard.Issue(t, p, kp, uid, 500), kp
}

func params(t testing.TB, p profile.Profile, kp keys.Provider, amount int32) cardscript.TopUpParams {
	tmk := func(ctx context.Context, version byte) ([]byte, error) {
		return kp.CardKey(ctx, keys.Ref{AID: p.AID, Name: keys.TMACName, Version: version}, uid)
	}
	return cardscript.TopUpParams{
		Profile: p, UID: uid, TMACKey: tmk, Amount: amount,
		Record: profile.LogRecord{Timestamp: 1700000000, Amount: amount, Ref: [8]byte{1, 2, 3, 4, 5, 6, 7, 8}},
		Key:    testcard.KeyFunc(p, kp, uid),
	}
}

func TestTopUpExchangeCounts(t *testing.T) {
	cases := []struct {
		p     profile.Profile
		batch bool
		trips int
	}{
		{profile.AN12113(), true, 3},
		{profile.AN12113EV1(), true, 2},
		{profile.AN12113(), false, 0},
		{profile.AN12113EV1(), false, 0},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s/batch=%v", c.p.Name, c.batch), func(t *testing.T) {
			card, kp := setup(t, c.p)
			tr, cnt := transport(card, c.batch)
			committedCalled := false
			pp := params(t, c.p, kp, 250)
			pp.BeforeCommit = func(context.Context) error { committedCalled = true; return nil }
			res, err := cardscript.TopUp(context.Background(), tr, pp)
			if err != nil {
				t.Fatalf("top-up: %v", err)
			}
			if !res.Applied || !res.CommitSent || !committedCalled {
				t.Fatalf("result %+v", res)
			}
			if *res.BalanceBefore != 500 || *res.BalanceAfter != 750 {
				t.Fatalf("balances %d → %d", *res.BalanceBefore, *res.BalanceAfter)
			}
			if c.p.HasTMAC && (res.TMC == nil || *res.TMC != 1 || len(res.TMV) != 8) {
				t.Fatalf("TMAC %v %X", res.TMC, res.TMV)
			}
			if c.trips > 0 && cnt.trips != c.trips {
				t.Fatalf("%d exchanges, want %d", cnt.trips, c.trips)
			}
			t.Logf("%s batch=%v: %d exchanges", c.p.Name, c.batch, cnt.trips)
			// A second top-up on the same card.
			card.Tap()
			tr, _ = transport(card, c.batch)
			res, err = cardscript.TopUp(context.Background(), tr, params(t, c.p, kp, 100))
			if err != nil || *res.BalanceAfter != 850 {
				t.Fatalf("second top-up: %+v %v", res, err)
			}
			if c.p.HasTMAC && *res.TMC != 2 {
				t.Fatalf("TMC %d after the second commit", *res.TMC)
			}
		})
	}
}

func TestBalanceAndRecover(t *testing.T) {
	for _, p := range []profile.Profile{profile.AN12113(), profile.AN12113EV1()} {
		t.Run(p.Name, func(t *testing.T) {
			card, kp := setup(t, p)
			bp := cardscript.BalanceParams{Profile: p, UID: uid, Key: params(t, p, kp, 1).Key}
			b, err := cardscript.Balance(context.Background(), card, bp)
			if err != nil {
				t.Fatalf("balance of a new card: %v", err)
			}
			if b.Value != 500 || len(b.TopUps) != 0 {
				t.Fatalf("new card %+v", b)
			}
			card.Tap()
			if _, err := cardscript.TopUp(context.Background(), card, params(t, p, kp, 40)); err != nil {
				t.Fatal(err)
			}
			card.Tap()
			b, err = cardscript.Balance(context.Background(), card, bp)
			if err != nil || b.Value != 540 || len(b.TopUps) != 1 || b.TopUps[0].Amount != 40 {
				t.Fatalf("after top-up %+v %v", b, err)
			}
			card.Tap()
			r, err := cardscript.Recover(context.Background(), card, bp)
			if err != nil || r.Value != 540 || len(r.TopUps) != 1 || r.TopUps[0].Ref != [8]byte{1, 2, 3, 4, 5, 6, 7, 8} {
				t.Fatalf("recover %+v %v", r, err)
			}
		})
	}
}

func TestTopUpLimit(t *testing.T) {
	p := profile.AN12113()
	card, kp := setup(t, p)
	pp := params(t, p, kp, p.UpperLimit)
	_, err := cardscript.TopUp(context.Background(), card, pp)
	if !errors.Is(err, desfire.ErrBoundary) {
		t.Fatalf("over the limit: %v", err)
	}
	card.Tap()
	b, err := cardscript.Balance(context.Background(), card, cardscript.BalanceParams{Profile: p, UID: uid, Key: pp.Key})
	if err != nil || b.Value != 500 || len(b.TopUps) != 0 {
		t.Fatalf("after refused credit %+v %v", b, err)
	}
}

func TestWrongUIDClaim(t *testing.T) {
	p := profile.AN12113()
	card, kp := setup(t, p)
	pp := params(t, p, kp, 10)
	other := []byte{0x04, 9, 9, 9, 9, 9, 9}
	pp.Key = func(ctx context.Context, no, ver byte) ([]byte, error) {
		return kp.CardKey(ctx, keys.Ref{AID: p.AID, KeyNo: no, Version: ver}, other)
	}
	if _, err := cardscript.TopUp(context.Background(), card, pp); !errors.Is(err, desfire.ErrAuthentication) {
		t.Fatalf("keys of another card: %v", err)
	}
}
