package hostile

import (
	"context"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"sync/atomic"
	"testing"

	"github.com/coder/websocket"

	"github.com/desfire-relay/relay/desfire/simcard"
	"github.com/desfire-relay/relay/internal/rawbridge"
	"github.com/desfire-relay/relay/internal/testbackend"
	"github.com/desfire-relay/relay/protocol"
)

// statusFull runs the whole forged-status matrix (make hostile); CI runs
// the reduced one.
var statusFull = flag.Bool("hostile.full", os.Getenv("HOSTILE") == "full", "run the full forged-status matrix (same as HOSTILE=full)")

// forgedStatuses are the bare answers a lying bridge sends instead of the
// card's: status words carry no MAC, so each must prove nothing. The
// empty string is an empty answer.
var forgedStatuses = []string{"9000", "9100", "91AE", "91BE", "91F0", "919D", "917E", "91CA", "910C", "911E", "91EE", "6A82", "6700", ""}

// reducedStatuses are CI's subset: success words, the boundary error of
// the original bug, an authentication error and an empty answer.
var reducedStatuses = []string{"9100", "91BE", "91AE", "910C", ""}

// statusTally is what the suite prints in one line.
var statusTally struct {
	cases, doubleCredits, lostTopUps, wronglyApplied, wronglyFailed atomic.Int64
}

func init() {
	atExit = append(atExit, func() {
		if n := statusTally.cases.Load(); n > 0 {
			fmt.Printf("hostile-status: cases=%d double_credits=%d lost_topups=%d wrongly_applied=%d wrongly_failed=%d\n",
				n, statusTally.doubleCredits.Load(), statusTally.lostTopUps.Load(), statusTally.wronglyApplied.Load(), statusTally.wronglyFailed.Load())
		}
	})
}

// sessionKind is one kind of session a bridge can lie in: what happens
// to the card and the top-up before it, and which token it runs on.
type sessionKind struct {
	name string
	// setup prepares the card and the top-up (tear = "", "before" or
	// "after" the commit reached the card).
	tear    string
	balance bool // the session is a balance lookup, not the top-up's retry
	// applied: the top-up is applied honestly before the session (a
	// balance lookup on a card with a log record).
	applied bool
	// reversal: the entry under test is the reversal of a credit applied
	// honestly before (a debit of the same amount).
	reversal bool
}

var sessionKinds = []sessionKind{
	{name: "topup"},
	{name: "balance", balance: true, applied: true},
	{name: "topup-retap-tear-before-commit", tear: "before"},
	{name: "topup-retap-tear-after-commit", tear: "after"},
	{name: "balance-tap-tear-before-commit", tear: "before", balance: true},
	{name: "balance-tap-tear-after-commit", tear: "after", balance: true},
	{name: "reversal", reversal: true},
}

// TestForgedStatus: for every APDU position of every session kind, the
// card's answer is replaced by a bare status word (or nothing); then the
// card is tapped honestly until the top-up settles. After every case the
// card holds exactly one credit, the ledger agrees, and nothing was
// applied without proof.
func TestForgedStatus(t *testing.T) {
	statuses, batches := reducedStatuses, []bool{true}
	if *statusFull {
		statuses, batches = forgedStatuses, []bool{true, false}
	}
	backends := testbackend.Backends()
	if !*statusFull {
		backends = backends[:1] // the embedded backend; make hostile runs every one
	}
	forEachOf(t, backends, opts(), func(t *testing.T, e *env) {
		for _, batch := range batches {
			eb := *e
			eb.batch = batch
			for _, k := range sessionKinds {
				t.Run(fmt.Sprintf("batch=%v/%s", batch, k.name), func(t *testing.T) {
					ps := eb.statusShape(t, k)
					for _, pos := range ps {
						for _, sw := range statuses {
							name := sw
							if name == "" {
								name = "empty"
							}
							t.Run(fmt.Sprintf("ex%d-rsp%d-%02X/%s", pos.n, pos.i, pos.ins, name), func(t *testing.T) {
								eb.forgedCase(t, k, pos, sw)
							})
						}
					}
				})
			}
		}
		e.serving(t)
	})
}

// statusSetup prepares a card and a top-up for kind k and returns them
// with the card's base value (before the top-up's credit).
func (e *env) statusSetup(t *testing.T, k sessionKind) (*simcard.Card, topUp, int32) {
	t.Helper()
	const base = 100
	c := e.card(t, base)
	tu := e.topUp(t, 250, nil)
	if k.reversal {
		return c, e.reversalOf(t, tu, c), base + 250
	}
	switch {
	case k.applied:
		rep, err := e.honest(t, tu.Token, c)
		if err != nil || !rep.Result.OK {
			t.Fatalf("setup top-up: %v %+v", err, rep)
		}
	case k.tear != "":
		o := e.raw(t, rawbridge.Options{Token: tu.Token, HelloUID: c.UID(), Batch: e.batch, Hook: func(n int, tr *protocol.Transceive, a *rawbridge.Answer) {
			if carriesCommit([]*protocol.Transceive{tr}) {
				if k.tear == "after" {
					rawbridge.Relay(context.Background(), c, tr, 0)
				}
				a.RAPDUs, a.Error = nil, protocol.BridgeErrTagLost
				return
			}
			a.RAPDUs, a.Error = rawbridge.Relay(context.Background(), c, tr, 0)
		}})
		if s := e.get(t, tu.ID)["status"]; s != "in_doubt" {
			t.Fatalf("setup tear %s the commit: top-up is %v (%v)", k.tear, s, o)
		}
		if _, n := e.credits(t, c, tu.ID); n != map[string]int{"before": 0, "after": 1}[k.tear] {
			t.Fatalf("setup tear %s the commit: card holds %d credits", k.tear, n)
		}
	}
	if err := c.Tap(); err != nil {
		t.Fatal(err)
	}
	return c, tu, base
}

