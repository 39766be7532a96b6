package transaction_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/transaction"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/lock"
	"github.com/desfire-relay/relay/transaction/profile"
)

// forger relays to the card but answers every command with native code
// ins (CLA 90) itself, with the bare status word sw: what a lying bridge
// can send for any command, since status words carry no MAC.
type forger struct {
	t   desfire.Transport
	ins byte
	sw  []byte
	hit int
}

func (f *forger) Transmit(ctx context.Context, a []byte) ([]byte, error) {
	if len(a) > 1 && a[0] == 0x90 && a[1] == f.ins {
		f.hit++
		return append([]byte(nil), f.sw...), nil
	}
	return f.t.Transmit(ctx, a)
}

// tagLostAfterCommit relays everything; once CommitTransaction went
// reached the card, it reports the card lost: the card holds the credit, the
// server never sees the proof.
type tagLostAfterCommit struct {
	t         desfire.Transport
	committed bool
}

func (l *tagLostAfterCommit) Transmit(ctx context.Context, a []byte) ([]byte, error) {
	if l.committed {
		return nil, transaction.ErrTagLost
	}
	r, err := l.t.Transmit(ctx, a)
	if len(a) > 1 && a[0] == 0x90 && a[1] == desfire.CmdCommitTransaction {
		l.committed = true
		return nil, transaction.ErrTagLost // the card committed; its answer is lost
	}
	return r, err
}

// TestForgedBoundaryErrorOnLogRead is the regression for the lying bridge
// of the "exactly-once" issue: the commit reaches the card, the bridge
// reports tag_lost (in_doubt), then on the next tap — a retry of the
// top-up or a balance lookup — it answers the top-up log read with a bare
// 91BE. A boundary error proves nothing: the top-up must stay in_doubt,
// and the next honest tap settles it as applied, with exactly one credit
// on the card. (Before the fix the server took 91BE for "log empty",
// marked the top-up failed and the honest retry credited it again.)
func TestForgedBoundaryErrorOnLogRead(t *testing.T) {
	for _, p := range []profile.Profile{profile.AN12113(), profile.AN12113EV1()} {
		for _, next := range []string{"topup", "balance"} {
			t.Run(fmt.Sprintf("%s/next=%s", p.Name, next), func(t *testing.T) {
				ctx := context.Background()
				e := newEnv(t, p, sqliteLedger(t), lock.NewMemory())
				tu, tk, _, err := e.svc.CreateTopUp(ctx, "forged-91be", ledger.Request{Amount: 450, Currency: "EUR"})
				if err != nil {
					t.Fatal(err)
				}
				uid := fmt.Sprintf("%X", testUID)
				res := e.svc.Run(ctx, e.open(t, tk), uid, bridge{t: &tagLostAfterCommit{t: e.card}})
				if got, _ := e.svc.GetTopUp(ctx, tu.ID); got.Status != ledger.StatusInDoubt || res.OK {
					t.Fatalf("after tag_lost past the commit: %s (%+v)", got.Status, res)
				}
				e.card.Tap()
				// The lying tap.
				f := &forger{t: e.card, ins: desfire.CmdReadRecords, sw: []byte{0x91, 0xBE}}
				var tk2 *transaction.Ticket
				if next == "topup" {
					tk2, err = e.svc.TopUpTicket(ctx, tu.ID)
				} else {
					tk2, err = e.svc.BalanceTicket(ctx)
				}
				if err != nil {
					t.Fatal(err)
				}
				res = e.svc.Run(ctx, e.open(t, tk2), uid, bridge{t: f, batch: true})
				if f.hit == 0 {
					t.Fatalf("the log was never read (%+v)", res)
				}
				got, _ := e.svc.GetTopUp(ctx, tu.ID)
				if got.Status != ledger.StatusInDoubt || res.OK {
					t.Fatalf("a forged 91BE on the log read moved the top-up to %s (%+v)", got.Status, res)
				}
				e.card.Tap()
				// An honest retry settles it from the card's log.
				tk3, err := e.svc.TopUpTicket(ctx, tu.ID)
				if err != nil {
					t.Fatal(err)
				}
				res = e.run(t, e.open(t, tk3), true)
				got, _ = e.svc.GetTopUp(ctx, tu.ID)
				v, n := e.cardState(t)
				if got.Status != ledger.StatusApplied || v != 450 || n != 1 {
					t.Fatalf("after the honest tap: ledger %s, card %d with %d records (%+v)", got.Status, v, n, res)
				}
			})
		}
	}
}
