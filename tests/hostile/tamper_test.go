package hostile

import (
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/coder/websocket"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/internal/rawbridge"
	"github.com/desfire-relay/relay/protocol"
)

// insCommit is the native CommitTransaction command code (CLA 90, INS C7
// when wrapped).
const (
	insCommit          = 0xC7
	insGetVersion      = 0x60
	insAdditionalFrame = 0xAF
)

// position is one response of a session: exchange n (1-based), index i in
// its batch, and whether the commit was already sent by then (the bridge
// runs a whole batch on the card before it answers, so a response altered
// in the commit's exchange comes from a card that has committed).
type position struct {
	n, i        int
	ins         byte
	afterCommit bool // the exchange carries the commit or comes after it
	length      int
	// version: a frame of the unauthenticated GetVersion that opens the
	// session (profile detection). It carries nothing the money rests
	// on: altering it may end the session (unknown card, UID disagreeing
	// with the one named) or change nothing at all.
	version bool
}

// shape runs one honest raw session and returns the positions of its
// responses: where a hostile bridge can strike.
func shape(t *testing.T, e *env) []position {
	t.Helper()
	c := e.card(t, 0)
	tu := e.topUp(t, 1, nil)
	o := e.raw(t, rawbridge.Options{Token: tu.Token, HelloUID: c.UID(), Card: c, Batch: e.batch})
	if o.Result == nil || !o.Result.OK || o.Close != websocket.StatusNormalClosure {
		t.Fatalf("honest raw session: %v", o)
	}
	var ps []position
	committed := false
	for n, tr := range o.Transceives {
		for _, c := range tr.CAPDUs {
			if c.APDU[1] == insCommit {
				committed = true
			}
		}
		inVersion := false
		for i, r := range o.Honest[n] {
			ins := tr.CAPDUs[i].APDU[1]
			inVersion = n == 0 && (ins == insGetVersion || inVersion && ins == insAdditionalFrame)
			ps = append(ps, position{n: n + 1, i: i, ins: ins, afterCommit: committed, length: len(r), version: inVersion})
		}
	}
	if !committed {
		t.Fatalf("no commit in the honest session")
	}
	return ps
}

// tamperKinds alter one response APDU (data ‖ MAC ‖ SW1 SW2). Each
// returns false when it does not apply to a response of that length.
var tamperKinds = []struct {
	name string
	f    func(r []byte) ([]byte, bool)
}{
	{"flip-data", func(r []byte) ([]byte, bool) {
		if len(r) < 3 {
			return nil, false
		}
		r[0] ^= 0x01
		return r, true
	}},
	{"flip-mac", func(r []byte) ([]byte, bool) {
		if len(r) < 10 { // no room for an 8-byte MAC
			return nil, false
		}
		r[len(r)-3] ^= 0x80
		return r, true
	}},
	{"flip-sw", func(r []byte) ([]byte, bool) {
		r[len(r)-1] ^= 0x01
		return r, true
	}},
	{"truncate", func(r []byte) ([]byte, bool) {
		if len(r) < 3 {
			return nil, false
		}
		return append(r[:len(r)-3:len(r)-3], r[len(r)-2:]...), true
	}},
	{"extend", func(r []byte) ([]byte, bool) {
		return append(append(r[:len(r)-2:len(r)-2], 0x00), r[len(r)-2:]...), true
	}},
}

// TestAlteredResponses: one response of a top-up is altered (a bit of its
// data, of its MAC or of its status word flipped; one byte cut; one byte
// added), at every response of every exchange. The top-up is applied only
// if the card holds it, never before the card committed, and a legitimate
// retry ends with exactly one credit.
func TestAlteredResponses(t *testing.T) {
	forEach(t, opts(), func(t *testing.T, e *env) {
		ps := shape(t, e)
		var conservative, ignored atomic.Int32
		for _, pos := range ps {
			for _, k := range tamperKinds {
				if _, ok := k.f(make([]byte, pos.length)); !ok {
					continue // e.g. no MAC in a bare status word
				}
				t.Run(fmt.Sprintf("ex%d/rsp%d-%02X/%s", pos.n, pos.i, pos.ins, k.name), func(t *testing.T) {
					c := e.card(t, 100)
					tu := e.topUp(t, 250, nil)
					o := e.raw(t, rawbridge.Options{Token: tu.Token, HelloUID: c.UID(), Card: c, Batch: e.batch,
						Hook: func(n int, tr *protocol.Transceive, a *rawbridge.Answer) {
							if n != pos.n || pos.i >= len(a.RAPDUs) {
								return
							}
							r, _ := k.f(append([]byte(nil), a.RAPDUs[pos.i]...))
							a.RAPDUs[pos.i] = r
							// A bridge that stops after an unexpected status
							// word, as the contract says.
							if sw, err := desfire.StatusWord(r); err == nil {
								if exp, _ := tr.CAPDUs[pos.i].ExpectSW(); !desfire.Expected(exp, sw) {
									a.RAPDUs = a.RAPDUs[:pos.i+1]
								}
							}
						}})
					assertClosed(t, o, websocket.StatusNormalClosure, protocol.CloseProtocol)
					status := e.assertLedger(t, tu, c, 100, &o)
					if !pos.afterCommit {
						// The card answered wrongly before the server sent
						// the commit: the server must notice it (every
						// byte is checked) and the card must stay as it was.
						// in_doubt is allowed (a later batch may carry the
						// commit after a step the server could not yet
						// verify) but counted.
						_, n := e.credits(t, c, tu.ID)
						if pos.version && status == "applied" && n == 1 {
							ignored.Add(1) // an unauthenticated hint, harmlessly altered
						} else if n != 0 || status == "applied" || (o.Result != nil && o.Result.OK) {
							t.Fatalf("altered before the commit, yet the top-up went on: ledger %s, %d credit(s) (%v)", status, n, o)
						}
						if status == "in_doubt" {
							conservative.Add(1)
						}
					}
					e.retry(t, tu, c, 100)
				})
			}
		}
		t.Logf("%d response positions; %d alterations before the commit left the top-up in_doubt instead of failed; %d alterations of GetVersion changed nothing",
			len(ps), conservative.Load(), ignored.Load())
		e.serving(t)
	})
}

