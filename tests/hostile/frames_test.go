package hostile

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/desfire-relay/relay/internal/rawbridge"
	"github.com/desfire-relay/relay/protocol"
)

// hostileFrames are frames no honest bridge sends. Each must close the
// session with 1008 wherever it arrives.
func hostileFrames(uid []byte) []struct {
	name   string
	frame  []byte
	binary bool
} {
	hello, _ := json.Marshal(map[string]any{"type": "hello", "bridge": map[string]string{"name": "x"}, "features": []string{"batch"},
		"card": protocol.Card{UID: uid}})
	big := `{"type":"responses","id":1,"rapdus":["9100"],"pad":"` + strings.Repeat("A", protocol.MaxFrame) + `"}`
	return []struct {
		name   string
		frame  []byte
		binary bool
	}{
		{"truncated-json", []byte(`{"type":`), false},
		{"not-json", []byte("\x00\xff garbage"), false},
		{"json-array", []byte(`[1,2,3]`), false},
		{"json-null", []byte(`null`), false},
		{"no-type", []byte(`{"id":1}`), false},
		{"unknown-type", []byte(`{"type":"fly"}`), false},
		{"trailing-data", []byte(`{"type":"cancel"}{"type":"cancel"}`), false},
		{"bad-hex", []byte(`{"type":"responses","id":1,"rapdus":["zz00"]}`), false},
		{"odd-hex", []byte(`{"type":"responses","id":1,"rapdus":["910"]}`), false},
		{"one-byte-rapdu", []byte(`{"type":"responses","id":1,"rapdus":["91"]}`), false},
		{"rapdus-not-list", []byte(`{"type":"responses","id":1,"rapdus":"9100"}`), false},
		{"65-rapdus", []byte(`{"type":"responses","id":1,"rapdus":[` + strings.TrimSuffix(strings.Repeat(`"9100",`, 65), ",") + `]}`), false},
		{"unknown-error", []byte(`{"type":"responses","id":1,"rapdus":[],"error":"exploded"}`), false},
		{"negative-id", []byte(`{"type":"responses","id":-1,"rapdus":["9100"]}`), false},
		{"binary-frame", hello, true},
		{"oversized", []byte(big), false},
		{"second-hello", hello, false},
		{"bad-card-uid", []byte(`{"type":"card","uid":"0102"}`), false},
	}
}

