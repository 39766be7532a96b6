package hostile

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/coder/websocket"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/desfire/simcard"
	"github.com/desfire-relay/relay/internal/rawbridge"
	"github.com/desfire-relay/relay/internal/testbackend"
	"github.com/desfire-relay/relay/internal/testserver"
	"github.com/desfire-relay/relay/protocol"
	"github.com/desfire-relay/relay/transaction/profile"
)

// randomProfile is AN12113 on cards with a random ID (UID key 4).
func randomProfile() profile.Profile {
	p := profile.AN12113()
	p.Name, p.RandomUID, p.UIDKeyNo = "an12113-ev2-random", true, 4
	return p
}

// rewriteINS returns a hook that rewrites, in the first transceive, the
// answer to the APDU whose INS is ins (the k-th one, 0-based), or, with
// next, the answer of the APDU after it (GetVersion's later frames). A
// forged status other than the card's ends the answers there, as a
// batching bridge stops at an unexpected status.
func rewriteINS(ins byte, k, next int, f func([]byte) []byte) rawbridge.Hook {
	return func(n int, tr *protocol.Transceive, a *rawbridge.Answer) {
		if n != 1 {
			return
		}
		seen := 0
		for i, c := range tr.CAPDUs {
			if len(c.APDU) < 2 || c.APDU[1] != ins {
				continue
			}
			if seen++; seen-1 != k {
				continue
			}
			if j := i + next; j < len(a.RAPDUs) {
				was := a.RAPDUs[j]
				a.RAPDUs[j] = f(append([]byte(nil), was...))
				if len(was) >= 2 && !bytes.Equal(was[len(was)-2:], a.RAPDUs[j][len(a.RAPDUs[j])-2:]) {
					a.RAPDUs = a.RAPDUs[:j+1]
				}
			}
			return
		}
	}
}

// TestFleetLies: one server serves EV2/EV3 and EV1 cards and random-ID
// cards of one application. A bridge lies about what exchange 1 shows
// before any authentication — GetVersion (generation, product, UID), the
// UID it names, the application list (SelectApplication answered
// APPLICATION_NOT_FOUND, the EV2 authentication ILLEGAL_COMMAND). No lie
// ever credits a card other than the one in the field, or twice, or
// leaves the ledger believing a credit the card does not hold; the card
// is credited under keys it holds (a profile of its own application) or
// not at all, and an honest retry then credits it exactly once.
func TestFleetLies(t *testing.T) {
	fleet := []profile.Profile{profile.AN12113(), profile.AN12113EV1(), randomProfile()}
	for _, b := range testbackend.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, b, fleet[0], testserver.Options{Fleet: fleet})
			kinds := []struct {
				name string
				prof profile.Profile
				opts func() simcard.Options
			}{
				{"ev3", fleet[0], func() simcard.Options { return simcard.Options{UID: newUID(), Generation: simcard.GenEV3} }},
				{"ev1", fleet[1], func() simcard.Options { return simcard.Options{UID: newUID(), Generation: simcard.GenEV1} }},
				{"random-ev3", fleet[2], func() simcard.Options {
					return simcard.Options{UID: newUID(), Generation: simcard.GenEV3, RandomUID: true}
				}},
			}
			lies := []struct {
				name string
				hook rawbridge.Hook
				// hello is the UID the bridge names (nil: what the card
				// shows at anticollision), from the card in the field and
				// a bystander card.
				hello func(c, other *simcard.Card) []byte
			}{
				{"version-claims-ev1", rewriteINS(desfire.CmdGetVersion, 0, 0, func(r []byte) []byte { r[3] = 0x01; return r }), nil},
				{"version-claims-ev3", rewriteINS(desfire.CmdGetVersion, 0, 0, func(r []byte) []byte { r[3] = 0x30; return r }), nil},
				{"version-other-product", rewriteINS(desfire.CmdGetVersion, 0, 0, func(r []byte) []byte { r[1] = 0x04; return r }), nil},
				{"version-hides-uid", rewriteINS(desfire.CmdGetVersion, 0, 2, func(r []byte) []byte { copy(r, make([]byte, 7)); return r }), nil},
				{"version-shows-uid", rewriteINS(desfire.CmdGetVersion, 0, 2, func(r []byte) []byte { r[0], r[6] = 0x04, 0x99; return r }), nil},
				{"app-not-found", rewriteINS(desfire.CmdSelectApplication, 1, 0, func([]byte) []byte { return []byte{0x91, 0xA0} }), nil},
				{"ev2-auth-illegal", rewriteINS(0x71, 0, 0, func([]byte) []byte { return []byte{0x91, 0x1C} }), nil},
				{"names-bystander", nil, func(_, other *simcard.Card) []byte { return bridgeUID(other) }},
				{"names-real-uid", nil, func(c, _ *simcard.Card) []byte { return c.UID() }},
				{"names-random-id", nil, func(*simcard.Card, *simcard.Card) []byte { return []byte{0x08, 0x12, 0x34, 0x56} }},
			}
			for _, k := range kinds {
				for _, lie := range lies {
					t.Run(k.name+"/"+lie.name, func(t *testing.T) {
						c := e.h.CardFor(k.prof, k.opts(), 100)
						other := e.h.CardFor(fleet[0], simcard.Options{UID: newUID(), Generation: simcard.GenEV3}, 500)
						ce := &env{h: e.h, p: k.prof, backend: e.backend, batch: true}
						tu := e.topUp(t, 250, nil)
						if err := c.Tap(); err != nil {
							t.Fatal(err)
						}
						hello := bridgeUID(c)
						if lie.hello != nil {
							hello = lie.hello(c, other)
						}
						o := e.raw(t, rawbridge.Options{Token: tu.Token, HelloUID: hello, Card: c, Batch: true, Hook: lie.hook})
						assertClosed(t, o, websocket.StatusNormalClosure)
						status := ce.assertLedger(t, tu, c, 100, &o)
						if v, n := e.credits(t, other, tu.ID); v != 500 || n != 0 {
							t.Fatalf("bystander card changed: value %d, %d credits", v, n)
						}
						if status == "applied" {
							got := e.get(t, tu.ID)
							if got["card_uid"] != fmt.Sprintf("%X", c.UID()) {
								t.Fatalf("applied to %v, the card in the field is %X", got["card_uid"], c.UID())
							}
							if p, _ := got["profile"].(string); p != fleet[0].Name && p != fleet[1].Name && p != fleet[2].Name {
								t.Fatalf("applied under profile %q", p)
							}
							t.Logf("%s/%s: applied once to the card in the field under %v", k.name, lie.name, got["profile"])
						} else {
							t.Logf("%s/%s: refused (%s), ledger %s", k.name, lie.name, o.Code(), status)
						}
						ce.retry(t, tu, c, 100)
						if v, n := e.credits(t, other, tu.ID); v != 500 || n != 0 {
							t.Fatalf("bystander card changed: value %d, %d credits", v, n)
						}
					})
				}
			}
			e.serving(t)
		})
	}
}

// bridgeUID is what an honest bridge names for c: the ID anticollision
// shows (a new random one at each tap for a random-ID card).
func bridgeUID(c *simcard.Card) []byte { return c.AnticollisionUID() }
