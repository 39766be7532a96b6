package server_test

import (
	"context"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/desfire-relay/relay/internal/testbackend"
	"github.com/desfire-relay/relay/internal/testserver"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/profile"
)

// topUpsWithReference lists the top-ups carrying an operator reference.
func topUpsWithReference(t *testing.T, h *testserver.Harness, ref string) []any {
	t.Helper()
	code, out := h.API("GET", "/v1/topups?"+url.Values{"reference": {ref}}.Encode(), "", nil)
	if code != http.StatusOK {
		t.Fatalf("list top-ups: %d %v", code, out)
	}
	ts, _ := out["topups"].([]any)
	return ts
}

// TestTopUpDispatchedToReader: POST /v1/topups with reader_id creates the
// top-up and addresses its session to the registered reader's agent in
// one call (no bridge token); the agent credits the card. An unknown or
// offline reader is refused before anything is stored; a replay returns
// the same top-up and dispatches nothing once a session took it.
func TestTopUpDispatchedToReader(t *testing.T) {
	h := testserver.New(t, testbackend.Backends()[0], profile.AN12113(), testserver.Options{})
	registerReader(t, h, "kiosk-off") // registered, never connected
	body := func(amount int, reader, ref string) map[string]any {
		return map[string]any{"amount": amount, "currency": "EUR", "reference": ref, "reader_id": reader}
	}
	for name, tc := range map[string]struct {
		body   map[string]any
		status int
		code   string
	}{
		"offline reader":   {body(250, "kiosk-off", "ref-refused"), http.StatusConflict, "reader_offline"},
		"unknown reader":   {body(250, "nope", "ref-refused"), http.StatusNotFound, "not_found"},
		"malformed reader": {body(250, "a b", "ref-refused"), http.StatusBadRequest, "invalid_request"},
		"bad amount first": {body(0, "nope", "ref-refused"), http.StatusBadRequest, "invalid_request"},
	} {
		if code, out := h.API("POST", "/v1/topups", "refused-"+name, tc.body); code != tc.status || errCode(out) != tc.code {
			t.Errorf("%s: %d %v (want %d %s)", name, code, out, tc.status, tc.code)
		}
	}
	if ts := topUpsWithReference(t, h, "ref-refused"); len(ts) != 0 {
		t.Fatalf("refused requests stored top-ups: %v", ts)
	}
	// The refused request's key was never used: it creates a top-up now.
	if code, out := h.API("POST", "/v1/topups", "refused-offline reader", map[string]any{"amount": 5, "currency": "EUR"}); code != http.StatusCreated {
		t.Fatalf("key of a refused request: %d %v", code, out)
	}

	card := h.Card(cardUID, 100)
	cred := registerReader(t, h, "kiosk-2")
	reports := deskAgent(t, agentURL(h.HTTP.URL), cred, card)
	waitFor(t, "the reader online", online(h, "kiosk-2"))

	req := body(250, "kiosk-2", "ref-kiosk")
	code, tu := h.API("POST", "/v1/topups", "kiosk-direct", req)
	sessID, _ := tu["session_id"].(string)
	if code != http.StatusCreated || sessID == "" || tu["session_reader_id"] != "kiosk-2" || tu["bridge_token"] != nil || tu["status"] != "pending" {
		t.Fatalf("create on the reader: %d %v", code, tu)
	}
	if sess := sessionOutcome(t, h, sessID); sess["status"] != "ok" || sess["topup_id"] != tu["id"] {
		t.Fatalf("the reader's session: %v", sess)
	}
	if rep := <-reports; rep == nil || !rep.Result.OK {
		t.Fatalf("agent's report: %+v", rep)
	}
	code, got := h.API("GET", "/v1/topups/"+tu["id"].(string), "", nil)
	if code != http.StatusOK || got["status"] != "applied" || got["balance_after"] != float64(350) {
		t.Fatalf("top-up after the reader's session: %d %v", code, got)
	}

	// Replays: the same top-up, nothing dispatched once applied; another
	// body under the key is a conflict.
	code, again := h.API("POST", "/v1/topups", "kiosk-direct", req)
	if code != http.StatusOK || again["id"] != tu["id"] || again["status"] != "applied" || again["session_id"] != nil || again["bridge_token"] != nil {
		t.Fatalf("replay: %d %v", code, again)
	}
	if code, out := h.API("POST", "/v1/topups", "kiosk-direct", body(300, "kiosk-2", "ref-kiosk")); code != http.StatusConflict || errCode(out) != "idempotency_conflict" {
		t.Fatalf("same key, other body: %d %v", code, out)
	}
	if ts := topUpsWithReference(t, h, "ref-kiosk"); len(ts) != 1 {
		t.Fatalf("top-ups of the reference: %d, want 1", len(ts))
	}
	select {
	case rep := <-reports:
		t.Fatalf("a replay ran a session on the reader: %+v", rep)
	default:
	}
}

// TestTopUpOnReaderReplayWhilePending: a replay of a top-up whose session
// no agent took yet dispatches a new session to the reader; when the
// agent comes, the card is credited exactly once and the second session
// ends not_payable.
func TestTopUpOnReaderReplayWhilePending(t *testing.T) {
	h := testserver.New(t, testbackend.Backends()[0], profile.AN12113(), testserver.Options{})
	cred := registerReader(t, h, "kiosk-late")
	// The reader's presence lease is fresh but no agent is there yet (an
	// agent on a node that is about to lose it, say).
	rs := h.Ledger.(ledger.ReaderStore)
	if err := rs.TouchAgent(context.Background(), ledger.DefaultTenant, "kiosk-late", "gone", time.Now()); err != nil {
		t.Fatal(err)
	}
	req := map[string]any{"amount": 40, "currency": "EUR", "reader_id": "kiosk-late"}
	code, first := h.API("POST", "/v1/topups", "late-1", req)
	if code != http.StatusCreated || first["session_id"] == nil {
		t.Fatalf("create: %d %v", code, first)
	}
	code, again := h.API("POST", "/v1/topups", "late-1", req)
	if code != http.StatusOK || again["id"] != first["id"] || again["status"] != "pending" || again["session_id"] == nil ||
		again["session_id"] == first["session_id"] || again["session_reader_id"] != "kiosk-late" {
		t.Fatalf("replay while pending: %d %v", code, again)
	}

	card := h.Card(cardUID, 100)
	reports := deskAgent(t, agentURL(h.HTTP.URL), cred, card)
	s1 := sessionOutcome(t, h, first["session_id"].(string))
	s2 := sessionOutcome(t, h, again["session_id"].(string))
	if s1["status"] != "ok" || s2["status"] != "failed" || s2["error_code"] != "not_payable" {
		t.Fatalf("sessions: first %v, second %v", s1, s2)
	}
	for range 2 {
		<-reports
	}
	code, got := h.API("GET", "/v1/topups/"+first["id"].(string), "", nil)
	if code != http.StatusOK || got["status"] != "applied" || got["balance_after"] != float64(140) {
		t.Fatalf("top-up: %d %v", code, got)
	}
	// The card holds the credit once: a balance lookup on the reader.
	code, out := h.API("POST", "/v1/sessions", "", map[string]any{"kind": "balance", "reader_id": "kiosk-late"})
	if code != http.StatusCreated {
		t.Fatalf("balance: %d %v", code, out)
	}
	if sess := sessionOutcome(t, h, out["session_id"].(string)); sess["balance"] != float64(140) {
		t.Fatalf("balance after both sessions: %v", sess)
	}
}
