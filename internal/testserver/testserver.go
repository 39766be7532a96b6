// Package testserver runs the real relay server in-process for tests
// outside the server package: the transaction service over a chosen
// ledger and locker backend, the HTTP and WebSocket handlers on a loopback
// httptest server, and helpers to call the operator API, issue simulated
// cards and run the reference bridge against it.
package testserver

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/desfire-relay/relay/desfire/simcard"
	"github.com/desfire-relay/relay/internal/testbackend"
	"github.com/desfire-relay/relay/internal/testcard"
	"github.com/desfire-relay/relay/mobile-bridge/bridge"
	"github.com/desfire-relay/relay/server"
	"github.com/desfire-relay/relay/server/config"
	"github.com/desfire-relay/relay/transaction"
	"github.com/desfire-relay/relay/transaction/keys"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/profile"
	"github.com/desfire-relay/relay/transaction/provision"
)

// APIKey is the operator API key every harness accepts.
const APIKey = "test-api-key"

// Options tune the server's deadlines (zero: 2 s per exchange, 10 s per
// session).
type Options struct {
	ExchangeTimeout, SessionTimeout time.Duration
	// Fleet, when set, makes one server serve these profiles (a mixed
	// card fleet, detected per card); the profile given to New must be
	// among them and is the default.
	Fleet []profile.Profile
	// Limits are the server's client limits (zero: off, so suites that
	// run many sessions from one loopback address are not throttled).
	Limits *server.Limits
	// APIKeys adds tenant keys to the harness's default-tenant key.
	APIKeys []server.APIKey
	// Provision switches the provisioning session kinds on (issue and
	// provision_ntag424, over the same ledger, keys and locker).
	Provision bool
}

// NoLimits turns every per-client rate limit off.
func NoLimits() server.Limits {
	return server.Limits{AddrRate: -1, KeyRate: -1, AuthFailRate: -1, BridgesPerAddr: 1 << 20}
}

// Harness is one running server with its backends.
type Harness struct {
	T      testing.TB
	Server *server.Server
	HTTP   *httptest.Server
	// Admin serves the admin handler (metrics, OpenAPI document).
	Admin   *httptest.Server
	Keys    keys.Provider
	KeyFile keys.File // the same keys, as a key file holds them
	Profile profile.Profile
	Ledger  ledger.Ledger
}