// statusSession runs the session under test on c with hook.
func (e *env) statusSession(t *testing.T, k sessionKind, c *simcard.Card, tu topUp, h rawbridge.Hook) rawbridge.Outcome {
	t.Helper()
	var tok string
	switch {
	case k.balance:
		_, out := e.api(t, "POST", "/v1/sessions", map[string]any{"kind": "balance"})
		tok, _ = out["bridge_token"].(string)
	case k.tear == "":
		tok = tu.Token
	default:
		code, tk, out := e.newToken(t, tu.ID)
		if code != 201 {
			t.Fatalf("retry token: HTTP %d %v", code, out)
		}
		tok = tk
	}
	return e.raw(t, rawbridge.Options{Token: tok, HelloUID: c.UID(), Card: c, Batch: e.batch, Hook: h})
}

// statusShape runs kind k honestly once and returns its response positions.
func (e *env) statusShape(t *testing.T, k sessionKind) []position {
	t.Helper()
	c, tu, _ := e.statusSetup(t, k)
	o := e.statusSession(t, k, c, tu, nil)
	if o.Result == nil || !o.Result.OK || o.Close != websocket.StatusNormalClosure {
		t.Fatalf("honest %s session: %v", k.name, o)
	}
	var ps []position
	for n, tr := range o.Transceives {
		for i := range o.Honest[n] {
			ps = append(ps, position{n: n + 1, i: i, ins: tr.CAPDUs[i].APDU[1], length: len(o.Honest[n][i])})
		}
	}
	return ps
}

// forgedCase is one cell of the matrix.
func (e *env) forgedCase(t *testing.T, k sessionKind, pos position, sw string) {
	c, tu, base := e.statusSetup(t, k)
	forged, err := hex.DecodeString(sw)
	if err != nil {
		t.Fatal(err)
	}
	o := e.statusSession(t, k, c, tu, func(n int, tr *protocol.Transceive, a *rawbridge.Answer) {
		if n != pos.n || pos.i >= len(a.RAPDUs) {
			return
		}
		// The lie, and a bridge that stops there as the contract says.
		a.RAPDUs = append(a.RAPDUs[:pos.i:pos.i], forged)
	})
	assertClosed(t, o, websocket.StatusNormalClosure, protocol.CloseProtocol)
	statusTally.cases.Add(1)
	if o.Result != nil && o.Result.OK && o.Result.Balance != nil && *o.Result.Balance != int64(e.value(t, c)) {
		t.Errorf("result ok with balance %d, card holds %d (%v)", *o.Result.Balance, e.value(t, c), o)
	}
	status, _ := e.get(t, tu.ID)["status"].(string)
	_, n := e.credits(t, c, tu.ID)
	switch {
	case status == "applied" && n != 1:
		statusTally.wronglyApplied.Add(1)
		t.Errorf("after the forged answer the ledger says applied, the card holds %d credits (%v)", n, o)
	case (status == "failed" || status == "pending") && n != 0:
		statusTally.wronglyFailed.Add(1)
		t.Errorf("after the forged answer the ledger says %s, the card holds the credit (%v)", status, o)
	}
	e.settle(t, tu, c)
	v, n := e.credits(t, c, tu.ID)
	status, _ = e.get(t, tu.ID)["status"].(string)
	switch {
	case n > 1:
		statusTally.doubleCredits.Add(1)
		t.Errorf("credited %d times (ledger %s)", n, status)
	case n == 0 || status != "applied":
		statusTally.lostTopUps.Add(1)
		t.Errorf("not settled: ledger %s, card holds %d credits", status, n)
	case v != base+tu.delta():
		t.Errorf("card value %d, want %d", v, base+tu.delta())
	}
	count(t)
}

// settle taps the card honestly, at most three times, until the top-up
// is applied: with a new token for the top-up (a balance lookup first
// when it is in_doubt, as a passenger checking the card would).
func (e *env) settle(t *testing.T, tu topUp, c *simcard.Card) {
	t.Helper()
	for i := 0; i < 3; i++ {
		status, _ := e.get(t, tu.ID)["status"].(string)
		if status == "applied" {
			return
		}
		if status == "in_doubt" && i == 0 {
			e.balance(t, c)
			continue
		}
		code, tok, out := e.newToken(t, tu.ID)
		if code != 201 {
			t.Fatalf("retry token from %s: HTTP %d %v", status, code, out)
		}
		if _, err := e.honest(t, tok, c); err != nil {
			t.Logf("honest retry from %s: %v", status, err)
		}
	}
}

// reversalOf applies credit honestly on c, then asks for its reversal and
// returns the reversal entry (with its bridge token) as the entry under
// test.
func (e *env) reversalOf(t *testing.T, credit topUp, c *simcard.Card) topUp {
	t.Helper()
	rep, err := e.honest(t, credit.Token, c)
	if err != nil || !rep.Result.OK {
		t.Fatalf("setup credit: %v %+v", err, rep)
	}
	if err := c.Tap(); err != nil {
		t.Fatal(err)
	}
	code, out := e.api(t, "POST", "/v1/topups/"+credit.ID+"/reversal", nil)
	if code != 201 {
		t.Fatalf("reversal: HTTP %d %v", code, out)
	}
	rv := topUp{Amount: credit.Amount, reversal: true}
	rv.ID, _ = out["id"].(string)
	rv.Token, _ = out["bridge_token"].(string)
	return rv
}
