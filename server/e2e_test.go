package server_test

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/desfire-relay/relay/internal/testbackend"
	"github.com/desfire-relay/relay/internal/testserver"
	"github.com/desfire-relay/relay/mobile-bridge/bridge"
	"github.com/desfire-relay/relay/protocol"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/profile"
)

var cardUID = []byte{0x04, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60}

// newHarness starts the real server for one test over backend b and card
// profile p, with the given per-exchange deadline.
func newHarness(t *testing.T, b testbackend.Backend, p profile.Profile, exchange time.Duration) *testserver.Harness {
	t.Helper()
	return testserver.New(t, b, p, testserver.Options{ExchangeTimeout: exchange})
}

func backends(t *testing.T) []testbackend.Backend { return testbackend.Backends() }

func TestEndToEndTopUpAndBalance(t *testing.T) {
	for _, b := range backends(t) {
		for _, p := range []profile.Profile{profile.AN12113(), profile.AN12113EV1()} {
			for _, batch := range []bool{true, false} {
				t.Run(fmt.Sprintf("%s/%s/batch=%v", b.Name, p.Name, batch), func(t *testing.T) {
					h := newHarness(t, b, p, 3*time.Second)
					card := h.Card(cardUID, 100)
					code, tu := h.API("POST", "/v1/topups", "idem-1", map[string]any{"amount": 250, "currency": "EUR", "reference": "order 42"})
					if code != 201 || tu["status"] != "pending" || tu["bridge_token"] == nil {
						t.Fatalf("create: %d %v", code, tu)
					}
					rep, err := h.Bridge(tu["bridge_token"].(string), card, batch)
					if err != nil {
						t.Fatalf("bridge: %v (%+v)", err, rep)
					}
					if !rep.Result.OK || rep.Result.Status != "applied" || *rep.Result.Balance != 350 {
						t.Fatalf("result %+v", rep.Result)
					}
					if batch {
						want := map[profile.Auth]int{profile.AuthEV2: 3, profile.AuthEV1: 2}[p.Auth]
						if rep.Exchanges != want {
							t.Fatalf("%d exchanges, want %d", rep.Exchanges, want)
						}
					}
					code, got := h.API("GET", "/v1/topups/"+tu["id"].(string), "", nil)
					if code != 200 || got["status"] != "applied" || got["balance_after"].(float64) != 350 || got["card_uid"] != strings.ToUpper(hex.EncodeToString(cardUID)) {
						t.Fatalf("read back: %d %v", code, got)
					}
					if p.HasTMAC && got["tmac"] == nil {
						t.Fatal("no TMAC in the ledger")
					}
					// Idempotent create: same key and body → same top-up, 200.
					code, again := h.API("POST", "/v1/topups", "idem-1", map[string]any{"amount": 250, "currency": "EUR", "reference": "order 42"})
					if code != 200 || again["id"] != tu["id"] || again["status"] != "applied" {
						t.Fatalf("replay: %d %v", code, again)
					}
					code, conflict := h.API("POST", "/v1/topups", "idem-1", map[string]any{"amount": 251, "currency": "EUR"})
					if code != 409 || conflict["error"].(map[string]any)["code"] != "idempotency_conflict" {
						t.Fatalf("conflict: %d %v", code, conflict)
					}
					// Balance lookup.
					card.Tap()
					code, s := h.API("POST", "/v1/sessions", "", map[string]any{"kind": "balance"})
					if code != 201 {
						t.Fatalf("balance session: %d %v", code, s)
					}
					rep, err = h.Bridge(s["bridge_token"].(string), card, batch)
					if err != nil || *rep.Result.Balance != 350 || rep.Result.CardUID == "" || len(rep.Result.Records) != 1 {
						t.Fatalf("balance: %v %+v", err, rep.Result)
					}
					code, so := h.API("GET", "/v1/sessions/"+s["session_id"].(string), "", nil)
					if code != 200 || so["status"] != "ok" || so["balance"].(float64) != 350 {
						t.Fatalf("session outcome: %d %v", code, so)
					}
					code, hist := h.API("GET", "/v1/cards/"+hex.EncodeToString(cardUID)+"/topups", "", nil)
					if code != 200 || len(hist["topups"].([]any)) != 1 {
						t.Fatalf("history: %d %v", code, hist)
					}
				})
			}
		}
	}
}

