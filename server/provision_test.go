package server_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/desfire-relay/relay/desfire/ntag424/simtag"
	"github.com/desfire-relay/relay/desfire/simcard"
	"github.com/desfire-relay/relay/internal/testbackend"
	"github.com/desfire-relay/relay/internal/testcard"
	"github.com/desfire-relay/relay/internal/testserver"
	"github.com/desfire-relay/relay/mobile-bridge/bridge"
	"github.com/desfire-relay/relay/server"
	"github.com/desfire-relay/relay/server/config"
	"github.com/desfire-relay/relay/transaction"
	"github.com/desfire-relay/relay/transaction/keys"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/profile"
	"github.com/desfire-relay/relay/transaction/provision"
)

// simTag is the simulated NTAG 424 DNA as a bridge's reader: removal is
// the bridge's tag-lost.
type simTag struct{ tag *simtag.Tag }

func (s simTag) Transmit(ctx context.Context, a []byte) ([]byte, error) {
	r, err := s.tag.Transmit(ctx, a)
	if errors.Is(err, simtag.ErrRemoved) {
		return nil, fmt.Errorf("%w: %v", bridge.ErrTagLost, err)
	}
	return r, err
}

type provHarness struct {
	*harness
	kp keys.Provider
}

func newProvHarness(t *testing.T, b testbackend.Backend) *provHarness {
	return newProvHarnessFor(t, b, profile.AN12113())
}

func newProvHarnessFor(t *testing.T, b testbackend.Backend, p profile.Profile) *provHarness {
	t.Helper()
	l, lk := b.Open(t)
	kp, _ := testcard.Keys(t, p)
	m := server.NewMetrics()
	svc, err := transaction.New(transaction.Config{Ledger: l, Locker: lk, Keys: kp, Profiles: profile.Set{p.Name: p}, Profile: p.Name, LockTTL: 2 * time.Second, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	env := &provision.Env{Ledger: l.(ledger.ProvisionLedger), Keys: kp, Locker: lk}
	srv := server.New(server.Options{Service: svc, APIKeyHashes: []string{config.HashAPIKey(apiKey)}, ExchangeTimeout: 2 * time.Second,
		SessionTimeout: 10 * time.Second, Metrics: m, Provision: &server.ProvisionOptions{Env: env, Sessions: l.(ledger.ProvisionSessions), Profiles: profile.Set{p.Name: p}}})
	hs := testserver.Serve(t, srv.Handler())
	return &provHarness{harness: &harness{t: t, srv: srv, http: hs, kp: kp, p: p, l: l}, kp: kp}
}

func (h *provHarness) session(body map[string]any) (int, map[string]any) {
	h.t.Helper()
	body["kind"] = provision.KindNTAG424
	return h.api("POST", "/v1/sessions", "", body)
}

func (h *provHarness) run(token string, tag *simtag.Tag, batch bool) (*bridge.Report, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return bridge.Run(ctx, bridge.Options{URL: h.wsURL(), Token: token, Name: "test", Version: "1", Platform: "sim", Batch: batch},
		simTag{tag}, bridge.CardInfo{UID: tag.AnticollisionUID()})
}

// TestEndToEndProvisionNTAG424: a factory-state simulated NTAG 424 DNA is
// personalised through the real WebSocket and the Go bridge, then tapped
// as a phone reads it; the SUN URL verifies with the per-tag keys.
func TestEndToEndProvisionNTAG424(t *testing.T) {
	for _, b := range testbackend.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			h := newProvHarness(t, b)
			tpl := "https://sun.example.com/t?p={picc}&m={mac}"
			code, out := h.session(map[string]any{"template": tpl, "lock": true})
			if code != http.StatusCreated {
				t.Fatalf("create: %d %v", code, out)
			}
			tag, err := simtag.New(simtag.Options{})
			if err != nil {
				t.Fatal(err)
			}
			rep, err := h.run(out["bridge_token"].(string), tag, true)
			if err != nil || !rep.Result.OK || rep.Result.Kind != provision.KindNTAG424 {
				t.Fatalf("bridge: %+v %v", rep, err)
			}
			t.Logf("exchanges over the WebSocket (batching bridge): %d, APDUs: %d", rep.Exchanges, rep.Commands)
			code, view := h.api("GET", "/v1/sessions/"+out["session_id"].(string), "", nil)
			res, _ := view["result"].(map[string]any)
			if code != http.StatusOK || view["status"] != "ok" || res["step"] != "done" {
				t.Fatalf("session view: %d %v", code, view)
			}
			// A phone taps it.
			if err := tag.Tap(); err != nil {
				t.Fatal(err)
			}
			if _, p, err := testcard.ReadSUN(context.Background(), tag, h.kp, tag.UID()); err != nil || p.ReadCtr != 1 {
				t.Fatalf("phone read: PICC data %+v: %v", p, err)
			}
			// Used token, and a second session on the done tag.
			if _, err := h.run(out["bridge_token"].(string), tag, true); err == nil {
				t.Fatal("token reused")
			}
			_, out2 := h.session(map[string]any{"template": tpl})
			_ = tag.Tap()
			rep, _ = h.run(out2["bridge_token"].(string), tag, false)
			if rep == nil || rep.Result.OK || rep.Result.Error == nil || rep.Result.Error.Code != "already_provisioned" {
				t.Fatalf("second provisioning: %+v", rep)
			}
		})
	}
}

