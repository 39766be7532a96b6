package bridge_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/desfire-relay/relay/internal/testbackend"
	"github.com/desfire-relay/relay/internal/testserver"
	"github.com/desfire-relay/relay/mobile-bridge/bridge"
	"github.com/desfire-relay/relay/protocol"
	"github.com/desfire-relay/relay/transaction/profile"
)

// scriptedCard answers every command with the next canned response and
// records what it was sent.
type scriptedCard struct {
	answers [][]byte
	sent    [][]byte
	lostAt  int // 1-based command that finds the card gone (0: never)
}

func (c *scriptedCard) Transmit(_ context.Context, capdu []byte) ([]byte, error) {
	c.sent = append(c.sent, capdu)
	if c.lostAt == len(c.sent) {
		return nil, bridge.ErrTagLost
	}
	if len(c.answers) == 0 {
		return nil, errors.New("no canned answer")
	}
	r := c.answers[0]
	c.answers = c.answers[1:]
	return r, nil
}

// fakeServer accepts one bridge and plays script against it: each step
// either sends a frame or reads one (and hands it to check).
type step struct {
	send  string             // frame to send
	read  bool               // read one frame from the bridge
	check func(string) error // for read steps
	close bool               // close the socket abruptly
}

func fakeServer(t *testing.T, script []step) (url string, errs chan error) {
	t.Helper()
	errs = make(chan error, 1)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{protocol.Subprotocol}})
		if err != nil {
			errs <- err
			return
		}
		defer ws.CloseNow()
		ws.SetReadLimit(1 << 20)
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		for _, s := range script {
			switch {
			case s.close:
				ws.CloseNow()
				errs <- nil
				return
			case s.read:
				_, b, err := ws.Read(ctx)
				if err != nil {
					errs <- err
					return
				}
				if s.check != nil {
					if err := s.check(string(b)); err != nil {
						errs <- err
						return
					}
				}
			default:
				if err := ws.Write(ctx, websocket.MessageText, []byte(s.send)); err != nil {
					errs <- err
					return
				}
			}
		}
		errs <- nil
		// Hold the socket until the bridge goes, as a server would.
		ws.Read(ctx)
	}))
	t.Cleanup(hs.Close)
	return "ws" + strings.TrimPrefix(hs.URL, "http"), errs
}

func runAgainst(t *testing.T, url string, card *scriptedCard) (*bridge.Report, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return bridge.Run(ctx, bridge.Options{URL: url, Token: "t", Batch: true, Name: "test", Platform: "sim"},
		card, bridge.CardInfo{UID: []byte{4, 1, 2, 3, 4, 5, 6}})
}

const (
	ready  = `{"type":"ready","session_id":"s","kind":"balance"}`
	okDone = `{"type":"result","ok":true,"kind":"balance","session_id":"s","balance":5,"currency":"EUR"}`
)

// TestMalformedServerMessages: whatever the server sends, the bridge ends
// with an error (or ignores what the contract says to ignore) and never
// panics or hangs.
func TestMalformedServerMessages(t *testing.T) {
	cases := []struct {
		name    string
		frames  []string
		close   bool
		wantErr string // substring; "" means success
	}{
		{"bad json", []string{ready, `{"type":`}, false, "protocol"},
		{"not an object", []string{`[1,2,3]`}, false, "protocol"},
		{"transceive bad hex", []string{ready, `{"type":"transceive","id":1,"capdus":[{"apdu":"zz"}]}`}, false, "protocol"},
		{"transceive no commands", []string{ready, `{"type":"transceive","id":1,"capdus":[]}`}, false, "protocol"},
		{"transceive bad expect", []string{ready, `{"type":"transceive","id":1,"capdus":[{"apdu":"9060000000","expect":["91"]}]}`}, false, "protocol"},
		{"result without ok", []string{ready, `{"type":"result","kind":"balance"}`}, false, "session failed"},
		{"oversized frame", []string{ready, `{"type":"prompt","text":"` + strings.Repeat("a", protocol.MaxFrame) + `"}`}, false, "connection ended"},
		{"closed before result", []string{ready}, true, "connection ended"},
		{"unknown type ignored", []string{ready, `{"type":"future","x":1}`, okDone}, false, ""},
		{"unknown fields ignored", []string{`{"type":"ready","session_id":"s","kind":"balance","extra":{"a":1}}`, okDone}, false, ""},
		{"failed result", []string{ready, `{"type":"result","ok":false,"kind":"balance","session_id":"s","error":{"code":"card_unknown","message":"m"}}`}, false, "card_unknown"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			script := []step{{read: true}} // hello
			for _, f := range c.frames {
				script = append(script, step{send: f})
			}
			if c.close {
				script = append(script, step{close: true})
			}
			url, errs := fakeServer(t, script)
			_, err := runAgainst(t, url, &scriptedCard{})
			if serr := <-errs; serr != nil {
				t.Fatalf("fake server: %v", serr)
			}
			switch {
			case c.wantErr == "" && err != nil:
				t.Fatalf("err = %v, want success", err)
			case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
				t.Fatalf("err = %v, want one mentioning %q", err, c.wantErr)
			}
		})
	}
}

