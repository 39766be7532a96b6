package server_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/desfire-relay/relay/internal/testbackend"
	"github.com/desfire-relay/relay/internal/testserver"
	"github.com/desfire-relay/relay/protocol"
	"github.com/desfire-relay/relay/server"
	"github.com/desfire-relay/relay/server/config"
	"github.com/desfire-relay/relay/transaction"
	"github.com/desfire-relay/relay/transaction/keys"
	"github.com/desfire-relay/relay/transaction/profile"
)

func TestOperatorAPIBadInput(t *testing.T) {
	h := newHarness(t, testbackend.Backends()[0], profile.AN12113(), time.Second)
	type req struct {
		method, path, key, idem, ctype, body string
		status                               int
		code                                 string
	}
	long := strings.Repeat("x", 9000)
	cases := map[string]req{
		"no api key":         {"GET", "/v1/topups/00000000-0000-0000-0000-000000000000", "-", "", "", "", 401, "unauthorized"},
		"wrong api key":      {"GET", "/v1/topups/00000000-0000-0000-0000-000000000000", "nope", "", "", "", 401, "unauthorized"},
		"bad id":             {"GET", "/v1/topups/xyz", "", "", "", "", 400, "invalid_request"},
		"unknown id":         {"GET", "/v1/topups/00000000-0000-0000-0000-000000000000", "", "", "", "", 404, "not_found"},
		"no idempotency key": {"POST", "/v1/topups", "", "", "application/json", `{"amount":1,"currency":"EUR"}`, 400, "invalid_request"},
		"unknown field":      {"POST", "/v1/topups", "", "k1", "application/json", `{"amount":1,"currency":"EUR","x":1}`, 400, "invalid_request"},
		"malformed json":     {"POST", "/v1/topups", "", "k2", "application/json", `{"amount":`, 400, "invalid_request"},
		"trailing json":      {"POST", "/v1/topups", "", "k3", "application/json", `{"amount":1,"currency":"EUR"} {}`, 400, "invalid_request"},
		"oversized body":     {"POST", "/v1/topups", "", "k4", "application/json", `{"reference":"` + long + `"}`, 413, "payload_too_large"},
		"wrong content type": {"POST", "/v1/topups", "", "k5", "text/plain", `{"amount":1,"currency":"EUR"}`, 415, "unsupported_media_type"},
		"no amount":          {"POST", "/v1/topups", "", "k6", "application/json", `{"currency":"EUR"}`, 400, "invalid_request"},
		"negative amount":    {"POST", "/v1/topups", "", "k7", "application/json", `{"amount":-5,"currency":"EUR"}`, 400, "invalid_request"},
		"amount too big":     {"POST", "/v1/topups", "", "k8", "application/json", `{"amount":99999999,"currency":"EUR"}`, 400, "amount_limit"},
		"amount not integer": {"POST", "/v1/topups", "", "k9", "application/json", `{"amount":1.5,"currency":"EUR"}`, 400, "invalid_request"},
		"currency mismatch":  {"POST", "/v1/topups", "", "k10", "application/json", `{"amount":1,"currency":"USD"}`, 400, "currency_mismatch"},
		"bad currency":       {"POST", "/v1/topups", "", "k11", "application/json", `{"amount":1,"currency":"euro"}`, 400, "invalid_request"},
		"bad card uid":       {"POST", "/v1/topups", "", "k12", "application/json", `{"amount":1,"currency":"EUR","card_uid":"zz"}`, 400, "invalid_request"},
		"bad session kind":   {"POST", "/v1/sessions", "", "", "application/json", `{"kind":"topup"}`, 400, "invalid_request"},
		"bad history uid":    {"GET", "/v1/cards/123/topups", "", "", "", "", 400, "invalid_request"},
		"unknown route":      {"GET", "/v2/nothing", "", "", "", "", 404, "not_found"},
		"token for unknown":  {"POST", "/v1/topups/00000000-0000-0000-0000-000000000000/bridge-tokens", "", "", "", "", 404, "not_found"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			r, _ := http.NewRequest(c.method, h.HTTP.URL+c.path, strings.NewReader(c.body))
			switch c.key {
			case "":
				r.Header.Set("Authorization", "Bearer "+testserver.APIKey)
			case "-":
			default:
				r.Header.Set("Authorization", "Bearer "+c.key)
			}
			if c.idem != "" {
				r.Header.Set("Idempotency-Key", c.idem)
			}
			if c.ctype != "" {
				r.Header.Set("Content-Type", c.ctype)
			}
			resp, err := http.DefaultClient.Do(r)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body struct {
				Error struct{ Code, Message string }
			}
			decodeJSON(resp, &body)
			if resp.StatusCode != c.status || body.Error.Code != c.code || body.Error.Message == "" {
				t.Fatalf("%d %+v, want %d %s", resp.StatusCode, body, c.status, c.code)
			}
		})
	}
	// Nothing was written by the refused creates.
	code, hist := h.API("GET", "/v1/cards/04102030405060/topups", "", nil)
	if code != 200 || len(hist["topups"].([]any)) != 0 {
		t.Fatalf("history %d %v", code, hist)
	}
}

func TestExpiredTokenRefusedBeforeUpgrade(t *testing.T) {
	l, lk := testbackend.Backends()[0].Open(t)
	f, _ := keys.DevFile(nil, 0x014499)
	kp, _ := keys.New(f)
	svc, err := transaction.New(transaction.Config{Ledger: l, Locker: lk, Keys: kp, TokenTTL: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	srv := server.New(server.Options{Service: svc, APIKeyHashes: []string{config.HashAPIKey(testserver.APIKey)}})
	h := &testserver.Harness{T: t, Server: srv, HTTP: newTestServer(t, srv)}
	_, tu := h.API("POST", "/v1/topups", "e", map[string]any{"amount": 1, "currency": "EUR"})
	time.Sleep(20 * time.Millisecond)
	_, resp, err := dial(h, http.Header{"Authorization": {"Bearer " + tu["bridge_token"].(string)}}, "", protocol.Subprotocol)
	if err == nil || resp == nil || resp.StatusCode != 401 {
		t.Fatalf("expired token: %v %v", err, resp)
	}
	// Readiness reports the ledger.
	r, _ := http.Get(h.HTTP.URL + "/readyz")
	if r.StatusCode != 200 {
		t.Fatalf("readyz %d", r.StatusCode)
	}
	l.Close()
	r, _ = http.Get(h.HTTP.URL + "/readyz")
	if r.StatusCode != 503 {
		t.Fatalf("readyz with the ledger closed: %d", r.StatusCode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	srv.Drain(ctx)
}
