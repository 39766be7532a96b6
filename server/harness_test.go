package server_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/desfire-relay/relay/desfire/simcard"
	"github.com/desfire-relay/relay/internal/testcard"
	"github.com/desfire-relay/relay/internal/testserver"
	"github.com/desfire-relay/relay/mobile-bridge/bridge"
	"github.com/desfire-relay/relay/protocol"
	"github.com/desfire-relay/relay/server"
	"github.com/desfire-relay/relay/transaction/keys"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/profile"
)

const apiKey = testserver.APIKey

// harness is the server of the edge tests, with the options they change.
type harness struct {
	t     *testing.T
	srv   *server.Server
	http  *httptest.Server
	admin *httptest.Server
	kp    keys.Provider
	p     profile.Profile
	l     ledger.Ledger
}

func (h *harness) card(initial int32) *simcard.Card {
	h.t.Helper()
	return testcard.Issue(h.t, h.p, h.kp, cardUID, initial)
}

func (h *harness) api(method, path, idem string, body any) (int, map[string]any) {
	h.t.Helper()
	return testserver.Call(h.t, h.http.URL, apiKey, method, path, idem, body)
}

func (h *harness) wsURL() string { return "ws" + strings.TrimPrefix(h.http.URL, "http") + "/v1/bridge" }

func (h *harness) bridge(token string, card *simcard.Card, batch bool) (*bridge.Report, error) {
	return testserver.RunBridge(h.wsURL(), token, card, batch)
}

// dialURL opens a bridge WebSocket at url with the given header, query and
// subprotocols.
func dialURL(url string, header http.Header, query string, subprotocols ...string) (*websocket.Conn, *http.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return websocket.Dial(ctx, url+query, &websocket.DialOptions{HTTPHeader: header, Subprotocols: subprotocols})
}

// edgeSession creates a top-up and opens its bridge WebSocket on h.
func edgeSession(t *testing.T, h *harness, key string) (*websocket.Conn, string) {
	t.Helper()
	_, tu := h.api("POST", "/v1/topups", key, map[string]any{"amount": 10, "currency": "EUR"})
	c, _, err := dialURL(h.wsURL(), http.Header{"Authorization": {"Bearer " + tu["bridge_token"].(string)}}, "", protocol.Subprotocol)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadLimit(-1)
	return c, tu["id"].(string)
}
