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

// counting is a batching bridge that counts its exchanges: one per
// Transmit or TransmitBatch, each one wide-area round trip.
type counting struct {
	t desfire.Transport
	n int
}

func (c *counting) Transmit(ctx context.Context, a []byte) ([]byte, error) {
	c.n++
	return c.t.Transmit(ctx, a)
}

func (c *counting) TransmitBatch(ctx context.Context, cmds []desfire.BatchCommand) ([][]byte, error) {
	c.n++
	return desfire.SequentialBatch(ctx, c.t, cmds)
}

type countingBridge struct{ c *counting }

func (b countingBridge) Transport() desfire.Transport     { return b.c }
func (countingBridge) Prompt(transaction.Prompt, float64) {}

// TestExchangeCountsPerSession pins the exchanges of every session kind
// on a batching bridge, as docs/ARCHITECTURE.md publishes them: a clean
// top-up (EV2 3, EV1 2), a retry that settles its own in_doubt from the
// card's log, a new top-up on a card that left another one in_doubt (the
// log is read and settled before the credit), and a balance lookup. Log
// reads longer than one frame take one exchange per extra frame, so the
// figures hold for the records this test leaves on the card (two to four).
func TestExchangeCountsPerSession(t *testing.T) {
	want := map[string]map[string]int{
		profile.AN12113().Name:    {"clean": 3, "settle-own": 4, "settle-other": 6, "balance": 5},
		profile.AN12113EV1().Name: {"clean": 2, "settle-own": 3, "settle-other": 5, "balance": 6},
	}
	for _, p := range []profile.Profile{profile.AN12113(), profile.AN12113EV1()} {
		t.Run(p.Name, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, p, sqliteLedger(t), lock.NewMemory())
			uid := fmt.Sprintf("%X", testUID)
			got := map[string]int{}
			run := func(name string, tk *transaction.Ticket, tr desfire.Transport) transaction.Result {
				t.Helper()
				e.card.Tap()
				c := &counting{t: tr}
				res := e.svc.Run(ctx, e.open(t, tk), uid, countingBridge{c})
				got[name] = c.n
				return res
			}
			create := func(idem string) (ledger.TopUp, *transaction.Ticket) {
				t.Helper()
				tu, tk, _, err := e.svc.CreateTopUp(ctx, idem, ledger.Request{Amount: 100, Currency: "EUR"})
				if err != nil {
					t.Fatal(err)
				}
				return tu, tk
			}
			_, tk := create("clean")
			if res := run("clean", tk, e.card); !res.OK {
				t.Fatalf("clean top-up: %+v", res)
			}
			// Left in_doubt: the card commits, the bridge reports tag_lost.
			doubt, tk := create("doubt")
			run("torn", tk, &tagLostAfterCommit{t: e.card})
			tk, err := e.svc.TopUpTicket(ctx, doubt.ID)
			if err != nil {
				t.Fatal(err)
			}
			if res := run("settle-own", tk, e.card); !res.OK || res.Status != ledger.StatusApplied.String() {
				t.Fatalf("retry of its own in_doubt: %+v", res)
			}
			doubt, tk = create("doubt-2")
			run("torn", tk, &tagLostAfterCommit{t: e.card})
			_, tk = create("other")
			if res := run("settle-other", tk, e.card); !res.OK {
				t.Fatalf("top-up after another one's in_doubt: %+v", res)
			}
			if tu, _ := e.svc.GetTopUp(ctx, doubt.ID); tu.Status != ledger.StatusApplied {
				t.Fatalf("the earlier in_doubt top-up is %s", tu.Status)
			}
			tk, err = e.svc.BalanceTicket(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if res := run("balance", tk, e.card); !res.OK || res.Balance == nil || *res.Balance != 400 {
				t.Fatalf("balance: %+v", res)
			}
			for name, n := range want[p.Name] {
				t.Logf("%s %s: %d exchanges", p.Name, name, got[name])
				if got[name] != n {
					t.Errorf("%s: %d exchanges, want %d", name, got[name], n)
				}
			}
		})
	}
}
