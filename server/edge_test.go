package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/desfire-relay/relay/internal/testbackend"
	"github.com/desfire-relay/relay/internal/testcard"
	"github.com/desfire-relay/relay/internal/testserver"
	"github.com/desfire-relay/relay/mobile-bridge/bridge"
	"github.com/desfire-relay/relay/protocol"
	"github.com/desfire-relay/relay/server"
	"github.com/desfire-relay/relay/server/config"
	"github.com/desfire-relay/relay/transaction"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/profile"
)

// Tenant keys of the edge tests (the default tenant's key is apiKey).
const (
	acmeKey   = "acme-secret-key"
	globexKey = "globex-secret-key"
)

func tenantKey(id, key, tenant string) server.APIKey {
	k := server.APIKey{ID: id, Tenant: tenant}
	copy(k.Digest[:], mustHex(config.HashAPIKey(key)))
	return k
}

func mustHex(s string) []byte {
	var b []byte
	for i := 0; i+1 < len(s); i += 2 {
		v, err := strconv.ParseUint(s[i:i+2], 16, 8)
		if err != nil {
			panic(err)
		}
		b = append(b, byte(v))
	}
	return b
}

// edgeHarness is the real server over loopback with two tenant keys, the
// given limits (nil: off) and options, and an observed logger.
func edgeHarness(t *testing.T, lim *server.Limits, mutate func(*server.Options)) (*harness, *observer.ObservedLogs) {
	t.Helper()
	l, lk := testbackend.Backends()[0].Open(t)
	p := profile.AN12113()
	kp, _ := testcard.Keys(t, p)
	core, logs := observer.New(zap.InfoLevel)
	svc, err := transaction.New(transaction.Config{Ledger: l, Locker: lk, Keys: kp, Profile: p.Name, LockTTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	o := server.Options{Service: svc, APIKeyHashes: []string{config.HashAPIKey(apiKey)},
		APIKeys:         []server.APIKey{tenantKey("acme-1", acmeKey, "acme"), tenantKey("globex-1", globexKey, "globex")},
		ExchangeTimeout: 2 * time.Second, SessionTimeout: 10 * time.Second, Log: zap.New(core), Limits: testserver.NoLimits()}
	if lim != nil {
		o.Limits = *lim
	}
	if mutate != nil {
		mutate(&o)
	}
	srv := server.New(o)
	hs := testserver.Serve(t, srv.Handler())
	admin := testserver.ServeAdmin(t, srv.AdminHandler())
	return &harness{t: t, srv: srv, http: hs, admin: admin, kp: kp, p: p, l: l}, logs
}

// call sends one operator request with key and returns status, headers
// and the decoded body.
func call(t *testing.T, h *harness, key, method, path, idem string, body string, hdr map[string]string) (int, http.Header, map[string]any) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, h.http.URL+path, r)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	req.Header.Set("Content-Type", "application/json")
	if idem != "" {
		req.Header.Set("Idempotency-Key", idem)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, resp.Header, out
}

func errCode(body map[string]any) string {
	e, _ := body["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

// TestTenantIsolation: another tenant's top-ups, sessions, idempotency
// keys and card history are invisible (404 or absent), and an idempotency
// key is per tenant.
func TestTenantIsolation(t *testing.T) {
	h, _ := edgeHarness(t, nil, nil)
	const uid = "04102030405060"
	code, _, a := call(t, h, acmeKey, "POST", "/v1/topups", "order-1", `{"amount":120,"currency":"EUR","card_uid":"`+uid+`"}`, nil)
	if code != 201 {
		t.Fatalf("acme create: %d %v", code, a)
	}
	aID := a["id"].(string)
	code, _, bs := call(t, h, acmeKey, "POST", "/v1/sessions", "", `{"kind":"balance"}`, nil)
	if code != 201 {
		t.Fatalf("acme balance session: %d %v", code, bs)
	}
	sessID := bs["session_id"].(string)

	cases := []struct {
		name, method, path, body string
	}{
		{"get top-up", "GET", "/v1/topups/" + aID, ""},
		{"mint a token", "POST", "/v1/topups/" + aID + "/bridge-tokens", ""},
		{"resolve", "POST", "/v1/topups/" + aID + "/resolve", `{"outcome":"failed","reason":"x"}`},
		{"get session", "GET", "/v1/sessions/" + sessID, ""},
		{"get the top-up's session", "GET", "/v1/sessions/" + a["session_id"].(string), ""},
	}
	for _, c := range cases {
		for _, key := range []string{globexKey, apiKey} {
			t.Run(c.name+"/"+key, func(t *testing.T) {
				code, _, body := call(t, h, key, c.method, c.path, "", c.body, nil)
				if code != http.StatusNotFound || errCode(body) != "not_found" {
					t.Fatalf("%d %v, want 404 not_found", code, body)
				}
			})
		}
	}
	t.Run("same idempotency key, other tenant", func(t *testing.T) {
		// Another body: no 409 (which would say the key exists), a new top-up.
		code, _, g := call(t, h, globexKey, "POST", "/v1/topups", "order-1", `{"amount":50000,"currency":"EUR"}`, nil)
		if code != 201 || g["id"] == aID {
			t.Fatalf("globex with acme's key: %d %v", code, g)
		}
		// The same body: globex gets its own top-up back, never acme's.
		code, _, g2 := call(t, h, globexKey, "POST", "/v1/topups", "order-1", `{"amount":50000,"currency":"EUR"}`, nil)
		if code != 200 || g2["id"] != g["id"] {
			t.Fatalf("globex replay: %d %v", code, g2)
		}
		// acme's replay still finds acme's.
		code, _, a2 := call(t, h, acmeKey, "POST", "/v1/topups", "order-1", `{"amount":120,"currency":"EUR","card_uid":"`+uid+`"}`, nil)
		if code != 200 || a2["id"] != aID {
			t.Fatalf("acme replay: %d %v", code, a2)
		}
	})
	t.Run("card history and list", func(t *testing.T) {
		code, _, hist := call(t, h, globexKey, "GET", "/v1/cards/"+uid+"/topups", "", "", nil)
		if code != 200 || len(hist["topups"].([]any)) != 0 {
			t.Fatalf("globex sees acme's card history: %d %v", code, hist)
		}
		code, _, hist = call(t, h, acmeKey, "GET", "/v1/cards/"+uid+"/topups", "", "", nil)
		if code != 200 || len(hist["topups"].([]any)) != 1 {
			t.Fatalf("acme's card history: %d %v", code, hist)
		}
		code, _, list := call(t, h, globexKey, "GET", "/v1/topups", "", "", nil)
		for _, x := range list["topups"].([]any) {
			if x.(map[string]any)["id"] == aID {
				t.Fatalf("globex lists acme's top-up: %d %v", code, list)
			}
		}
	})
	t.Run("expired key", func(t *testing.T) {
		k := tenantKey("old", "old-key", "acme")
		k.ExpiresAt = time.Now().Add(-time.Minute)
		if err := h.srv.SetKeys([]server.APIKey{k, tenantKey("acme-1", acmeKey, "acme")}); err != nil {
			t.Fatal(err)
		}
		code, _, body := call(t, h, "old-key", "GET", "/v1/topups", "", "", nil)
		if code != 401 || !strings.Contains(body["error"].(map[string]any)["message"].(string), "expired") {
			t.Fatalf("expired key: %d %v", code, body)
		}
		// SetKeys replaced the keys: the default tenant's key is gone.
		if code, _, _ := call(t, h, apiKey, "GET", "/v1/topups", "", "", nil); code != 401 {
			t.Fatalf("removed key: %d", code)
		}
	})
}

// TestAuditLines: every operator action writes one audit line with key
// id, tenant, action, object id, outcome, request id and client address,
// and never the key or a bridge token; X-Request-Id goes in and out.
func TestAuditLines(t *testing.T) {
	h, logs := edgeHarness(t, nil, nil)
	code, hdr, tu := call(t, h, acmeKey, "POST", "/v1/topups", "audit-1", `{"amount":5,"currency":"EUR"}`, map[string]string{"X-Request-Id": "req-create-1"})
	if code != 201 || hdr.Get("X-Request-Id") != "req-create-1" {
		t.Fatalf("create: %d, X-Request-Id %q", code, hdr.Get("X-Request-Id"))
	}
	id := tu["id"].(string)
	type action struct {
		key, method, path, body, action, object, outcome string
	}
	actions := []action{
		{acmeKey, "GET", "/v1/topups/" + id, "", "GET /v1/topups/{id}", id, "ok"},
		{acmeKey, "POST", "/v1/topups/" + id + "/bridge-tokens", "", "POST /v1/topups/{id}/bridge-tokens", id, "ok"},
		{acmeKey, "POST", "/v1/topups/" + id + "/resolve", `{"outcome":"failed","reason":"r"}`, "POST /v1/topups/{id}/resolve", id, "refused"},
		{globexKey, "GET", "/v1/topups/" + id, "", "GET /v1/topups/{id}", id, "refused"},
		{acmeKey, "GET", "/v1/topups", "", "GET /v1/topups", "", "ok"},
		{"wrong-key", "GET", "/v1/topups/" + id, "", "GET /v1/topups/{id}", id, "refused"},
	}
	for i, a := range actions {
		rid := "req-" + strconv.Itoa(i)
		_, hdr, _ := call(t, h, a.key, a.method, a.path, "", a.body, map[string]string{"X-Request-Id": rid})
		if hdr.Get("X-Request-Id") != rid {
			t.Fatalf("%s: X-Request-Id %q, want %q", a.action, hdr.Get("X-Request-Id"), rid)
		}
	}
	// A request without an id, or with an unsafe one, gets a fresh one.
	_, hdr, _ = call(t, h, acmeKey, "GET", "/v1/topups", "", "", map[string]string{"X-Request-Id": "bad id; with spaces"})
	if got := hdr.Get("X-Request-Id"); got == "" || strings.Contains(got, " ") {
		t.Fatalf("generated X-Request-Id %q", got)
	}

	lines := logs.FilterMessage("audit").All()
	find := func(rid string) map[string]any {
		var found []map[string]any
		for _, e := range lines {
			if m := e.ContextMap(); m["request_id"] == rid {
				found = append(found, m)
			}
		}
		if len(found) != 1 {
			t.Fatalf("request %s: %d audit lines, want 1", rid, len(found))
		}
		return found[0]
	}
	m := find("req-create-1")
	if m["key_id"] != "acme-1" || m["tenant"] != "acme" || m["action"] != "POST /v1/topups" || m["object_id"] != id ||
		m["outcome"] != "ok" || m["client"] != "127.0.0.1" {
		t.Fatalf("create audit line: %v", m)
	}
	for i, a := range actions {
		m := find("req-" + strconv.Itoa(i))
		wantKey, wantTenant := "acme-1", "acme"
		switch a.key {
		case globexKey:
			wantKey, wantTenant = "globex-1", "globex"
		case "wrong-key":
			wantKey, wantTenant = "", ""
		}
		if m["action"] != a.action || m["object_id"] != a.object || m["outcome"] != a.outcome || m["key_id"] != wantKey ||
			m["tenant"] != wantTenant || m["client"] != "127.0.0.1" {
			t.Errorf("%s: audit line %v", a.action, m)
		}
	}
	for _, e := range logs.All() {
		text := e.Message + " " + strings.Join(func() []string {
			var s []string
			for k, v := range e.ContextMap() {
				s = append(s, k+"="+toString(v))
			}
			return s
		}(), " ")
		for _, secret := range []string{acmeKey, globexKey, "wrong-key", tu["bridge_token"].(string)} {
			if strings.Contains(text, secret) {
				t.Fatalf("a log line holds a secret: %s", text)
			}
		}
	}
}

func toString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestSlowBodyIsCut: a client announcing a large body and trickling it
// is cut at the body bound, even when its key is refused before the body
// is read; an oversized body is 413.
func TestSlowBodyIsCut(t *testing.T) {
	lim := testserver.NoLimits()
	lim.BodyTimeout = 300 * time.Millisecond
	h, _ := edgeHarness(t, &lim, nil)
	for _, key := range []string{"", acmeKey} {
		t.Run("key="+strconv.FormatBool(key != ""), func(t *testing.T) {
			c, err := net.Dial("tcp", strings.TrimPrefix(h.http.URL, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			req := "POST /v1/topups HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nIdempotency-Key: slow\r\nContent-Length: 200000\r\n"
			if key != "" {
				req += "Authorization: Bearer " + key + "\r\n"
			}
			if _, err := io.WriteString(c, req+"\r\n{"); err != nil {
				t.Fatal(err)
			}
			// Trickle one byte every 50 ms for up to 100 times the bound; the
			// server must close the connection long before.
			closed := make(chan struct{})
			go func() {
				defer close(closed)
				io.Copy(io.Discard, c)
			}()
			for i := 0; i < 200; i++ {
				select {
				case <-closed:
					return
				case <-time.After(50 * time.Millisecond):
				}
				if _, err := c.Write([]byte(" ")); err != nil {
					return // the server closed the connection
				}
			}
			t.Fatal("the server kept a trickled body open for 10 s (bound 300 ms)")
		})
	}
	t.Run("too large", func(t *testing.T) {
		code, _, body := call(t, h, acmeKey, "POST", "/v1/topups", "big", `{"amount":1,"currency":"EUR","reference":"`+strings.Repeat("x", 20000)+`"}`, nil)
		if code != http.StatusRequestEntityTooLarge || errCode(body) != "payload_too_large" {
			t.Fatalf("%d %v", code, body)
		}
	})
}

// TestReplacedTokenRefused: a new token for a top-up (minted or by an
// idempotent replay) retires the earlier unused one.
func TestReplacedTokenRefused(t *testing.T) {
	h, _ := edgeHarness(t, nil, nil)
	card := h.card(0)
	_, _, tu := call(t, h, apiKey, "POST", "/v1/topups", "repl", `{"amount":3,"currency":"EUR"}`, nil)
	first := tu["bridge_token"].(string)
	_, _, again := call(t, h, apiKey, "POST", "/v1/topups", "repl", `{"amount":3,"currency":"EUR"}`, nil)
	second := again["bridge_token"].(string)
	code, _, minted := call(t, h, apiKey, "POST", "/v1/topups/"+tu["id"].(string)+"/bridge-tokens", "", "", nil)
	if code != 201 {
		t.Fatalf("mint: %d %v", code, minted)
	}
	third := minted["bridge_token"].(string)
	for name, tok := range map[string]string{"original": first, "replay's": second} {
		_, resp, err := dialURL(h.wsURL(), http.Header{"Authorization": {"Bearer " + tok}}, "", protocol.Subprotocol)
		if err == nil || resp == nil || resp.StatusCode != 401 {
			t.Fatalf("%s token after a newer one: %v %v", name, err, resp)
		}
	}
	_, _, sess := call(t, h, apiKey, "GET", "/v1/sessions/"+tu["session_id"].(string), "", "", nil)
	if sess["status"] != "failed" || sess["error_code"] != ledger.CodeTokenReplaced {
		t.Fatalf("replaced session: %v", sess)
	}
	rep, err := h.bridge(third, card, true)
	if err != nil || rep.Result.Status != "applied" {
		t.Fatalf("newest token: %v %+v", err, rep)
	}
}

// TestPlainGETDoesNotBurnToken: requests that are not a WebSocket upgrade,
// or that put the token in the query of a server that refuses it, are
// refused before the token is consumed; the token then still works, in
// the Authorization header or the subprotocol list.
func TestPlainGETDoesNotBurnToken(t *testing.T) {
	h, _ := edgeHarness(t, nil, nil)
	card := h.card(0)
	_, _, tu := call(t, h, apiKey, "POST", "/v1/topups", "plain", `{"amount":4,"currency":"EUR"}`, nil)
	tok := tu["bridge_token"].(string)
	for _, c := range []struct {
		name   string
		query  string
		hdr    map[string]string
		status int
		code   string
	}{
		{"plain GET", "", map[string]string{"Authorization": "Bearer " + tok, "Sec-WebSocket-Protocol": protocol.Subprotocol}, 426, "upgrade_required"},
		{"no key", "", map[string]string{"Authorization": "Bearer " + tok, "Sec-WebSocket-Protocol": protocol.Subprotocol,
			"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13"}, 426, "upgrade_required"},
		{"token in query", "?token=" + tok, map[string]string{"Sec-WebSocket-Protocol": protocol.Subprotocol,
			"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}, 400, "token_in_query"},
	} {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", h.http.URL+"/v1/bridge"+c.query, nil)
			for k, v := range c.hdr {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var body map[string]any
			json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if resp.StatusCode != c.status || errCode(body) != c.code {
				t.Fatalf("%d %v, want %d %s", resp.StatusCode, body, c.status, c.code)
			}
		})
	}
	// The token survived: a bridge that offers it as a subprotocol tops up.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rep, err := bridge.Run(ctx, bridge.Options{URL: h.wsURL(), Token: tok, TokenInSubprotocol: true, Batch: true},
		bridge.Sim{Card: card}, bridge.CardInfo{UID: card.UID()})
	if err != nil || rep.Result.Status != "applied" {
		t.Fatalf("token after the refused requests, as a subprotocol: %v %+v", err, rep)
	}
	// The query form works where the server allows it.
	hq, _ := edgeHarness(t, nil, func(o *server.Options) { o.AllowTokenInQuery = true })
	_, _, tq := call(t, hq, apiKey, "POST", "/v1/topups", "q", `{"amount":4,"currency":"EUR"}`, nil)
	card = hq.card(0)
	rep, err = bridge.Run(ctx, bridge.Options{URL: hq.wsURL(), Token: tq["bridge_token"].(string), TokenInQuery: true, Batch: true},
		bridge.Sim{Card: card}, bridge.CardInfo{UID: card.UID()})
	if err != nil || rep.Result.Status != "applied" {
		t.Fatalf("query token where allowed: %v %+v", err, rep)
	}
}

// TestRateLimits: refused keys from one address get 429 with Retry-After
// after the burst (even a good key then waits); a key past its rate gets
// 429; so does an address past its rate.
func TestRateLimits(t *testing.T) {
	t.Run("refused keys", func(t *testing.T) {
		lim := testserver.NoLimits()
		lim.AuthFailRate, lim.AuthFailBurst = 0.01, 5
		h, _ := edgeHarness(t, &lim, nil)
		var codes []int
		for i := 0; i < 20; i++ {
			code, _, _ := call(t, h, "guess-"+strconv.Itoa(i), "GET", "/v1/topups", "", "", nil)
			codes = append(codes, code)
		}
		for i, c := range codes {
			want := 401
			if i >= 5 {
				want = 429
			}
			if c != want {
				t.Fatalf("attempt %d: %d, want %d (all: %v)", i, c, want, codes)
			}
		}
		code, hdr, body := call(t, h, acmeKey, "GET", "/v1/topups", "", "", nil)
		if code != 429 || errCode(body) != "rate_limited" {
			t.Fatalf("good key from the guessing address: %d %v", code, body)
		}
		if s, err := strconv.Atoi(hdr.Get("Retry-After")); err != nil || s < 1 {
			t.Fatalf("Retry-After %q", hdr.Get("Retry-After"))
		}
	})
	t.Run("per key", func(t *testing.T) {
		lim := testserver.NoLimits()
		lim.KeyRate, lim.KeyBurst = 0.01, 3
		h, _ := edgeHarness(t, &lim, nil)
		for i := 0; i < 3; i++ {
			if code, _, _ := call(t, h, acmeKey, "POST", "/v1/sessions", "", `{"kind":"balance"}`, nil); code != 201 {
				t.Fatalf("within the burst: %d", code)
			}
		}
		code, hdr, _ := call(t, h, acmeKey, "POST", "/v1/sessions", "", `{"kind":"balance"}`, nil)
		if code != 429 || hdr.Get("Retry-After") == "" {
			t.Fatalf("past the key's rate: %d Retry-After %q", code, hdr.Get("Retry-After"))
		}
		// Another key is not affected.
		if code, _, _ := call(t, h, globexKey, "POST", "/v1/sessions", "", `{"kind":"balance"}`, nil); code != 201 {
			t.Fatalf("other key: %d", code)
		}
	})
	t.Run("per address", func(t *testing.T) {
		lim := testserver.NoLimits()
		lim.AddrRate, lim.AddrBurst = 0.01, 4
		h, _ := edgeHarness(t, &lim, nil)
		var last int
		var hdr http.Header
		for i := 0; i < 5; i++ {
			last, hdr, _ = call(t, h, "", "GET", "/healthz", "", "", nil)
		}
		if last != 429 || hdr.Get("Retry-After") == "" {
			t.Fatalf("past the address rate: %d", last)
		}
	})
}

// TestBridgesPerAddress: one address holds at most BridgesPerAddr open
// bridge sockets; the next is 429 and keeps its token.
func TestBridgesPerAddress(t *testing.T) {
	lim := testserver.NoLimits()
	lim.BridgesPerAddr = 2
	h, _ := edgeHarness(t, &lim, nil)
	var open []*websocket.Conn
	for i := 0; i < 2; i++ {
		c, _ := edgeSession(t, h, "ws-"+strconv.Itoa(i))
		open = append(open, c)
	}
	_, _, tu := call(t, h, apiKey, "POST", "/v1/topups", "ws-x", `{"amount":1,"currency":"EUR"}`, nil)
	tok := tu["bridge_token"].(string)
	_, resp, err := dialURL(h.wsURL(), http.Header{"Authorization": {"Bearer " + tok}}, "", protocol.Subprotocol)
	if err == nil || resp == nil || resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("third socket: %v %v", err, resp)
	}
	for _, c := range open {
		c.Close(websocket.StatusNormalClosure, "")
	}
	// Once the others closed, the refused bridge connects with its token.
	for i := 0; ; i++ {
		c, resp, err := dialURL(h.wsURL(), http.Header{"Authorization": {"Bearer " + tok}}, "", protocol.Subprotocol)
		if err == nil {
			c.CloseNow()
			break
		}
		if i == 100 || resp == nil || resp.StatusCode != 429 {
			t.Fatalf("after the others closed: %v %v", err, resp)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCardFloodDuringExchange: a bridge that answers a transceive with a
// stream of card messages is cut with a protocol violation.
func TestCardFloodDuringExchange(t *testing.T) {
	h, _ := edgeHarness(t, nil, nil)
	c, id := edgeSession(t, h, "flood")
	defer c.CloseNow()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c.Write(ctx, websocket.MessageText, []byte(`{"type":"hello","bridge":{},"features":["batch"],"card":{"uid":"04102030405060"}}`))
	for {
		_, msg, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("no transceive: %v", err)
		}
		if bytes.Contains(msg, []byte(`"transceive"`)) {
			break
		}
	}
	sent := 0
	for ; sent < 1000; sent++ {
		if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"card","uid":"04102030405060"}`)); err != nil {
			break
		}
	}
	if code := closeCode(c); code != protocol.CloseProtocol {
		t.Fatalf("close code %d after %d card messages", code, sent)
	}
	_, tu := h.api("GET", "/v1/topups/"+id, "", nil)
	if tu["status"] == "applied" {
		t.Fatalf("flooding bridge applied: %v", tu)
	}
}

// TestAdminListener: metrics and the OpenAPI document are served on the
// admin handler only; pprof only when enabled.
func TestAdminListener(t *testing.T) {
	h, _ := edgeHarness(t, nil, nil)
	for _, p := range []string{"/metrics", "/openapi.yaml", "/debug/pprof/"} {
		resp, err := http.Get(h.http.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 404 {
			t.Errorf("public %s: %d, want 404", p, resp.StatusCode)
		}
	}
	get := func(base, p string) int {
		resp, err := http.Get(base + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if get(h.admin.URL, "/metrics") != 200 || get(h.admin.URL, "/openapi.yaml") != 200 {
		t.Fatal("admin listener lacks metrics or the OpenAPI document")
	}
	if c := get(h.admin.URL, "/debug/pprof/"); c != 404 {
		t.Fatalf("pprof off by default: %d", c)
	}
	hp, _ := edgeHarness(t, nil, func(o *server.Options) { o.Pprof = true })
	if c := get(hp.admin.URL, "/debug/pprof/"); c != 200 {
		t.Fatalf("pprof when enabled: %d", c)
	}
}

// TestTLSRefusesCBCAndSendsHSTS: the server's TLS refuses a client that
// offers only CBC suites, accepts AEAD over TLS 1.2, refuses TLS 1.2 in
// TLS 1.3-only mode, and sends HSTS.
func TestTLSRefusesCBCAndSendsHSTS(t *testing.T) {
	for _, only13 := range []bool{false, true} {
		t.Run("tls13only="+strconv.FormatBool(only13), func(t *testing.T) {
			h, _ := edgeHarness(t, nil, func(o *server.Options) { o.HSTS = true })
			ts := httptest.NewUnstartedServer(h.srv.Handler())
			ts.TLS = server.TLSConfig(only13)
			ts.StartTLS()
			defer ts.Close()
			pool := ts.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
			addr := strings.TrimPrefix(ts.URL, "https://")
			handshake := func(cfg *tls.Config) error {
				cfg.RootCAs, cfg.ServerName = pool, "example.com"
				c, err := tls.Dial("tcp", addr, cfg)
				if err != nil {
					return err
				}
				return c.Close()
			}
			cbc := &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{
				tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
				tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
				tls.TLS_RSA_WITH_AES_128_CBC_SHA, tls.TLS_RSA_WITH_AES_128_GCM_SHA256}}
			if err := handshake(cbc); err == nil {
				t.Fatal("a client offering only CBC (and RSA key exchange) suites was accepted")
			}
			gcm12 := &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}}
			if err := handshake(gcm12); (err == nil) == only13 {
				t.Fatalf("TLS 1.2 AEAD: err %v", err)
			}
			if err := handshake(&tls.Config{MinVersion: tls.VersionTLS13}); err != nil {
				t.Fatalf("TLS 1.3: %v", err)
			}
			resp, err := ts.Client().Get(ts.URL + "/healthz")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if !strings.Contains(resp.Header.Get("Strict-Transport-Security"), "max-age=") {
				t.Fatalf("no HSTS: %v", resp.Header)
			}
		})
	}
}

// TestJSONDuplicateKeysAndUTF8: a body naming a key twice, or holding
// invalid UTF-8, is refused with its own code and writes nothing.
func TestJSONDuplicateKeysAndUTF8(t *testing.T) {
	h, _ := edgeHarness(t, nil, nil)
	cases := []struct {
		name, body, code string
	}{
		{"duplicate amount", `{"amount":1,"amount":50000,"currency":"EUR"}`, "duplicate_key"},
		{"duplicate, other spelling of the value", `{"currency":"EUR","amount":1,"currency":"EUR"}`, "duplicate_key"},
		{"invalid UTF-8 in reference", "{\"amount\":1,\"currency\":\"EUR\",\"reference\":\"caf\xe9\"}", "invalid_utf8"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, _, body := call(t, h, apiKey, "POST", "/v1/topups", "dup-"+strconv.Itoa(i), c.body, nil)
			if code != 400 || errCode(body) != c.code {
				t.Fatalf("%d %v, want 400 %s", code, body, c.code)
			}
		})
	}
	// Nested objects are checked too; distinct keys in sibling objects are fine.
	code, _, body := call(t, h, apiKey, "POST", "/v1/topups/00000000-0000-0000-0000-000000000000/resolve", "", `{"outcome":"failed","reason":"a","reason":"b"}`, nil)
	if code != 400 || errCode(body) != "duplicate_key" {
		t.Fatalf("resolve with a duplicate key: %d %v", code, body)
	}
	_, _, list := call(t, h, apiKey, "GET", "/v1/topups", "", "", nil)
	if n := len(list["topups"].([]any)); n != 0 {
		t.Fatalf("refused bodies created %d top-ups", n)
	}
}