// TestTransceiveRules: the bridge stops at the first status word outside
// the command's expect list (9000/9100 by default) and answers once with
// what it has, in order; a lost card is reported as tag_lost.
func TestTransceiveRules(t *testing.T) {
	cases := []struct {
		name      string
		capdus    string
		card      scriptedCard
		wantSent  int
		wantReply string
	}{
		{"all expected", `[{"apdu":"9001000000"},{"apdu":"9002000000"},{"apdu":"9003000000"}]`,
			scriptedCard{answers: [][]byte{{0x90, 0x00}, {0x91, 0x00}, {0xAA, 0x91, 0x00}}}, 3,
			`"rapdus":["9000","9100","AA9100"]`},
		{"stop at unexpected", `[{"apdu":"9001000000"},{"apdu":"9002000000"},{"apdu":"9003000000"}]`,
			scriptedCard{answers: [][]byte{{0x90, 0x00}, {0x91, 0xAE}, {0x90, 0x00}}}, 2,
			`"rapdus":["9000","91AE"]`},
		{"expect list allows 91AF", `[{"apdu":"9001000000","expect":["91AF"]},{"apdu":"9002000000"}]`,
			scriptedCard{answers: [][]byte{{0x91, 0xAF}, {0x91, 0x00}}}, 2,
			`"rapdus":["91AF","9100"]`},
		{"expect list refuses 9100", `[{"apdu":"9001000000","expect":["91AF"]},{"apdu":"9002000000"}]`,
			scriptedCard{answers: [][]byte{{0x91, 0x00}, {0x91, 0x00}}}, 1,
			`"rapdus":["9100"]`},
		{"card lost on second", `[{"apdu":"9001000000"},{"apdu":"9002000000"},{"apdu":"9003000000"}]`,
			scriptedCard{answers: [][]byte{{0x90, 0x00}, {0x90, 0x00}}, lostAt: 2}, 2,
			`"error":"tag_lost"`},
		{"one-byte answer stops", `[{"apdu":"9001000000"},{"apdu":"9002000000"}]`,
			scriptedCard{answers: [][]byte{{0x90}, {0x90, 0x00}}}, 1,
			`"rapdus":["90"]`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var reply string
			url, errs := fakeServer(t, []step{
				{read: true},
				{send: ready},
				{send: `{"type":"transceive","id":1,"capdus":` + c.capdus + `}`},
				{read: true, check: func(s string) error { reply = s; return nil }},
				{send: okDone},
			})
			card := c.card
			if _, err := runAgainst(t, url, &card); err != nil {
				t.Fatalf("run: %v", err)
			}
			if serr := <-errs; serr != nil {
				t.Fatalf("fake server: %v", serr)
			}
			if len(card.sent) != c.wantSent {
				t.Errorf("sent %d commands, want %d", len(card.sent), c.wantSent)
			}
			if !strings.Contains(strings.ToUpper(reply), strings.ToUpper(c.wantReply)) || !strings.Contains(reply, `"id":1`) {
				t.Errorf("reply %s lacks %s", reply, c.wantReply)
			}
		})
	}
}

// TestServerGone: a refused token and an unreachable server end with an
// error naming the cause.
func TestServerGone(t *testing.T) {
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, `{"error":{"code":"unauthorized"}}`, http.StatusUnauthorized)
	}))
	url := "ws" + strings.TrimPrefix(hs.URL, "http")
	if _, err := runAgainst(t, url, &scriptedCard{}); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("refused token: err = %v, want HTTP 401", err)
	}
	hs.Close()
	if _, err := runAgainst(t, url, &scriptedCard{}); err == nil || !strings.Contains(err.Error(), "connect") {
		t.Fatalf("server gone: err = %v, want a connect error", err)
	}
}