func TestInDoubtRetry(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			h := newHarness(t, b, profile.AN12113(), 3*time.Second)
			card := h.Card(cardUID, 0)
			_, tu := h.API("POST", "/v1/topups", "k", map[string]any{"amount": 500, "currency": "EUR"})
			card.SetTearAfterCommit(true)
			rep, err := h.Bridge(tu["bridge_token"].(string), card, true)
			if err == nil || rep.Result.Status != "in_doubt" || rep.Result.Error.Code != "tag_lost" {
				t.Fatalf("torn session: %v %+v", err, rep)
			}
			card.Tap()
			code, tk := h.API("POST", "/v1/topups/"+tu["id"].(string)+"/bridge-tokens", "", nil)
			if code != 201 {
				t.Fatalf("new token: %d %v", code, tk)
			}
			rep, err = h.Bridge(tk["bridge_token"].(string), card, true)
			if err != nil || rep.Result.Status != "applied" {
				t.Fatalf("retry: %v %+v", err, rep.Result)
			}
			_, got := h.API("GET", "/v1/topups/"+tu["id"].(string), "", nil)
			if got["status"] != "applied" {
				t.Fatalf("status %v", got["status"])
			}
			card.Tap()
			_, s := h.API("POST", "/v1/sessions", "", map[string]any{"kind": "balance"})
			rep, _ = h.Bridge(s["bridge_token"].(string), card, true)
			if *rep.Result.Balance != 500 {
				t.Fatalf("credited %d, want exactly 500", *rep.Result.Balance)
			}
		})
	}
}

func dial(h *testserver.Harness, header http.Header, query string, subprotocols ...string) (*websocket.Conn, *http.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return websocket.Dial(ctx, h.WSURL()+query, &websocket.DialOptions{HTTPHeader: header, Subprotocols: subprotocols})
}

func TestBridgeTokenRefusals(t *testing.T) {
	h := newHarness(t, testbackend.Backends()[0], profile.AN12113(), 3*time.Second)
	_, a := h.API("POST", "/v1/topups", "a", map[string]any{"amount": 1, "currency": "EUR"})
	tokA := a["bridge_token"].(string)
	bearer := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }
	cases := []struct {
		name   string
		header http.Header
		query  string
		subp   []string
		status int
	}{
		{"missing token", nil, "", []string{protocol.Subprotocol}, 401},
		{"unknown token", bearer("nope"), "", []string{protocol.Subprotocol}, 401},
		{"no subprotocol", bearer(tokA), "", nil, 400},
		// The query form is off by default, and refusing it burns nothing.
		{"token in the query", nil, "?token=" + tokA, []string{protocol.Subprotocol}, 400},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, resp, err := dial(h, c.header, c.query, c.subp...)
			if err == nil || resp == nil || resp.StatusCode != c.status {
				t.Fatalf("err %v, resp %v", err, resp)
			}
		})
	}
	// The token works once, then is refused.
	card := h.Card(cardUID, 0)
	ctx := context.Background()
	rep, err := bridge.Run(ctx, bridge.Options{URL: h.WSURL(), Token: tokA, Batch: true}, bridge.Sim{Card: card}, bridge.CardInfo{UID: card.UID()})
	if err != nil || !rep.Result.OK {
		t.Fatalf("first use: %v", err)
	}
	if _, resp, err := dial(h, bearer(tokA), "", protocol.Subprotocol); err == nil || resp.StatusCode != 401 {
		t.Fatalf("reused token: %v", err)
	}
	// A token for top-up B only ever pays B.
	_, bb := h.API("POST", "/v1/topups", "b", map[string]any{"amount": 7, "currency": "EUR"})
	card.Tap()
	rep, err = h.Bridge(bb["bridge_token"].(string), card, true)
	if err != nil || rep.Result.TopUpID != bb["id"] || *rep.Result.Amount != 7 {
		t.Fatalf("token B: %v %+v", err, rep.Result)
	}
	// Expired token.
	_, cc := h.API("POST", "/v1/topups", "c", map[string]any{"amount": 7, "currency": "EUR"})
	_, err = h.Ledger.ConsumeToken(ctx, hashOf(cc["bridge_token"].(string)), time.Now().Add(time.Hour))
	if !errors.Is(err, ledger.ErrTokenExpired) {
		t.Fatalf("expired token: %v", err)
	}
}