// TestHostileFrames: garbage, binary and oversized frames, unknown types,
// responses before any transceive, a second hello, sent as the first frame,
// after ready while the server waits for a card, or instead of the answer
// to an exchange (the first, or the one carrying the commit, the card
// untouched). Each closes with 1008; the top-up is not applied, the card
// unchanged, and a retry credits exactly once.
func TestHostileFrames(t *testing.T) {
	forEach(t, opts(), func(t *testing.T, e *env) {
		ps := shape(t, e)
		commitEx := 0
		for _, p := range ps {
			if p.afterCommit && commitEx == 0 {
				commitEx = p.n
			}
		}
		phases := []string{"first", "before-card", "exchange-1", fmt.Sprintf("exchange-%d", commitEx)}
		for _, phase := range phases {
			for _, f := range hostileFrames(nil) {
				if phase == "first" && f.name == "second-hello" {
					continue // a first hello is no second hello
				}
				t.Run(phase+"/"+f.name, func(t *testing.T) {
					c := e.card(t, 100)
					tu := e.topUp(t, 250, nil)
					var frame []byte
					for _, g := range hostileFrames(c.UID()) { // hellos name this card
						if g.name == f.name {
							frame = g.frame
						}
					}
					o := rawbridge.Options{Token: tu.Token, Batch: e.batch, Binary: f.binary}
					switch phase {
					case "first":
						o.First = [][]byte{frame}
					case "before-card":
						o.AfterReady = [][]byte{frame}
					default:
						var n int
						fmt.Sscanf(phase, "exchange-%d", &n)
						o.HelloUID, o.Card = c.UID(), c
						o.NoRelay = func(k int) bool { return k == n }
						o.Hook = func(k int, _ *protocol.Transceive, a *rawbridge.Answer) {
							if k == n {
								a.Frames, a.Binary = [][]byte{frame}, f.binary
							}
						}
					}
					out := e.raw(t, o)
					assertClosed(t, out, protocol.CloseProtocol)
					status := e.assertLedger(t, tu, c, 100, &out)
					if phase == "first" || phase == "before-card" {
						got := e.get(t, tu.ID)
						if status != "pending" || got["attempts"] != float64(0) {
							t.Fatalf("no card work, yet the ledger moved: %v", got)
						}
					}
					e.retry(t, tu, c, 100)
				})
			}
		}
		t.Run("responses-before-transceive", func(t *testing.T) {
			c := e.card(t, 100)
			tu := e.topUp(t, 250, nil)
			hello, _ := json.Marshal(map[string]any{"type": "hello", "bridge": map[string]string{}, "features": rawbridge.Features(e.batch), "card": protocol.Card{UID: c.UID()}})
			o := e.raw(t, rawbridge.Options{Token: tu.Token, First: [][]byte{hello, []byte(`{"type":"responses","id":1,"rapdus":[]}`)}})
			assertClosed(t, o, protocol.CloseProtocol)
			if s := e.assertLedger(t, tu, c, 100, &o); s == "applied" {
				t.Fatalf("applied: %v", o)
			}
			e.retry(t, tu, c, 100)
		})
		// The frame limit is 16 KiB exactly: a hello of 16384 bytes is
		// accepted, one byte more is refused.
		for _, size := range []int{protocol.MaxFrame, protocol.MaxFrame + 1} {
			t.Run(fmt.Sprintf("hello-of-%d-bytes", size), func(t *testing.T) {
				c := e.card(t, 100)
				tu := e.topUp(t, 250, nil)
				o := e.raw(t, rawbridge.Options{Token: tu.Token, HelloUID: c.UID(), Card: c, Batch: e.batch, HelloPad: size})
				if size > protocol.MaxFrame {
					assertClosed(t, o, protocol.CloseProtocol)
				} else {
					assertClosed(t, o, websocket.StatusNormalClosure)
					if !o.Result.OK {
						t.Fatalf("hello at the frame limit: %v", o)
					}
				}
				e.assertLedger(t, tu, c, 100, &o)
				e.retry(t, tu, c, 100)
			})
		}
		// Allowed but unusual: a card message in the middle of an exchange
		// (ignored), a cancel instead of an answer (cancelled, not applied).
		t.Run("card-message-mid-exchange", func(t *testing.T) {
			c := e.card(t, 100)
			tu := e.topUp(t, 250, nil)
			o := e.raw(t, rawbridge.Options{Token: tu.Token, HelloUID: c.UID(), Card: c, Batch: e.batch,
				Hook: func(k int, _ *protocol.Transceive, a *rawbridge.Answer) {
					if k == 1 {
						card, _ := json.Marshal(map[string]any{"type": "card", "uid": protocol.HexBytes(newUID())})
						resp, _ := json.Marshal(map[string]any{"type": "responses", "id": a.ID, "rapdus": rawbridge.HexList(a.RAPDUs)})
						a.Frames = [][]byte{card, resp}
					}
				}})
			assertClosed(t, o, websocket.StatusNormalClosure)
			if s := e.assertLedger(t, tu, c, 100, &o); s != "applied" || !o.Result.OK {
				t.Fatalf("a card message mid-exchange broke an honest session: %v", o)
			}
			e.retry(t, tu, c, 100)
		})
		t.Run("cancel-instead-of-answer", func(t *testing.T) {
			c := e.card(t, 100)
			tu := e.topUp(t, 250, nil)
			o := e.raw(t, rawbridge.Options{Token: tu.Token, HelloUID: c.UID(), Card: c, Batch: e.batch,
				Hook: func(k int, _ *protocol.Transceive, a *rawbridge.Answer) {
					if k == 1 {
						a.Frames = [][]byte{[]byte(`{"type":"cancel","reason":"user"}`)}
					}
				}})
			assertClosed(t, o, websocket.StatusNormalClosure)
			if o.Result.OK || o.Code() != "cancelled" {
				t.Fatalf("cancel: %v", o)
			}
			if s := e.assertLedger(t, tu, c, 100, &o); s != "failed" {
				t.Fatalf("cancelled before the commit, ledger %s", s)
			}
			e.retry(t, tu, c, 100)
		})
		e.serving(t)
	})
}
