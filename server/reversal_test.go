package server_test

import (
	"encoding/hex"
	"testing"
)

// TestReversalAPI: an applied credit is reversed through the API and a
// bridge session with the card present; the card is back at its value
// before the credit; asking again returns the same reversal; the wrong
// tenant, a pending top-up and a reversal itself are refused.
func TestReversalAPI(t *testing.T) {
	h, _ := edgeHarness(t, nil, nil)
	card := h.card(100)
	uid := hex.EncodeToString(card.UID())
	code, _, tu := call(t, h, acmeKey, "POST", "/v1/topups", "rev-1", `{"amount":250,"currency":"EUR","card_uid":"`+uid+`"}`, nil)
	if code != 201 {
		t.Fatalf("create: %d %v", code, tu)
	}
	if rep, err := h.bridge(tu["bridge_token"].(string), card, true); err != nil || !rep.Result.OK || *rep.Result.Balance != 350 {
		t.Fatalf("credit: %+v %v", rep, err)
	}
	card.Tap()
	id := tu["id"].(string)
	code, _, rv := call(t, h, acmeKey, "POST", "/v1/topups/"+id+"/reversal", "", "", nil)
	if code != 201 || rv["kind"] != "reversal" || rv["reverses"] != id || rv["amount"].(float64) != 250 || rv["status"] != "pending" || rv["bridge_token"] == nil {
		t.Fatalf("reversal: %d %v", code, rv)
	}
	rep, err := h.bridge(rv["bridge_token"].(string), card, true)
	if err != nil || !rep.Result.OK || *rep.Result.Balance != 100 {
		t.Fatalf("reversal session: %+v %v", rep, err)
	}
	card.Tap()
	code, _, got := call(t, h, acmeKey, "GET", "/v1/topups/"+rv["id"].(string), "", "", nil)
	if code != 200 || got["status"] != "applied" || got["kind"] != "reversal" || got["balance_after"].(float64) != 100 {
		t.Fatalf("reversal after session: %d %v", code, got)
	}
	code, _, again := call(t, h, acmeKey, "POST", "/v1/topups/"+id+"/reversal", "", "", nil)
	if code != 200 || again["id"] != rv["id"] || again["bridge_token"] != nil {
		t.Fatalf("second request: %d %v", code, again)
	}
	code, _, pend := call(t, h, acmeKey, "POST", "/v1/topups", "rev-2", `{"amount":5,"currency":"EUR"}`, nil)
	if code != 201 {
		t.Fatal(pend)
	}
	for _, c := range []struct {
		key, id string
		want    int
		code    string
	}{
		{globexKey, id, 404, "not_found"},
		{acmeKey, pend["id"].(string), 409, "not_reversible"},
		{acmeKey, rv["id"].(string), 409, "not_reversible"},
		{acmeKey, "nope", 400, "invalid_request"},
	} {
		code, _, out := call(t, h, c.key, "POST", "/v1/topups/"+c.id+"/reversal", "", "", nil)
		if code != c.want || out["error"].(map[string]any)["code"] != c.code {
			t.Errorf("reversal of %s: %d %v, want %d %s", c.id, code, out, c.want, c.code)
		}
	}
}