func hashOf(tok string) []byte {
	h := sha256Sum([]byte(tok))
	return h[:]
}

// rawSession connects with a fresh top-up token and returns the socket.
func rawSession(t *testing.T, h *testserver.Harness, key string) (*websocket.Conn, string) {
	t.Helper()
	_, tu := h.API("POST", "/v1/topups", key, map[string]any{"amount": 10, "currency": "EUR"})
	c, _, err := dial(h, http.Header{"Authorization": {"Bearer " + tu["bridge_token"].(string)}}, "", protocol.Subprotocol)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadLimit(-1)
	return c, tu["id"].(string)
}

func closeCode(c *websocket.Conn) websocket.StatusCode {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	for {
		if _, _, err := c.Read(ctx); err != nil {
			return websocket.CloseStatus(err)
		}
	}
}

func TestHostileFramesClose1008(t *testing.T) {
	h := newHarness(t, testbackend.Backends()[0], profile.AN12113(), 2*time.Second)
	cases := map[string]string{
		"bad json":     `{"type":`,
		"unknown type": `{"type":"fly"}`,
		"oversized":    `{"type":"hello","bridge":{"name":"` + strings.Repeat("x", protocol.MaxFrame) + `"}}`,
		"not hello":    `{"type":"card","uid":"04102030405060"}`,
	}
	for name, frame := range cases {
		t.Run(name, func(t *testing.T) {
			c, id := rawSession(t, h, "hostile-"+name)
			defer c.CloseNow()
			c.Write(context.Background(), websocket.MessageText, []byte(frame))
			if code := closeCode(c); code != protocol.CloseProtocol {
				t.Fatalf("close code %d", code)
			}
			_, tu := h.API("GET", "/v1/topups/"+id, "", nil)
			if tu["status"] != "pending" || tu["attempts"].(float64) != 0 {
				t.Fatalf("ledger touched: %v", tu)
			}
		})
	}
}

func TestSilentBridge4408(t *testing.T) {
	h := newHarness(t, testbackend.Backends()[0], profile.AN12113(), 300*time.Millisecond)
	c, id := rawSession(t, h, "silent")
	defer c.CloseNow()
	if code := closeCode(c); code != protocol.CloseTooSlow {
		t.Fatalf("close code %d", code)
	}
	// A bridge that says hello with a card and then never answers.
	c2, id2 := rawSession(t, h, "silent-2")
	defer c2.CloseNow()
	c2.Write(context.Background(), websocket.MessageText, []byte(`{"type":"hello","bridge":{},"features":["batch"],"card":{"uid":"04102030405060"}}`))
	if code := closeCode(c2); code != protocol.CloseTooSlow {
		t.Fatalf("close code after hello %d", code)
	}
	for _, x := range []string{id, id2} {
		_, tu := h.API("GET", "/v1/topups/"+x, "", nil)
		if tu["status"] != "pending" && tu["status"] != "failed" {
			t.Fatalf("silent bridge left %v", tu["status"])
		}
	}
}

func TestGracefulShutdownDuringSession(t *testing.T) {
	h := newHarness(t, testbackend.Backends()[0], profile.AN12113(), 3*time.Second)
	card := h.Card(cardUID, 0)
	card.SetDelay(50 * time.Millisecond)
	_, tu := h.API("POST", "/v1/topups", "g", map[string]any{"amount": 5, "currency": "EUR"})
	done := make(chan *bridge.Report, 1)
	go func() {
		rep, _ := h.Bridge(tu["bridge_token"].(string), card, false)
		done <- rep
	}()
	time.Sleep(150 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.Server.Drain(ctx); err != nil {
		t.Fatalf("drain: %v", err)
	}
	rep := <-done
	if rep == nil || rep.Result.Status != "applied" {
		t.Fatalf("session during shutdown: %+v", rep)
	}
	// New sessions are refused while draining.
	_, tu2 := h.API("POST", "/v1/topups", "g2", map[string]any{"amount": 5, "currency": "EUR"})
	if _, resp, err := dial(h, http.Header{"Authorization": {"Bearer " + tu2["bridge_token"].(string)}}, "", protocol.Subprotocol); err == nil || resp.StatusCode != 503 {
		t.Fatalf("session accepted while draining: %v", err)
	}
}