// TestProvisionTearThenRetryOverWebSocket: the tag leaves the field at
// every APDU of a non-batching session; a fresh session then completes.
func TestProvisionTearThenRetryOverWebSocket(t *testing.T) {
	h := newProvHarness(t, testbackend.Backends()[0])
	clean, err := simtag.New(simtag.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, out := h.session(map[string]any{"template": "https://e.com/{uid}{ctr}{mac}"})
	rep, err := h.run(out["bridge_token"].(string), clean, false)
	if err != nil || !rep.Result.OK {
		t.Fatalf("clean run: %+v %v", rep, err)
	}
	for n := 0; n < rep.Commands; n++ {
		tag, err := simtag.New(simtag.Options{})
		if err != nil {
			t.Fatal(err)
		}
		tag.TearAt(n)
		_, out := h.session(map[string]any{"template": "https://e.com/{uid}{ctr}{mac}"})
		rep, _ := h.run(out["bridge_token"].(string), tag, false)
		if rep == nil || rep.Result.OK {
			t.Fatalf("tear at %d: %+v", n, rep)
		}
		_ = tag.Tap()
		_, out = h.session(map[string]any{"template": "https://e.com/{uid}{ctr}{mac}"})
		if rep, err = h.run(out["bridge_token"].(string), tag, false); err != nil || !rep.Result.OK {
			t.Fatalf("retry after tear at %d: %+v %v", n, rep, err)
		}
		if _, v := tag.Key(0); v != 1 {
			t.Fatalf("key 0 at version %d", v)
		}
	}
}

func TestProvisionBadInput(t *testing.T) {
	h := newProvHarness(t, testbackend.Backends()[0])
	for name, body := range map[string]map[string]any{
		"no MAC":          {"template": "https://e.com/{picc}"},
		"too long":        {"template": "https://e.com/" + strings.Repeat("a", 250) + "{uid}{mac}"},
		"unknown keys":    {"template": "https://e.com/{uid}{mac}", "key_version": 7},
		"bad key version": {"template": "https://e.com/{uid}{mac}", "key_version": 0},
		"unknown field":   {"template": "https://e.com/{uid}{mac}", "sdm": []int{1}},
		"overlapping":     {"template": "https://e.com/{uid}{ctr}{mac}", "offsets": map[string]any{"mac": 10}},
		"out of range":    {"template": "https://e.com/{uid}{ctr}{mac}", "offsets": map[string]any{"mac": 250}},
		"above 24 bits":   {"template": "https://e.com/{uid}{ctr}{mac}", "offsets": map[string]any{"mac": 1 << 24}},
		"absent mirror":   {"template": "https://e.com/{uid}{ctr}{mac}", "offsets": map[string]any{"picc": 40}},
		"malformed":       {"template": "https://e.com/{uid}{ctr}{mac}", "offsets": map[string]any{"mac": -1}},
	} {
		if code, out := h.session(body); code != http.StatusBadRequest || out["error"] == nil {
			t.Errorf("%s: %d %v", name, code, out)
		}
	}
	if code, _ := h.api("POST", "/v1/sessions", "", map[string]any{"kind": "provision_desfire_ev9"}); code != http.StatusBadRequest {
		t.Errorf("unknown kind: %d", code)
	}
	if code, _ := h.api("POST", "/v1/sessions", "", map[string]any{"kind": "balance", "lock": true}); code != http.StatusBadRequest {
		t.Errorf("balance with provisioning fields: %d", code)
	}
}

// TestEndToEndIssueThenTopUp: a blank simulated DESFire card is issued
// through the real WebSocket and the Go bridge (session kind issue), then
// topped up and its balance looked up, on both card generations.
func TestEndToEndIssueThenTopUp(t *testing.T) {
	for _, b := range testbackend.Backends() {
		for _, p := range []profile.Profile{profile.AN12113(), profile.AN12113EV1(), profile.AN12113OTA()} {
			t.Run(b.Name+"/"+p.Name, func(t *testing.T) {
				h := newProvHarnessFor(t, b, p)
				card, err := simcard.New(simcard.Options{UID: cardUID})
				if err != nil {
					t.Fatal(err)
				}
				code, s := h.api("POST", "/v1/sessions", "", map[string]any{"kind": provision.KindIssue, "profile": p.Name, "initial": 100})
				if code != http.StatusCreated {
					t.Fatalf("issue session: %d %v", code, s)
				}
				rep, err := h.bridge(s["bridge_token"].(string), card, true)
				if err != nil || !rep.Result.OK || rep.Result.Kind != provision.KindIssue {
					t.Fatalf("issue: %v %+v", err, rep)
				}
				t.Logf("issue: %d exchanges", rep.Exchanges)
				code, view := h.api("GET", "/v1/sessions/"+s["session_id"].(string), "", nil)
				if code != http.StatusOK || view["status"] != "ok" || view["result"].(map[string]any)["step"] != "done" {
					t.Fatalf("issue session view: %d %v", code, view)
				}
				card.Tap()
				code, tu := h.api("POST", "/v1/topups", "idem-issue", map[string]any{"amount": 250, "currency": "EUR"})
				if code != http.StatusCreated {
					t.Fatalf("top-up: %d %v", code, tu)
				}
				rep, err = h.bridge(tu["bridge_token"].(string), card, true)
				if err != nil || !rep.Result.OK || rep.Result.Status != "applied" || *rep.Result.Balance != 350 {
					t.Fatalf("top-up: %v %+v", err, rep)
				}
				card.Tap()
				_, bs := h.api("POST", "/v1/sessions", "", map[string]any{"kind": "balance"})
				rep, err = h.bridge(bs["bridge_token"].(string), card, false)
				if err != nil || *rep.Result.Balance != 350 {
					t.Fatalf("balance: %v %+v", err, rep)
				}
				// Issuing it again is refused without touching the card.
				card.Tap()
				n := card.APDUs()
				_, s2 := h.api("POST", "/v1/sessions", "", map[string]any{"kind": provision.KindIssue, "profile": p.Name})
				rep, _ = h.bridge(s2["bridge_token"].(string), card, true)
				if rep == nil || rep.Result.OK || rep.Result.Error.Code != "already_provisioned" || card.APDUs() != n {
					t.Fatalf("second issue: %+v", rep)
				}
			})
		}
	}
}

func TestIssueBadInputAPI(t *testing.T) {
	h := newProvHarness(t, testbackend.Backends()[0])
	for name, body := range map[string]map[string]any{
		"unknown profile": {"kind": "issue", "profile": "nope"},
		"initial above":   {"kind": "issue", "profile": "an12113-ev2", "initial": 1 << 30},
		"template":        {"kind": "issue", "profile": "an12113-ev2", "template": "https://e.com/{uid}{mac}"},
		"profile on tag":  {"kind": "provision_ntag424", "template": "https://e.com/{uid}{mac}", "profile": "an12113-ev2"},
	} {
		if code, out := h.api("POST", "/v1/sessions", "", body); code != http.StatusBadRequest {
			t.Errorf("%s: %d %v", name, code, out)
		}
	}
}

// slowTag blocks the first APDU until released.
type slowTag struct {
	simTag
	started, release chan struct{}
	once             *bool
}

func (s slowTag) Transmit(ctx context.Context, a []byte) ([]byte, error) {
	if !*s.once {
		*s.once = true
		close(s.started)
		<-s.release
	}
	return s.simTag.Transmit(ctx, a)
}

// TestTwoBridgesRaceForOneTag: two bridges present the same tag; the one
// that holds the tag's lock wins, the other gets card_busy without
// touching the tag.
func TestTwoBridgesRaceForOneTag(t *testing.T) {
	h := newProvHarness(t, testbackend.Backends()[0])
	tag, err := simtag.New(simtag.Options{})
	if err != nil {
		t.Fatal(err)
	}
	body := map[string]any{"template": "https://e.com/{uid}{ctr}{mac}"}
	_, s1 := h.session(body)
	_, s2 := h.session(map[string]any{"template": "https://e.com/{uid}{ctr}{mac}"})
	once := false
	slow := slowTag{simTag: simTag{tag}, started: make(chan struct{}), release: make(chan struct{}), once: &once}
	done := make(chan *bridge.Report, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		rep, _ := bridge.Run(ctx, bridge.Options{URL: h.wsURL(), Token: s1["bridge_token"].(string), Batch: true}, slow, bridge.CardInfo{UID: tag.UID()})
		done <- rep
	}()
	<-slow.started
	n := tag.APDUs()
	second, _ := h.run(s2["bridge_token"].(string), tag, true)
	touched := tag.APDUs() != n
	close(slow.release)
	first := <-done
	if first == nil || !first.Result.OK || second == nil || second.Result.OK || second.Result.Error.Code != "card_busy" {
		t.Fatalf("first %+v, second %+v", first, second)
	}
	if touched {
		t.Fatal("the losing session sent APDUs to the tag")
	}
}
