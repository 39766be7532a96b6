package server_test

import (
	"context"
	"encoding/hex"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/desfire-relay/relay/internal/testcard"
	"github.com/desfire-relay/relay/internal/testserver"
	"github.com/desfire-relay/relay/server"
	"github.com/desfire-relay/relay/server/config"
	"github.com/desfire-relay/relay/transaction"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/ledger/sqlite"
	"github.com/desfire-relay/relay/transaction/lock"
	"github.com/desfire-relay/relay/transaction/profile"
)

// TestWebhookRoutes: a top-up's outbox events are listed for its tenant
// only, redelivery is tenant-scoped, and a server without webhooks says
// so with a stable code.
func TestWebhookRoutes(t *testing.T) {
	l, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "l.db"), ledger.Config{Outbox: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	p := profile.AN12113()
	kp, _ := testcard.Keys(t, p)
	svc, err := transaction.New(transaction.Config{Ledger: l, Locker: lock.NewMemory(), Keys: kp, Profile: p.Name, LockTTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	srv := server.New(server.Options{Service: svc, APIKeyHashes: []string{config.HashAPIKey(apiKey)}, Outbox: l.(ledger.Outbox),
		APIKeys:         []server.APIKey{tenantKey("acme-1", acmeKey, "acme"), tenantKey("globex-1", globexKey, "globex")},
		ExchangeTimeout: 2 * time.Second, SessionTimeout: 10 * time.Second, Limits: testserver.NoLimits()})
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	h := &harness{t: t, srv: srv, http: hs, kp: kp, p: p, l: l}

	card := h.card(100)
	uid := hex.EncodeToString(card.UID())
	code, _, tu := call(t, h, acmeKey, "POST", "/v1/topups", "hook-1", `{"amount":120,"currency":"EUR","card_uid":"`+uid+`"}`, nil)
	if code != 201 {
		t.Fatalf("create: %d %v", code, tu)
	}
	if rep, err := h.bridge(tu["bridge_token"].(string), card, true); err != nil || !rep.Result.OK {
		t.Fatalf("session: %+v %v", rep, err)
	}
	id := tu["id"].(string)
	code, _, out := call(t, h, acmeKey, "GET", "/v1/topups/"+id+"/events", "", "", nil)
	if code != 200 {
		t.Fatalf("events: %d %v", code, out)
	}
	evs := out["events"].([]any)
	var types []string
	for _, e := range evs {
		types = append(types, e.(map[string]any)["type"].(string))
	}
	if got := strings.Join(types, ","); got != "topup.in_doubt,topup.applied,session.finished" {
		t.Fatalf("events %s", got)
	}
	eid := evs[1].(map[string]any)["id"].(string)
	for _, c := range []struct {
		key, method, path string
		want              int
		code              string
	}{
		{globexKey, "GET", "/v1/topups/" + id + "/events", 404, "not_found"},
		{globexKey, "POST", "/v1/events/" + eid + "/redeliver", 404, "not_found"},
		{acmeKey, "POST", "/v1/events/not-a-uuid/redeliver", 400, "invalid_request"},
		{acmeKey, "GET", "/v1/topups/not-a-uuid/events", 400, "invalid_request"},
		{acmeKey, "POST", "/v1/events/" + eid + "/redeliver", 202, ""},
	} {
		code, _, out := call(t, h, c.key, c.method, c.path, "", "", nil)
		if code != c.want || (c.code != "" && out["error"].(map[string]any)["code"] != c.code) {
			t.Errorf("%s %s: %d %v, want %d %s", c.method, c.path, code, out, c.want, c.code)
		}
	}

	off, _ := edgeHarness(t, nil, nil)
	code, _, out = call(t, off, acmeKey, "GET", "/v1/topups/"+id+"/events", "", "", nil)
	if code != 404 || out["error"].(map[string]any)["code"] != "webhooks_disabled" {
		t.Fatalf("webhooks off: %d %v", code, out)
	}
}
