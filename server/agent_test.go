package server_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/desfire-relay/relay/desfire/simcard"
	"github.com/desfire-relay/relay/internal/testbackend"
	"github.com/desfire-relay/relay/internal/testserver"
	"github.com/desfire-relay/relay/mobile-bridge/bridge"
	"github.com/desfire-relay/relay/server"
	"github.com/desfire-relay/relay/server/config"
	"github.com/desfire-relay/relay/transaction"
	"github.com/desfire-relay/relay/transaction/lock"
	"github.com/desfire-relay/relay/transaction/profile"
)

// deskAgent runs a registered reader's agent (the reference bridge in
// agent mode, with a simulated card on the reader) against url until the
// test ends; it returns the sessions' reports as they finish.
func deskAgent(t *testing.T, url, credential string, card *simcard.Card) <-chan *bridge.Report {
	t.Helper()
	reports := make(chan *bridge.Report, 16)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := bridge.RunAgent(ctx, bridge.AgentOptions{URL: url, Credential: credential, Name: "desk", Version: "1", Platform: "sim", Batch: true,
			OnSession: func(rep *bridge.Report, err error) {
				if err != nil {
					t.Logf("agent session: %v", err)
				}
				reports <- rep
			}}, bridge.SimCards(card))
		if !errors.Is(err, context.Canceled) {
			t.Errorf("agent ended: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return reports
}

func agentURL(base string) string { return "ws" + strings.TrimPrefix(base, "http") + "/v1/agent" }

// waitFor polls cond every 20 ms until it holds or 10 s have passed.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 500 {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("gave up waiting for %s", what)
}

func registerReader(t *testing.T, h *testserver.Harness, id string) string {
	t.Helper()
	code, out := h.API("POST", "/v1/readers", "", map[string]any{"id": id, "location": "Support desk 1", "desfire_reader_id": "00112233445566778899AABBCCDDEEFF"})
	cred, _ := out["agent_credential"].(string)
	if code != http.StatusCreated || !strings.HasPrefix(cred, transaction.AgentCredentialPrefix) || out["online"] != false ||
		out["desfire_reader_id"] != "00112233445566778899AABBCCDDEEFF" {
		t.Fatalf("register reader: %d %v", code, out)
	}
	return cred
}

func online(h *testserver.Harness, id string) func() bool {
	return func() bool {
		code, out := h.API("GET", "/v1/readers/"+id, "", nil)
		return code == http.StatusOK && out["online"] == true
	}
}

// sessionOutcome waits for a session to finish and returns it.
func sessionOutcome(t *testing.T, h *testserver.Harness, id string) map[string]any {
	t.Helper()
	var out map[string]any
	waitFor(t, "session "+id, func() bool {
		var code int
		code, out = h.API("GET", "/v1/sessions/"+id, "", nil)
		return code == http.StatusOK && out["status"] != "open"
	})
	return out
}

// TestAgentModeBalanceOnDeskReader: a desk reader registered through the
// API keeps an agent connection; balance sessions addressed to it run over
// that one connection, one after the other, with no bridge token; an
// offline reader is refused with reader_offline and nothing is created.
func TestAgentModeBalanceOnDeskReader(t *testing.T) {
	for _, b := range testbackend.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			h := testserver.New(t, b, profile.AN12113(), testserver.Options{})
			cred := registerReader(t, h, "desk-1")
			code, out := h.API("POST", "/v1/sessions", "", map[string]any{"kind": "balance", "reader_id": "desk-1"})
			if code != http.StatusConflict || errCode(out) != "reader_offline" {
				t.Fatalf("offline reader: %d %v", code, out)
			}
			card := h.Card(cardUID, 1234)
			reports := deskAgent(t, agentURL(h.HTTP.URL), cred, card)
			waitFor(t, "the reader online", online(h, "desk-1"))
			for i := range 2 { // two sessions over the same connection
				code, out = h.API("POST", "/v1/sessions", "", map[string]any{"kind": "balance", "reader_id": "desk-1"})
				if code != http.StatusCreated || out["bridge_token"] != nil || out["reader_id"] != "desk-1" {
					t.Fatalf("session %d: %d %v", i, code, out)
				}
				sess := sessionOutcome(t, h, out["session_id"].(string))
				if sess["status"] != "ok" || sess["balance"] != float64(1234) || sess["card_uid"] != "04102030405060" {
					t.Fatalf("session %d outcome: %v", i, sess)
				}
				rep := <-reports
				if rep == nil || !rep.Result.OK || rep.Result.Balance == nil || *rep.Result.Balance != 1234 || rep.Result.SessionID != out["session_id"] {
					t.Fatalf("agent's report %d: %+v", i, rep)
				}
			}
		})
	}
}

