// Package fleet runs a mixed card population against one server through
// the real bridge WebSocket: EV1, EV2 and EV3 cards of two applications,
// 4-, 7- and 10-byte UIDs, a Transaction MAC key of version 0, a card
// requiring CommitReaderID, a card with a random ID, on the
// embedded ledger and on Redis + PostgreSQL.
package fleet

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/desfire-relay/relay/desfire/simcard"
	"github.com/desfire-relay/relay/internal/testbackend"
	"github.com/desfire-relay/relay/internal/testserver"
	"github.com/desfire-relay/relay/mobile-bridge/bridge"
	"github.com/desfire-relay/relay/transaction/profile"
)

// transit is a second application of the fleet, on EV3 cards only.
func transit() profile.Profile {
	p := profile.AN12113()
	p.Name, p.AID, p.Generations = "transit-ev3", 0x015500, []string{profile.GenEV3}
	return p
}

// kind is one sort of card in the population.
type kind struct {
	name string
	prof profile.Profile
	gen  simcard.Generation
	uid  func(n int) []byte
	// first and known: exchanges on a batching bridge for the card's
	// first tap and for later ones (the server remembers its kind).
	first, known int
	// rid: the card's Transaction MAC file requires CommitReaderID, which
	// its profile does not announce (the first tap learns it from the
	// authenticated settings and finishes in the same session).
	rid bool
}

func uid7(tag byte) func(int) []byte {
	return func(n int) []byte { return []byte{4, tag, 0, 0, 0, byte(n >> 8), byte(n)} }
}

// randomID is AN12113 on cards with a random ID (UID key 4).
func randomID() profile.Profile {
	p := profile.AN12113()
	p.Name, p.RandomUID, p.UIDKeyNo = "an12113-ev2-random", true, 4
	return p
}

func population() []kind {
	ev2, ev1 := profile.AN12113(), profile.AN12113EV1()
	return []kind{
		{"ev2", ev2, simcard.GenEV2, uid7(0x31), 3, 3, false},
		{"ev3-4byte", ev2, simcard.GenEV3, func(n int) []byte { return []byte{0x3F, 0x32, byte(n >> 8), byte(n)} }, 3, 3, false},
		{"ev1", ev1, simcard.GenEV1, uid7(0x33), 3, 2, false},
		{"ev1-10byte", ev1, simcard.GenEV1, func(n int) []byte { return []byte{4, 0x34, 0, 0, 0, 0, 0, 0, byte(n >> 8), byte(n)} }, 3, 2, false},
		{"ev3-transit", transit(), simcard.GenEV3, uid7(0x35), 5, 3, false},
		{"ev3-commit-reader-id", ev2, simcard.GenEV3, uid7(0x36), 7, 3, true},
		{"ev3-random-id", randomID(), simcard.GenEV3, uid7(0x37), 5, 5, false},
	}
}

// session runs one honest bridge session for card, naming what
// anticollision shows (a random-ID card's ID of this tap).
func session(t *testing.T, h *testserver.Harness, token string, card *simcard.Card) (*bridge.Report, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return bridge.Run(ctx, bridge.Options{URL: h.WSURL(), Token: token, Name: "fleet", Version: "1", Platform: "sim", Batch: true},
		bridge.Sim{Card: card}, bridge.Sim{Card: card}.Info())
}