// New starts a server over backend b for card profile p; it stops when the
// test ends.
func New(t testing.TB, b testbackend.Backend, p profile.Profile, o Options) *Harness {
	t.Helper()
	if o.ExchangeTimeout <= 0 {
		o.ExchangeTimeout = 2 * time.Second
	}
	if o.SessionTimeout <= 0 {
		o.SessionTimeout = 10 * time.Second
	}
	l, lk := b.Open(t)
	set, names, aids := profile.DefaultSet(), []string(nil), []uint32{p.AID}
	for _, fp := range o.Fleet {
		set[fp.Name] = fp
		names = append(names, fp.Name)
		aids = append(aids, fp.AID)
	}
	kf, err := keys.DevFile(nil, aids...)
	if err != nil {
		t.Fatal(err)
	}
	kf.Keys = append(kf.Keys, uidKeys(t, o.Fleet)...)
	kp, err := keys.New(kf)
	if err != nil {
		t.Fatal(err)
	}
	m := server.NewMetrics()
	svc, err := transaction.New(transaction.Config{Ledger: l, Locker: lk, Keys: kp, Profiles: set, Profile: p.Name, Fleet: names, LockTTL: 2 * time.Second, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	lim := NoLimits()
	if o.Limits != nil {
		lim = *o.Limits
	}
	so := server.Options{Service: svc, APIKeyHashes: []string{config.HashAPIKey(APIKey)}, APIKeys: o.APIKeys, Limits: lim,
		ExchangeTimeout: o.ExchangeTimeout, SessionTimeout: o.SessionTimeout, Metrics: m}
	if o.Provision {
		so.Provision = &server.ProvisionOptions{
			Env:      &provision.Env{Ledger: l.(ledger.ProvisionLedger), Keys: kp, Locker: lk, LockTTL: 2 * time.Second},
			Sessions: l.(ledger.ProvisionSessions), Profiles: profile.Set{p.Name: p},
		}
	}
	srv := server.New(so)
	hs := Serve(t, srv.Handler())
	admin := ServeAdmin(t, srv.AdminHandler())
	return &Harness{T: t, Server: srv, HTTP: hs, Admin: admin, Keys: kp, KeyFile: kf, Profile: p, Ledger: l}
}

// CardFor issues a simulated card of profile p (one of the fleet's) made
// with opts, and presents it.
func (h *Harness) CardFor(p profile.Profile, opts simcard.Options, initial int32) *simcard.Card {
	h.T.Helper()
	return testcard.IssueCard(h.T, p, h.Keys, opts, initial)
}

// Profile returns the named built-in card profile or fails the test.
func Profile(t testing.TB, name string) profile.Profile {
	t.Helper()
	p, err := profile.DefaultSet().Get(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Card issues a simulated card with the server's keys and presents it.
func (h *Harness) Card(uid []byte, initial int32) *simcard.Card {
	h.T.Helper()
	return testcard.Issue(h.T, h.Profile, h.Keys, uid, initial)
}

// API calls the operator API with the harness's key and decodes the JSON
// answer.
func (h *Harness) API(method, path, idem string, body any) (int, map[string]any) {
	h.T.Helper()
	return Call(h.T, h.HTTP.URL, APIKey, method, path, idem, body)
}

// Call sends one operator API request to the server at base with API key
// key (and Idempotency-Key idem, when set), body encoded as JSON, and
// decodes the JSON answer (nil when it is not JSON).
func Call(t testing.TB, base, key, method, path, idem string, body any) (int, map[string]any) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, base+path, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	if idem != "" {
		req.Header.Set("Idempotency-Key", idem)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// TopUp creates a pending top-up of amount cents (EUR), optionally bound to
// a card UID (hex; "" for any card), and returns its id and bridge token.
func (h *Harness) TopUp(idem string, amount int64, uidHex string) (id, token string) {
	h.T.Helper()
	body := map[string]any{"amount": amount, "currency": "EUR"}
	if uidHex != "" {
		body["card_uid"] = uidHex
	}
	code, out := h.API("POST", "/v1/topups", idem, body)
	if code != http.StatusCreated && code != http.StatusOK {
		h.T.Fatalf("create top-up: HTTP %d %v", code, out)
	}
	id, _ = out["id"].(string)
	token, _ = out["bridge_token"].(string)
	return id, token
}

// BalanceToken returns a bridge token for a balance lookup.
func (h *Harness) BalanceToken() (sessionID, token string) {
	h.T.Helper()
	code, out := h.API("POST", "/v1/sessions", "", map[string]any{"kind": "balance"})
	if code != http.StatusCreated && code != http.StatusOK {
		h.T.Fatalf("create balance session: HTTP %d %v", code, out)
	}
	sessionID, _ = out["session_id"].(string)
	if sessionID == "" {
		sessionID, _ = out["id"].(string)
	}
	token, _ = out["bridge_token"].(string)
	return sessionID, token
}

// Status returns a top-up's status from the operator API.
func (h *Harness) Status(id string) string {
	h.T.Helper()
	code, out := h.API("GET", "/v1/topups/"+id, "", nil)
	if code != http.StatusOK {
		h.T.Fatalf("get top-up %s: HTTP %d %v", id, code, out)
	}
	s, _ := out["status"].(string)
	return s
}

// WSURL is the bridge endpoint.
func (h *Harness) WSURL() string {
	return "ws" + strings.TrimPrefix(h.HTTP.URL, "http") + "/v1/bridge"
}

// Bridge runs the reference bridge with a simulated card for one session.
func (h *Harness) Bridge(token string, card *simcard.Card, batch bool) (*bridge.Report, error) {
	return RunBridge(h.WSURL(), token, card, batch)
}

// RunBridge runs the reference bridge against the bridge endpoint wsURL
// with a simulated card for one session (15 s at most).
func RunBridge(wsURL, token string, card *simcard.Card, batch bool) (*bridge.Report, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	rep, err := bridge.Run(ctx, bridge.Options{URL: wsURL, Token: token, Name: "test", Version: "1", Platform: "sim", Batch: batch},
		bridge.Sim{Card: card}, bridge.Sim{Card: card}.Info())
	if err != nil {
		return rep, fmt.Errorf("bridge: %w", err)
	}
	return rep, nil
}

// uidKeys are the UID keys of the fleet's profiles for random-ID cards:
// one key per application and key number, the same on every card (not
// diversified).
func uidKeys(t testing.TB, fleet []profile.Profile) []keys.Entry {
	var out []keys.Entry
	seen := map[string]bool{}
	for _, p := range fleet {
		id := fmt.Sprintf("%06X/%d", p.AID, p.UIDKeyNo)
		if !p.RandomUID || seen[id] {
			continue
		}
		seen[id] = true
		k := make([]byte, 16)
		if _, err := rand.Read(k); err != nil {
			t.Fatal(err)
		}
		out = append(out, keys.Entry{AID: fmt.Sprintf("%06X", p.AID), KeyNo: p.UIDKeyNo, Version: 1, Key: hex.EncodeToString(k)})
	}
	return out
}
