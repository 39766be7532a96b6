package server_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/desfire-relay/relay/internal/testbackend"
	"github.com/desfire-relay/relay/transaction/profile"
)

func TestMetricsAfterASession(t *testing.T) {
	h := newHarness(t, testbackend.Backends()[0], profile.AN12113(), 3*time.Second)
	card := h.Card(cardUID, 0)
	_, tu := h.API("POST", "/v1/topups", "m", map[string]any{"amount": 5, "currency": "EUR"})
	if _, err := h.Bridge(tu["bridge_token"].(string), card, true); err != nil {
		t.Fatal(err)
	}
	scrape := func() string {
		resp, err := http.Get(h.Admin.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	// The session's goroutine ends after its close handshake, just after
	// the bridge has its result: wait for it.
	text := scrape()
	for i := 0; i < 50 && !strings.Contains(text, "relay_sessions_active 0"); i++ {
		time.Sleep(20 * time.Millisecond)
		text = scrape()
	}
	for _, want := range []string{
		"relay_sessions_active 0",
		`relay_sessions_total{kind="topup",outcome="ok"} 1`,
		`relay_topups_total{status="applied"} 1`,
		"relay_session_exchanges_sum 3",
		"relay_exchange_seconds_count 3",
		"relay_server_gap_seconds_count 2", // between the 3 exchanges
		"relay_lock_wait_seconds_count 1",
		"relay_ledger_errors_total 0",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
