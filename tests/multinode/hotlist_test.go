package multinode

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/desfire-relay/relay/internal/testcard"
	"github.com/desfire-relay/relay/mobile-bridge/bridge"
	"github.com/desfire-relay/relay/transaction/cardscript"
	"github.com/desfire-relay/relay/transaction/keys"
)

// do sends one operator request to the node and returns its status and
// decoded answer.
func (n *node) do(t *testing.T, method, path, idem, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+n.addr+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+apiKey)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if idem != "" {
		req.Header.Set("Idempotency-Key", idem)
	}
	resp, err := n.api.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// TestBlockOnOtherNode: a card blocked through one node is refused by the
// other at once — at creation and by a session already handed out — with
// nothing sent to the card; its balance lookup still works there; an
// unblock on the second node frees it on the first.
func TestBlockOnOtherNode(t *testing.T) {
	a, b, p, kp := twoNodes(t)
	card := testcard.Issue(t, p, kp, uid, 25)
	uidHex := strings.ToUpper(hex.EncodeToString(uid))
	run := func(n *node, token string) *bridge.Report {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		card.Tap()
		rep, _ := bridge.Run(ctx, bridge.Options{URL: "ws://" + n.addr + "/v1/bridge", Token: token, Batch: true}, bridge.Sim{Card: card}, bridge.CardInfo{UID: uid})
		if rep == nil {
			t.Fatal("no result from the bridge")
		}
		return rep
	}
	// Paid before the card was known, handed to a bridge on node A.
	tu := a.post(t, "/v1/topups", "order-1", map[string]any{"amount": 400, "currency": "EUR"})

	if code, out := b.do(t, "PUT", "/v1/cards/"+uidHex+"/block", "", `{"reason":"reported stolen"}`); code != 200 || out["blocked"] != true {
		t.Fatalf("block on B: %d %v", code, out)
	}
	if code, out := a.do(t, "POST", "/v1/topups", "order-2", `{"amount":100,"currency":"EUR","card_uid":"`+uidHex+`"}`); code != 409 {
		t.Fatalf("create for the blocked card on A: %d %v", code, out)
	}
	rep := run(a, tu["bridge_token"].(string))
	if rep.Result.OK || rep.Result.Error == nil || rep.Result.Error.Code != "card_blocked" || rep.Result.Status != "failed" {
		t.Fatalf("session on A for the card blocked on B: %+v", rep.Result)
	}
	bs := a.post(t, "/v1/sessions", "", map[string]any{"kind": "balance"})
	if rep := run(a, bs["bridge_token"].(string)); !rep.Result.OK || rep.Result.Balance == nil || *rep.Result.Balance != 25 {
		t.Fatalf("balance lookup of the blocked card on A: %+v", rep.Result)
	}
	card.Tap()
	bal, err := cardscript.Balance(context.Background(), card, cardscript.BalanceParams{Profile: p, UID: uid,
		Key: func(ctx context.Context, no, ver byte) ([]byte, error) {
			return kp.CardKey(ctx, keys.Ref{AID: p.AID, KeyNo: no, Version: ver}, uid)
		}})
	if err != nil || bal.Value != 25 || len(bal.TopUps) != 0 {
		t.Fatalf("blocked card changed: value %d, %d top-up records (%v)", bal.Value, len(bal.TopUps), err)
	}
	// Unblocked on A, the same top-up goes through on B.
	if code, out := a.do(t, "DELETE", "/v1/cards/"+uidHex+"/block", "", ""); code != 200 {
		t.Fatalf("unblock on A: %d %v", code, out)
	}
	tk := b.post(t, "/v1/topups/"+tu["id"].(string)+"/bridge-tokens", "", nil)
	if rep := run(b, tk["bridge_token"].(string)); !rep.Result.OK || rep.Result.Status != "applied" || *rep.Result.Balance != 425 {
		t.Fatalf("after unblock on A, session on B: %+v", rep.Result)
	}
	t.Logf("block on B refused at once on A (create 409, session card_blocked with the card untouched); unblock on A let B credit 400")
}