// assertClosed checks that the server ended the session with one of the
// given close codes; a missing close code means the server never closed
// the socket (a hung or panicked session).
func assertClosed(t *testing.T, o rawbridge.Outcome, codes ...websocket.StatusCode) {
	t.Helper()
	for _, c := range codes {
		if o.Close == c {
			if c == websocket.StatusNormalClosure && o.Result == nil {
				t.Fatalf("closed 1000 without a result: %v", o)
			}
			return
		}
	}
	t.Fatalf("close code %d, want one of %v (%v)", o.Close, codes, o)
}

// batchViolations break the transceive rules (or the order the card
// answered in) at one exchange.
var batchViolations = []struct {
	name string
	// strict: a protocol violation the server must close with 1008.
	strict bool
	// batchOnly: needs at least two responses.
	batchOnly bool
	f         func(tr *protocol.Transceive, a *rawbridge.Answer)
}{
	{"reordered", false, true, func(_ *protocol.Transceive, a *rawbridge.Answer) {
		for i, j := 0, len(a.RAPDUs)-1; i < j; i, j = i+1, j-1 {
			a.RAPDUs[i], a.RAPDUs[j] = a.RAPDUs[j], a.RAPDUs[i]
		}
	}},
	{"dropped-last", true, false, func(_ *protocol.Transceive, a *rawbridge.Answer) { a.RAPDUs = a.RAPDUs[:len(a.RAPDUs)-1] }},
	{"dropped-all", true, false, func(_ *protocol.Transceive, a *rawbridge.Answer) { a.RAPDUs = [][]byte{} }},
	{"injected-9100", true, false, func(_ *protocol.Transceive, a *rawbridge.Answer) { a.RAPDUs = append(a.RAPDUs, []byte{0x91, 0x00}) }},
	{"duplicated-last", true, false, func(_ *protocol.Transceive, a *rawbridge.Answer) {
		a.RAPDUs = append(a.RAPDUs, a.RAPDUs[len(a.RAPDUs)-1])
	}},
	{"wrong-id-next", true, false, func(_ *protocol.Transceive, a *rawbridge.Answer) { a.ID++ }},
	{"wrong-id-previous", true, false, func(_ *protocol.Transceive, a *rawbridge.Answer) { a.ID-- }}, // id 0 at the first exchange
	{"answered-twice", true, false, func(_ *protocol.Transceive, a *rawbridge.Answer) {
		// The same responses frame twice: the copy arrives during the
		// next exchange, or after the result.
		b, _ := json.Marshal(map[string]any{"type": protocol.TypeResponses, "id": a.ID, "rapdus": rawbridge.HexList(a.RAPDUs)})
		a.Frames = [][]byte{b, b}
	}},
}

// TestBatchViolations: responses reordered within a batch, dropped without
// an error, injected, duplicated, answered under a wrong id or twice, at
// every exchange (batching bridges) or at the exchanges around the commit
// (one command per exchange). Violations close with 1008; nothing is
// applied that the card does not hold; a retry credits exactly once.
func TestBatchViolations(t *testing.T) {
	forEach(t, opts(), func(t *testing.T, e *env) {
		for _, batch := range []bool{true, false} {
			e := *e
			e.batch = batch
			ps := shape(t, &e)
			exchanges := map[int]position{}
			commitEx, last := 0, 0
			for _, p := range ps {
				exchanges[p.n] = p
				if p.ins == insCommit {
					commitEx = p.n
				}
				last = max(last, p.n)
			}
			pick := func(n int) bool { return batch || n == 1 || n == commitEx-1 || n == commitEx || n == last }
			for n := 1; n <= last; n++ {
				if !pick(n) {
					continue
				}
				multi := 0
				for _, p := range ps {
					if p.n == n {
						multi++
					}
				}
				for _, v := range batchViolations {
					if v.batchOnly && multi < 2 {
						continue
					}
					t.Run(fmt.Sprintf("batch=%v/ex%d/%s", batch, n, v.name), func(t *testing.T) {
						c := e.card(t, 100)
						tu := e.topUp(t, 250, nil)
						o := e.raw(t, rawbridge.Options{Token: tu.Token, HelloUID: c.UID(), Card: c, Batch: batch,
							Hook: func(k int, tr *protocol.Transceive, a *rawbridge.Answer) {
								if k == n {
									v.f(tr, a)
								}
							}})
						if v.strict && !(v.name == "answered-twice" && n == last) {
							assertClosed(t, o, protocol.CloseProtocol)
						} else {
							assertClosed(t, o, websocket.StatusNormalClosure, protocol.CloseProtocol)
						}
						status := e.assertLedger(t, tu, c, 100, &o)
						if n < commitEx && status != "failed" && status != "in_doubt" {
							t.Fatalf("violation before the commit's exchange left %s (%v)", status, o)
						}
						e.retry(t, tu, c, 100)
					})
				}
			}
		}
		e.serving(t)
	})
}