// TestMixedPopulation: every kind of card is topped up through the real
// WebSocket with the right balance, in the published exchanges; a card
// lifted at any APDU of its top-up is credited exactly once after the next
// tap (a new token for the same top-up).
func TestMixedPopulation(t *testing.T) {
	for _, b := range testbackend.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			pop := population()
			fleet := []profile.Profile{profile.AN12113(), profile.AN12113EV1(), transit(), randomID()}
			h := testserver.New(t, b, fleet[0], testserver.Options{Fleet: fleet})
			for _, k := range pop {
				t.Run(k.name, func(t *testing.T) {
					n := 0
					newCard := func() (*simcard.Card, []byte) {
						n++
						uid := k.uid(n)
						issued := k.prof
						issued.CommitReaderID = k.rid
						return h.CardFor(issued, simcard.Options{UID: uid, Generation: k.gen, RandomUID: k.prof.RandomUID}, 1000), uid
					}
					value := func(c *simcard.Card) int32 {
						v, err := c.Value(k.prof.AIDBytes(), k.prof.ValueFile)
						if err != nil {
							t.Fatal(err)
						}
						return v
					}
					// Two clean top-ups: first tap, then a known card.
					card, uid := newCard()
					total := 0
					for i, want := range []int{k.first, k.known} {
						id, tok := h.TopUp(fmt.Sprintf("%s-%s-clean-%d", b.Name, k.name, i), 100, "")
						rep, err := session(t, h, tok, card)
						if err != nil || rep.Result.Status != "applied" || h.Status(id) != "applied" {
							t.Fatalf("tap %d: %v %+v", i+1, err, rep)
						}
						if v := value(card); v != 1000+100*int32(i+1) {
							t.Fatalf("tap %d: card value %d", i+1, v)
						}
						if rep.Exchanges != want {
							t.Fatalf("tap %d: %d exchanges, want %d", i+1, rep.Exchanges, want)
						}
						code, got := h.API("GET", "/v1/topups/"+id, "", nil)
						if code != 200 || got["status"] != "applied" || got["profile"] != k.prof.Name {
							t.Fatalf("read back: %d %v", code, got)
						}
						if got["card_uid"] != fmt.Sprintf("%X", uid) {
							t.Fatalf("read back: card %v, want the real UID %X", got["card_uid"], uid)
						}
						if _, ok := got["reader_id"]; ok != k.rid {
							t.Fatalf("read back: reader ID %v, want one: %v", got["reader_id"], k.rid)
						}
						total = rep.Commands
						card.Tap()
					}
					// A tear at every APDU of a known card's top-up.
					retried := 0
					for at := 1; at <= total; at++ {
						card, _ := newCard()
						// Teach the server the card's kind, as a first tap would.
						_, tok := h.TopUp(fmt.Sprintf("%s-%s-warm-%d", b.Name, k.name, at), 1, "")
						if rep, err := session(t, h, tok, card); err != nil {
							t.Fatalf("warm-up: %v %+v", err, rep)
						}
						card.Tap()
						id, tok := h.TopUp(fmt.Sprintf("%s-%s-tear-%d", b.Name, k.name, at), 250, "")
						card.RemoveAfter(at - 1)
						if _, err := session(t, h, tok, card); err == nil {
							if v := value(card); v != 1251 || h.Status(id) != "applied" {
								t.Fatalf("tear at %d: success with card %d, ledger %s", at, v, h.Status(id))
							}
							continue
						}
						retried++
						card.Tap()
						code, out := h.API("POST", "/v1/topups/"+id+"/bridge-tokens", "", nil)
						if tok2, ok := out["bridge_token"].(string); (code == 201 || code == 200) && ok {
							session(t, h, tok2, card)
						} else if h.Status(id) != "applied" {
							t.Fatalf("tear at %d: new token %d %v", at, code, out)
						}
						if v, st := value(card), h.Status(id); v != 1251 || st != "applied" {
							t.Fatalf("tear at %d: card %d, ledger %s after the next tap: want exactly one credit", at, v, st)
						}
					}
					t.Logf("%s: %d/%d exchanges (first/known tap), %d APDUs, %d tears settled by the next tap", k.name, k.first, k.known, total, retried)
					if retried == 0 {
						t.Fatal("no tear needed a second tap")
					}
				})
			}
		})
	}
}

// TestSchemeThroughAPI: POST /v1/topups may name the card profile; an
// unserved name is invalid_request, a card of another profile is
// card_unknown with nothing written, a card of the named profile is
// credited, and the top-up view shows the request's profile.
func TestSchemeThroughAPI(t *testing.T) {
	b := testbackend.Backends()[0]
	ev2, ev1 := profile.AN12113(), profile.AN12113EV1()
	h := testserver.New(t, b, ev2, testserver.Options{Fleet: []profile.Profile{ev2, ev1}})
	code, out := h.API("POST", "/v1/topups", "scheme-bad", map[string]any{"amount": 100, "currency": "EUR", "profile": "nope"})
	if code != 400 || out["error"] == nil {
		t.Fatalf("unserved profile: %d %v", code, out)
	}
	code, out = h.API("POST", "/v1/topups", "scheme-ev1", map[string]any{"amount": 100, "currency": "EUR", "profile": ev1.Name})
	if code != 201 || out["requested_profile"] != ev1.Name {
		t.Fatalf("create: %d %v", code, out)
	}
	id, tok := out["id"].(string), out["bridge_token"].(string)
	wrong := h.CardFor(ev2, simcard.Options{UID: []byte{4, 0x38, 0, 0, 0, 0, 1}, Generation: simcard.GenEV3}, 1000)
	rep, _ := session(t, h, tok, wrong)
	if v, _ := wrong.Value(ev2.AIDBytes(), ev2.ValueFile); rep == nil || rep.Result.Error == nil || rep.Result.Error.Code != "card_unknown" || h.Status(id) != "failed" || v != 1000 {
		t.Fatalf("card of another profile: %+v, ledger %s, value %d", rep, h.Status(id), v)
	}
	code, out = h.API("POST", "/v1/topups/"+id+"/bridge-tokens", "", nil)
	if code != 201 && code != 200 {
		t.Fatalf("new token: %d %v", code, out)
	}
	right := h.CardFor(ev1, simcard.Options{UID: []byte{4, 0x38, 0, 0, 0, 0, 2}, Generation: simcard.GenEV1}, 1000)
	rep, err := session(t, h, out["bridge_token"].(string), right)
	if v, _ := right.Value(ev1.AIDBytes(), ev1.ValueFile); err != nil || h.Status(id) != "applied" || v != 1100 {
		t.Fatalf("card of the named profile: %v %+v, ledger %s, value %d", err, rep, h.Status(id), v)
	}
}
