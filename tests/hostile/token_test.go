package hostile

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"

	"github.com/desfire-relay/relay/internal/rawbridge"
	"github.com/desfire-relay/relay/internal/testbackend"
	"github.com/desfire-relay/relay/internal/testserver"
	"github.com/desfire-relay/relay/protocol"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/profile"
)

// TestTokenMisuse: tokens reused after success or after a hostile session,
// raced by several bridges, expired, unknown, malformed, in the query and
// the header, a balance token, tokens for a top-up already applied, API
// key and bridge token swapped. Refusals are HTTP 401 before the upgrade
// (409 for a new token of an applied top-up); the ledger and the card show
// at most one credit, and exactly one after a legitimate session.
func TestTokenMisuse(t *testing.T) {
	for _, b := range testbackend.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			e := newEnv(t, b, profile.AN12113(), opts())
			refused := func(t *testing.T, o rawbridge.Options, want int) {
				t.Helper()
				out, err := runRaw(e.wsURL(), o)
				if err != nil || out.HTTPStatus != want {
					t.Fatalf("dial: HTTP %d (%v), want %d", out.HTTPStatus, err, want)
				}
			}
			t.Run("reused-after-success", func(t *testing.T) {
				c := e.card(t, 100)
				tu := e.topUp(t, 250, nil)
				o := e.raw(t, rawbridge.Options{Token: tu.Token, HelloUID: c.UID(), Card: c, Batch: true})
				if o.Result == nil || !o.Result.OK {
					t.Fatalf("first use: %v", o)
				}
				refused(t, rawbridge.Options{Token: tu.Token, HelloUID: c.UID(), Card: c, Batch: true}, http.StatusUnauthorized)
				// The query form is refused as such (400 token_in_query)
				// unless the server allows it.
				refused(t, rawbridge.Options{Token: tu.Token, Query: true, HelloUID: c.UID(), Card: c, Batch: true}, http.StatusBadRequest)
				if s := e.assertLedger(t, tu, c, 100, &o); s != "applied" {
					t.Fatalf("ledger %s", s)
				}
				e.retry(t, tu, c, 100) // 409 not_payable for an applied top-up
			})
			t.Run("reused-after-hostile-session", func(t *testing.T) {
				c := e.card(t, 100)
				tu := e.topUp(t, 250, nil)
				o := e.raw(t, rawbridge.Options{Token: tu.Token, First: [][]byte{[]byte(`{"type":"fly"}`)}})
				assertClosed(t, o, protocol.CloseProtocol)
				refused(t, rawbridge.Options{Token: tu.Token, HelloUID: c.UID(), Card: c, Batch: true}, http.StatusUnauthorized)
				if s := e.assertLedger(t, tu, c, 100, &o); s != "pending" {
					t.Fatalf("ledger %s", s)
				}
				e.retry(t, tu, c, 100)
			})
			t.Run("raced-by-8-bridges", func(t *testing.T) {
				c := e.card(t, 100)
				tu := e.topUp(t, 250, nil)
				const n = 8
				outs := make([]rawbridge.Outcome, n)
				errs := make([]error, n)
				start := make(chan struct{})
				var wg sync.WaitGroup
				for i := range outs {
					wg.Add(1)
					go func() {
						defer wg.Done()
						<-start
						outs[i], errs[i] = runRaw(e.wsURL(), rawbridge.Options{Token: tu.Token, HelloUID: c.UID(), Card: c, Batch: true})
					}()
				}
				close(start)
				wg.Wait()
				ran := 0
				for i, o := range outs {
					switch {
					case errs[i] != nil:
						t.Fatalf("bridge %d: %v", i, errs[i])
					case o.HTTPStatus == http.StatusUnauthorized:
					case o.HTTPStatus == 0:
						ran++
						if o.Result == nil || !o.Result.OK {
							t.Fatalf("the one session that ran: %v", o)
						}
					default:
						t.Fatalf("bridge %d: %v", i, o)
					}
				}
				if ran != 1 {
					t.Fatalf("%d sessions ran on one token, want exactly 1", ran)
				}
				if s := e.assertLedger(t, tu, c, 100, nil); s != "applied" {
					t.Fatalf("ledger %s", s)
				}
				e.retry(t, tu, c, 100)
			})
			t.Run("balance-token-only-reads", func(t *testing.T) {
				c := e.card(t, 100)
				tu := e.topUp(t, 250, c.UID()) // pending, bound to this very card
				code, out := e.api(t, "POST", "/v1/sessions", map[string]any{"kind": "balance"})
				if code != http.StatusCreated {
					t.Fatalf("balance session: %d %v", code, out)
				}
				tok := out["bridge_token"].(string)
				o := e.raw(t, rawbridge.Options{Token: tok, HelloUID: c.UID(), Card: c, Batch: true})
				assertClosed(t, o, websocket.StatusNormalClosure)
				if !o.Result.OK || o.Result.Kind != "balance" || o.Result.Balance == nil || *o.Result.Balance != 100 || o.Result.TopUpID != "" {
					t.Fatalf("balance session: %v %+v", o, o.Result)
				}
				for _, tr := range o.Transceives {
					for _, cmd := range tr.CAPDUs {
						switch cmd.APDU[1] {
						case 0x0C, 0x3B, insCommit, 0x3D, 0xDC, 0x1C: // credit, write record, commit, write data, debit, limited credit
							t.Fatalf("a balance session sent a writing command %02X", cmd.APDU[1])
						}
					}
				}
				refused(t, rawbridge.Options{Token: tok, HelloUID: c.UID(), Card: c, Batch: true}, http.StatusUnauthorized)
				if code, _, _ := e.newToken(t, out["session_id"].(string)); code != http.StatusNotFound {
					t.Fatalf("a balance session id as a top-up: HTTP %d, want 404", code)
				}
				if s := e.assertLedger(t, tu, c, 100, nil); s != "pending" {
					t.Fatalf("a balance session moved a pending top-up to %s", s)
				}
				e.retry(t, tu, c, 100)
			})
			t.Run("expired", func(t *testing.T) {
				c := e.card(t, 100)
				tu := e.topUp(t, 250, nil)
				ctx := context.Background()
				sess, err := e.h.Ledger.CreateSession(ctx, ledger.KindTopUp, uuid.MustParse(tu.ID), time.Now().Add(-time.Hour))
				if err != nil {
					t.Fatal(err)
				}
				tok := randomToken()
				sum := sha256.Sum256([]byte(tok))
				if err := e.h.Ledger.IssueToken(ctx, sess.ID, sum[:], time.Now().Add(-time.Minute)); err != nil {
					t.Fatal(err)
				}
				refused(t, rawbridge.Options{Token: tok, HelloUID: c.UID(), Card: c, Batch: true}, http.StatusUnauthorized)
				if s := e.assertLedger(t, tu, c, 100, nil); s != "pending" {
					t.Fatalf("ledger %s", s)
				}
				e.retry(t, tu, c, 100)
			})
			t.Run("unknown-malformed-and-misplaced", func(t *testing.T) {
				c := e.card(t, 100)
				tu := e.topUp(t, 250, nil)
				cases := []struct {
					name string
					o    rawbridge.Options
					want int
				}{
					{"unknown", rawbridge.Options{Token: randomToken()}, http.StatusUnauthorized},
					{"empty-bearer", rawbridge.Options{Header: "Bearer "}, http.StatusUnauthorized},
					{"basic-scheme", rawbridge.Options{Header: "Basic " + tu.Token}, http.StatusUnauthorized},
					{"no-scheme", rawbridge.Options{Header: tu.Token + "x"}, http.StatusUnauthorized},
					{"token-with-suffix", rawbridge.Options{Token: tu.Token + "A"}, http.StatusUnauthorized},
					{"token-prefix", rawbridge.Options{Token: tu.Token[:len(tu.Token)-1]}, http.StatusUnauthorized},
					{"huge", rawbridge.Options{Token: strings.Repeat("A", 6000)}, http.StatusUnauthorized},
					{"api-key", rawbridge.Options{Token: testserver.APIKey}, http.StatusUnauthorized},
					// The query form is refused as such unless allowed.
					{"query-and-header-both-wrong", rawbridge.Options{Token: randomToken(), Query: true, Header: "Bearer " + randomToken()}, http.StatusBadRequest},
					{"query-percent-garbage", rawbridge.Options{Token: "%00%ff%2e%2e", Query: true}, http.StatusBadRequest},
				}
				for _, k := range cases {
					k.o.HelloUID, k.o.Card, k.o.Batch = c.UID(), c, true
					out, err := runRaw(e.wsURL(), k.o)
					if err != nil || out.HTTPStatus != k.want {
						t.Errorf("%s: HTTP %d (%v), want %d", k.name, out.HTTPStatus, err, k.want)
					}
				}
				// A valid token in the query behind a wrong header: the
				// header wins, whichever way; the valid token is not burnt
				// by a refusal.
				out, err := runRaw(e.wsURL(), rawbridge.Options{Token: tu.Token, Query: true, Header: "Bearer " + randomToken(), HelloUID: c.UID(), Card: c, Batch: true})
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("valid query token behind a wrong header: %v", out)
				if out.HTTPStatus != http.StatusUnauthorized && out.HTTPStatus != http.StatusBadRequest && out.HTTPStatus != 0 {
					t.Fatalf("valid query token behind a wrong header: %v", out)
				}
				// A valid token without the subprotocol: 400, not consumed.
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_, resp, err := websocket.Dial(ctx, e.wsURL(), &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + tu.Token}}})
				if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
					t.Fatalf("no subprotocol: %v %v", err, resp)
				}
				status := e.assertLedger(t, tu, c, 100, nil)
				if out.HTTPStatus != 0 {
					if status != "pending" {
						t.Fatalf("refusals moved the top-up to %s", status)
					}
					o := e.raw(t, rawbridge.Options{Token: tu.Token, HelloUID: c.UID(), Card: c, Batch: true})
					if o.Result == nil || !o.Result.OK {
						t.Fatalf("the token was burnt by refused attempts: %v", o)
					}
				}
				e.retry(t, tu, c, 100)
			})
			t.Run("bridge-token-as-api-key", func(t *testing.T) {
				c := e.card(t, 100)
				tu := e.topUp(t, 250, nil)
				for _, path := range []string{"/v1/topups/" + tu.ID, "/v1/cards/" + hexs(c.UID()) + "/topups"} {
					if code, _ := apiAs(t, e.h.HTTP.URL, "Bearer "+tu.Token, "GET", path, "", nil); code != http.StatusUnauthorized {
						t.Fatalf("GET %s with a bridge token: HTTP %d, want 401", path, code)
					}
				}
				if code, _ := apiAs(t, e.h.HTTP.URL, "Bearer "+tu.Token, "POST", "/v1/topups/"+tu.ID+"/bridge-tokens", "", nil); code != http.StatusUnauthorized {
					t.Fatalf("new token with a bridge token as API key: HTTP %d, want 401", code)
				}
				e.assertLedger(t, tu, c, 100, nil)
				e.retry(t, tu, c, 100)
			})
			t.Run("applied-topup-new-token-and-old-tokens", func(t *testing.T) {
				c := e.card(t, 100)
				tu := e.topUp(t, 250, nil)
				code, newer, _ := e.newToken(t, tu.ID) // a second token issued before the top-up is applied
				if code != http.StatusCreated {
					t.Fatalf("newer token: %d", code)
				}
				// The newer token replaced the first, unused one.
				refused(t, rawbridge.Options{Token: tu.Token, HelloUID: c.UID(), Card: c, Batch: true}, http.StatusUnauthorized)
				code, spare, _ := e.newToken(t, tu.ID)
				if code != http.StatusCreated {
					t.Fatalf("spare token: %d", code)
				}
				// The spare token replaced the newer one; it pays once.
				refused(t, rawbridge.Options{Token: newer, HelloUID: c.UID(), Card: c, Batch: true}, http.StatusUnauthorized)
				rep, err := e.honest(t, spare, c)
				if err != nil || rep.Result.Status != "applied" {
					t.Fatalf("honest: %v %+v", err, rep)
				}
				// The used token does not open another session, and the top-up
				// is not payable any more: nothing is credited twice.
				o := e.raw(t, rawbridge.Options{Token: spare, HelloUID: c.UID(), Card: c, Batch: true})
				if o.HTTPStatus == 0 {
					assertClosed(t, o, websocket.StatusNormalClosure)
					if o.Result.OK && o.Result.Status != "applied" || (!o.Result.OK && o.Code() != "not_payable") {
						t.Fatalf("spare token after applied: %v", o)
					}
				}
				if code, _, out := e.newToken(t, tu.ID); code != http.StatusConflict || errCode(out) != "not_payable" {
					t.Fatalf("new token after applied: HTTP %d %v, want 409 not_payable", code, out)
				}
				if s := e.assertLedger(t, tu, c, 100, nil); s != "applied" {
					t.Fatalf("ledger %s", s)
				}
				e.retry(t, tu, c, 100)
			})
			e.serving(t)
		})
	}
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func hexs(b []byte) string { return strings.ToUpper(hex.EncodeToString(b)) }