// TestAgentOnAnotherNode: the session is created on node A, the reader's
// agent is connected to node B (same ledger): B claims it from the ledger
// and runs it; A's answer and the ledger agree.
func TestAgentOnAnotherNode(t *testing.T) {
	h := testserver.New(t, testbackend.Backends()[0], profile.AN12113(), testserver.Options{})
	svc, err := transaction.New(transaction.Config{Ledger: h.Ledger, Locker: lock.NewMemory(), Keys: h.Keys, Profile: h.Profile.Name, LockTTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	nodeB := server.New(server.Options{Service: svc, APIKeyHashes: []string{config.HashAPIKey(testserver.APIKey)}, Limits: testserver.NoLimits(),
		AgentPoll: 50 * time.Millisecond, ExchangeTimeout: 2 * time.Second, SessionTimeout: 10 * time.Second})
	hb := httptest.NewServer(nodeB.Handler())
	t.Cleanup(hb.Close)

	cred := registerReader(t, h, "desk-b")
	reports := deskAgent(t, agentURL(hb.URL), cred, h.Card(cardUID, 77))
	waitFor(t, "the reader online on node A", online(h, "desk-b"))
	code, out := h.API("POST", "/v1/sessions", "", map[string]any{"kind": "balance", "reader_id": "desk-b"})
	if code != http.StatusCreated {
		t.Fatalf("create on node A: %d %v", code, out)
	}
	if sess := sessionOutcome(t, h, out["session_id"].(string)); sess["status"] != "ok" || sess["balance"] != float64(77) {
		t.Fatalf("outcome: %v", sess)
	}
	if rep := <-reports; rep == nil || *rep.Result.Balance != 77 {
		t.Fatalf("agent's report: %+v", rep)
	}
}

// TestReadersBadInput: every malformed registration, session request and
// agent credential is a clear error, and nothing is created.
func TestReadersBadInput(t *testing.T) {
	h := testserver.New(t, testbackend.Backends()[0], profile.AN12113(), testserver.Options{})
	cred := registerReader(t, h, "desk-1")
	for name, c := range map[string]struct {
		method, path string
		body         any
		status       int
		code         string
	}{
		"duplicate id":        {"POST", "/v1/readers", map[string]any{"id": "desk-1"}, 409, "reader_exists"},
		"empty id":            {"POST", "/v1/readers", map[string]any{"id": ""}, 400, "invalid_request"},
		"id with spaces":      {"POST", "/v1/readers", map[string]any{"id": "desk 2"}, 400, "invalid_request"},
		"short reader id":     {"POST", "/v1/readers", map[string]any{"id": "d2", "desfire_reader_id": "0011"}, 400, "invalid_request"},
		"non-hex reader id":   {"POST", "/v1/readers", map[string]any{"id": "d2", "desfire_reader_id": strings.Repeat("zz", 16)}, 400, "invalid_request"},
		"control in location": {"POST", "/v1/readers", map[string]any{"id": "d2", "location": "a\u0007b"}, 400, "invalid_request"},
		"unknown field":       {"POST", "/v1/readers", map[string]any{"id": "d2", "secret": "x"}, 400, "invalid_request"},
		"unknown reader":      {"GET", "/v1/readers/nope", nil, 404, "not_found"},
		"bad reader path":     {"GET", "/v1/readers/a%20b", nil, 400, "invalid_request"},
		"session, unknown":    {"POST", "/v1/sessions", map[string]any{"kind": "balance", "reader_id": "nope"}, 404, "not_found"},
		"session, bad id":     {"POST", "/v1/sessions", map[string]any{"kind": "balance", "reader_id": "a/b"}, 400, "invalid_request"},
		"session, empty id":   {"POST", "/v1/sessions", map[string]any{"kind": "balance", "reader_id": ""}, 400, "invalid_request"},
		"session, issue kind": {"POST", "/v1/sessions", map[string]any{"kind": "issue", "reader_id": "desk-1"}, 400, "invalid_request"},
		"delete unknown":      {"DELETE", "/v1/readers/nope", nil, 404, "not_found"},
	} {
		code, out := h.API(c.method, c.path, "", c.body)
		if code != c.status || errCode(out) != c.code {
			t.Errorf("%s: %d %v, want %d %s", name, code, out, c.status, c.code)
		}
	}
	code, out := h.API("GET", "/v1/readers", "", nil)
	if code != 200 || len(out["readers"].([]any)) != 1 {
		t.Fatalf("list after refusals: %d %v", code, out)
	}
	// Agent credentials: missing, unknown, wrong subprotocol.
	ctx := context.Background()
	for name, o := range map[string]bridge.AgentOptions{
		"no credential":      {URL: agentURL(h.HTTP.URL)},
		"unknown credential": {URL: agentURL(h.HTTP.URL), Credential: transaction.AgentCredentialPrefix + "AAAA"},
		"api key":            {URL: agentURL(h.HTTP.URL), Credential: testserver.APIKey},
	} {
		if err := bridge.Agent(ctx, o, nil); !errors.Is(err, bridge.ErrAgentRefused) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if c, resp, err := dialURL(agentURL(h.HTTP.URL), http.Header{"Authorization": {"Bearer " + cred}}, "", "desfire-relay.v1"); err == nil || resp == nil || resp.StatusCode != 400 {
		if c != nil {
			c.CloseNow()
		}
		t.Errorf("bridge subprotocol on /v1/agent: %v %v", resp, err)
	}
	// A deleted reader's credential stops working.
	if code, _ := h.API("DELETE", "/v1/readers/desk-1", "", nil); code != 204 {
		t.Fatalf("delete: %d", code)
	}
	if err := bridge.Agent(ctx, bridge.AgentOptions{URL: agentURL(h.HTTP.URL), Credential: cred}, nil); !errors.Is(err, bridge.ErrAgentRefused) {
		t.Errorf("deleted reader's agent: %v", err)
	}
}

// TestDeletedReaderLosesItsAgent: deleting a reader closes its agent
// connection and refuses its credential from then on.
func TestDeletedReaderLosesItsAgent(t *testing.T) {
	h := testserver.New(t, testbackend.Backends()[0], profile.AN12113(), testserver.Options{})
	cred := registerReader(t, h, "desk-gone")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ended := make(chan error, 1)
	go func() {
		ended <- bridge.Agent(ctx, bridge.AgentOptions{URL: agentURL(h.HTTP.URL), Credential: cred}, bridge.SimCards(h.Card(cardUID, 1)))
	}()
	waitFor(t, "the reader online", online(h, "desk-gone"))
	if code, _ := h.API("DELETE", "/v1/readers/desk-gone", "", nil); code != http.StatusNoContent {
		t.Fatalf("delete: %d", code)
	}
	select {
	case err := <-ended:
		if err == nil || ctx.Err() != nil {
			t.Fatalf("agent ended with %v (context %v)", err, ctx.Err())
		}
	case <-ctx.Done():
		t.Fatal("the deleted reader's agent connection stayed open")
	}
	if err := bridge.Agent(ctx, bridge.AgentOptions{URL: agentURL(h.HTTP.URL), Credential: cred}, nil); !errors.Is(err, bridge.ErrAgentRefused) {
		t.Fatalf("reconnect with the deleted reader's credential: %v", err)
	}
}

// TestAgentSilentWhileIdle: an agent that talks while no session runs is
// closed with 1008, and its reader goes offline.
func TestAgentSilentWhileIdle(t *testing.T) {
	h := testserver.New(t, testbackend.Backends()[0], profile.AN12113(), testserver.Options{})
	cred := registerReader(t, h, "desk-chatty")
	c, _, err := dialURL(agentURL(h.HTTP.URL), http.Header{"Authorization": {"Bearer " + cred}}, "", "desfire-relay.agent.v1")
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	waitFor(t, "the reader online", online(h, "desk-chatty"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"hello","bridge":{"name":"x","version":"1","platform":"x"},"features":[]}`)); err != nil {
		t.Fatal(err)
	}
	if code := closeCode(c); code != websocket.StatusPolicyViolation {
		t.Fatalf("close code %d, want 1008", code)
	}
	waitFor(t, "the reader offline", func() bool { return !online(h, "desk-chatty")() })
}

// TestAgentModeTopUpAndReversal: a top-up and then its reversal run on a
// desk reader in agent mode (POST /v1/sessions kind "topup" with
// reader_id), under the rules of a new bridge token: the top-up's earlier
// token retires, a paid top-up is not payable again.
func TestAgentModeTopUpAndReversal(t *testing.T) {
	h := testserver.New(t, testbackend.Backends()[0], profile.AN12113(), testserver.Options{})
	cred := registerReader(t, h, "kiosk-1")
	reports := deskAgent(t, agentURL(h.HTTP.URL), cred, h.Card(cardUID, 100))
	waitFor(t, "the reader online", online(h, "kiosk-1"))

	id, oldToken := h.TopUp("kiosk-topup", 250, "")
	run := func(topUp string) map[string]any {
		t.Helper()
		code, out := h.API("POST", "/v1/sessions", "", map[string]any{"kind": "topup", "topup_id": topUp, "reader_id": "kiosk-1"})
		if code != http.StatusCreated || out["topup_id"] != topUp || out["bridge_token"] != nil {
			t.Fatalf("top-up session on the reader: %d %v", code, out)
		}
		sess := sessionOutcome(t, h, out["session_id"].(string))
		if rep := <-reports; rep == nil || !rep.Result.OK {
			t.Fatalf("agent's report: %+v", rep)
		}
		return sess
	}
	if sess := run(id); sess["status"] != "ok" || sess["topup_id"] != id {
		t.Fatalf("top-up session: %v", sess)
	}
	code, tu := h.API("GET", "/v1/topups/"+id, "", nil)
	if code != 200 || tu["status"] != "applied" || tu["balance_after"] != float64(350) {
		t.Fatalf("top-up after the reader's session: %d %v", code, tu)
	}
	if _, err := h.Bridge(oldToken, h.Card([]byte{4, 1, 2, 3, 4, 5, 6}, 0), true); err == nil {
		t.Fatal("the top-up's earlier bridge token still works")
	}
	code, out := h.API("POST", "/v1/sessions", "", map[string]any{"kind": "topup", "topup_id": id, "reader_id": "kiosk-1"})
	if code != http.StatusConflict || errCode(out) != "not_payable" {
		t.Fatalf("applied top-up again: %d %v", code, out)
	}

	code, rv := h.API("POST", "/v1/topups/"+id+"/reversal", "", nil)
	if code != http.StatusCreated {
		t.Fatalf("reversal: %d %v", code, rv)
	}
	run(rv["id"].(string))
	code, rv = h.API("GET", "/v1/topups/"+rv["id"].(string), "", nil)
	if code != 200 || rv["status"] != "applied" || rv["balance_after"] != float64(100) {
		t.Fatalf("reversal after the reader's session: %d %v", code, rv)
	}

	for name, body := range map[string]map[string]any{
		"topup_id without reader": {"kind": "topup", "topup_id": id},
		"malformed topup_id":      {"kind": "topup", "topup_id": "nope", "reader_id": "kiosk-1"},
		"topup without topup_id":  {"kind": "topup", "reader_id": "kiosk-1"},
		"balance with topup_id":   {"kind": "balance", "topup_id": id, "reader_id": "kiosk-1"},
		"provisioning fields":     {"kind": "balance", "reader_id": "kiosk-1", "profile": "an12113-ev2"},
	} {
		if code, out := h.API("POST", "/v1/sessions", "", body); code != http.StatusBadRequest || errCode(out) != "invalid_request" {
			t.Errorf("%s: %d %v", name, code, out)
		}
	}
	if code, out := h.API("POST", "/v1/sessions", "", map[string]any{"kind": "topup", "topup_id": "00000000-0000-4000-8000-000000000000", "reader_id": "kiosk-1"}); code != http.StatusNotFound {
		t.Errorf("unknown top-up: %d %v", code, out)
	}
}

// TestAgentReaderIDCommitted: a top-up on a registered reader commits the
// reader's own DESFire reader ID (CommitReaderID) on a card that requires
// it, not the server's default.
func TestAgentReaderIDCommitted(t *testing.T) {
	h := testserver.New(t, testbackend.Backends()[0], profile.AN12113(), testserver.Options{})
	cred := registerReader(t, h, "kiosk-rid") // desfire_reader_id 00112233445566778899AABBCCDDEEFF
	issued := profile.AN12113()
	issued.CommitReaderID = true
	card := h.CardFor(issued, simcard.Options{UID: cardUID}, 100)
	reports := deskAgent(t, agentURL(h.HTTP.URL), cred, card)
	waitFor(t, "the reader online", online(h, "kiosk-rid"))
	id, _ := h.TopUp("kiosk-rid-topup", 50, "")
	code, out := h.API("POST", "/v1/sessions", "", map[string]any{"kind": "topup", "topup_id": id, "reader_id": "kiosk-rid"})
	if code != http.StatusCreated {
		t.Fatalf("session: %d %v", code, out)
	}
	sessionOutcome(t, h, out["session_id"].(string))
	if rep := <-reports; rep == nil || !rep.Result.OK {
		t.Fatalf("agent's report: %+v", rep)
	}
	code, tu := h.API("GET", "/v1/topups/"+id, "", nil)
	if code != 200 || tu["status"] != "applied" || tu["reader_id"] != "00112233445566778899AABBCCDDEEFF" {
		t.Fatalf("top-up on the reader: %d %v", code, tu)
	}
}