// TestTagLostThenNextTap runs against the real server: the card leaves the
// field in the middle of a top-up, the bridge reports tag_lost, and a new
// token on the next tap settles the top-up with exactly one credit, for
// every APDU the card could leave at.
func TestTagLostThenNextTap(t *testing.T) {
	for _, name := range []string{"an12113-ev2", "an12113-ev1"} {
		p, err := profile.DefaultSet().Get(name)
		if err != nil {
			t.Fatal(err)
		}
		t.Run(name, func(t *testing.T) {
			h := testserver.New(t, testbackend.Backends()[0], p, testserver.Options{})
			// Count the APDUs of a whole top-up first.
			probe := h.Card([]byte{4, 0x70, 0, 0, 0, 0, 1}, 0)
			_, tok := h.TopUp("probe-"+name, 100, "")
			rep, err := h.Bridge(tok, probe, true)
			if err != nil {
				t.Fatal(err)
			}
			total, retried := rep.Commands, 0
			defer func() {
				t.Logf("%d APDUs per top-up; %d tears settled on the next tap", total, retried)
				if retried == 0 {
					t.Error("no tear needed a second tap: the test exercised nothing")
				}
			}()
			for k := 1; k <= total; k++ {
				uid := []byte{4, 0x71, 0, 0, 0, byte(k >> 8), byte(k)}
				card := h.Card(uid, 1000)
				id, tok := h.TopUp(fmt.Sprintf("%s-lost-%d", name, k), 250, "")
				card.RemoveAfter(k - 1) // the k-th APDU finds the card gone
				rep, err := h.Bridge(tok, card, true)
				if err == nil {
					// Only a card that leaves after the verified commit
					// (reading its balance back) may end in success.
					v, verr := card.Value(p.AIDBytes(), p.ValueFile)
					if rep.Result.Status != "applied" || h.Status(id) != "applied" || verr != nil || v != 1250 {
						t.Fatalf("k=%d: session succeeded with the card gone: %+v, card %d %v", k, rep.Result, v, verr)
					}
					continue
				}
				if rep == nil || rep.Result.Error == nil || rep.Result.Error.Code != "tag_lost" {
					t.Fatalf("k=%d: result %+v, want error tag_lost", k, rep)
				}
				st := h.Status(id)
				if st == "applied" {
					t.Fatalf("k=%d: applied while the card left before the answer", k)
				}
				retried++
				// Next tap: a fresh token, the card back in the field.
				if err := card.Tap(); err != nil { // also disarms RemoveAfter
					t.Fatal(err)
				}
				code, out := h.API("POST", "/v1/topups/"+id+"/bridge-tokens", "", nil)
				if code != http.StatusCreated && code != http.StatusOK {
					t.Fatalf("k=%d: new token: HTTP %d %v", k, code, out)
				}
				tok2, _ := out["bridge_token"].(string)
				rep2, err := h.Bridge(tok2, card, true)
				if err != nil {
					// The commit may have reached the card before it left:
					// then the top-up was settled as applied by this tap and
					// a new session for it is not payable.
					if h.Status(id) != "applied" {
						t.Fatalf("k=%d: retry: %v (status %s)", k, err, h.Status(id))
					}
				} else if rep2.Result.Status != "applied" {
					t.Fatalf("k=%d: retry status %s", k, rep2.Result.Status)
				}
				if st := h.Status(id); st != "applied" {
					t.Fatalf("k=%d: status after the next tap %s, want applied", k, st)
				}
				v, err := card.Value(p.AIDBytes(), p.ValueFile)
				if err != nil {
					t.Fatal(err)
				}
				if v != 1250 {
					t.Fatalf("k=%d (first session %s): card value %d, want 1250 (exactly one credit)", k, st, v)
				}
			}
		})
	}
}

// TestRetapWithinSession runs against the real server: the card leaves
// the field at every APDU of a top-up; the server prompts for it again,
// the bridge presents it (Options.Retap) and the same session finishes
// with the top-up applied and exactly one credit on the card — no new
// token.
func TestRetapWithinSession(t *testing.T) {
	for _, name := range []string{"an12113-ev2", "an12113-ev1"} {
		p, err := profile.DefaultSet().Get(name)
		if err != nil {
			t.Fatal(err)
		}
		t.Run(name, func(t *testing.T) {
			h := testserver.New(t, testbackend.Backends()[0], p, testserver.Options{})
			probe := h.Card([]byte{4, 0x72, 0, 0, 0, 0, 1}, 0)
			_, tok := h.TopUp("probe-"+name, 100, "")
			rep, err := h.Bridge(tok, probe, true)
			if err != nil {
				t.Fatal(err)
			}
			total, retapped := rep.Commands, 0
			for k := 1; k <= total; k++ {
				uid := []byte{4, 0x73, 0, 0, 0, byte(k >> 8), byte(k)}
				card := h.Card(uid, 1000)
				id, tok := h.TopUp(fmt.Sprintf("%s-retap-%d", name, k), 250, "")
				card.RemoveAfter(k - 1)
				taps := 0
				ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				rep, err := bridge.Run(ctx, bridge.Options{URL: h.WSURL(), Token: tok, Name: "test", Version: "1", Platform: "sim", Batch: true,
					Retap: func(context.Context) (bridge.CardInfo, error) {
						taps++
						return bridge.CardInfo{UID: uid}, card.Tap()
					}}, bridge.Sim{Card: card}, bridge.CardInfo{UID: uid})
				cancel()
				if err != nil || rep.Result.Status != "applied" {
					t.Fatalf("k=%d: %v (%+v)", k, err, rep)
				}
				v, err := card.Value(p.AIDBytes(), p.ValueFile)
				if err != nil || v != 1250 || h.Status(id) != "applied" {
					t.Fatalf("k=%d: card value %d (%v), ledger %s: want exactly one credit", k, v, err, h.Status(id))
				}
				retapped += taps
			}
			t.Logf("%d APDUs per top-up; %d tears finished by a re-tap in the same session", total, retapped)
			if retapped < total-2 {
				t.Fatalf("only %d of %d tears were re-tapped", retapped, total)
			}
		})
	}
}
