package server_test

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"

	"github.com/desfire-relay/relay/desfire/simcard"
	"github.com/desfire-relay/relay/internal/testbackend"
	"github.com/desfire-relay/relay/internal/testserver"
	"github.com/desfire-relay/relay/transaction/profile"
)

// TestOperatorResolvesInDoubt is the way out for a card that never comes
// back, through the real server: the in_doubt top-up shows in the queue
// (status and age filters, pages), the oldest-unresolved gauge reports
// it, an operator resolves it with a reason (recorded with the API key's
// id), no bridge token is issued for it any more, and a later tap of the
// card that proves otherwise shows as a conflict on the top-up, with the
// card credited once.
func TestOperatorResolvesInDoubt(t *testing.T) {
	for _, b := range testbackend.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			h := testserver.New(t, b, profile.AN12113(), testserver.Options{})
			uid := []byte{0x04, 0x7E, 0x50, 0x11, 0x22, 0x33, byte(len(b.Name))}
			var ids []string
			var cards []*simcard.Card
			for i := 0; i < 3; i++ {
				card := h.Card(append(uid[:6:6], byte(10+i)), 100)
				cards = append(cards, card)
				id, tok := h.TopUp(fmt.Sprintf("resolve-%s-%d", b.Name, i), 200, "")
				card.SetTearAfterCommit(true)
				if rep, err := h.Bridge(tok, card, true); err == nil && rep.Result.OK {
					t.Fatalf("torn session ended ok: %+v", rep.Result)
				}
				card.SetTearAfterCommit(false)
				if s := h.Status(id); s != "in_doubt" {
					t.Fatalf("after a tear past the commit: %s", s)
				}
				ids = append(ids, id)
			}
			// The queue, two per page.
			seen := map[string]bool{}
			cursor := ""
			for page := 0; page < 4; page++ {
				path := "/v1/topups?status=in_doubt&older_than=0s&limit=2"
				if cursor != "" {
					path += "&cursor=" + cursor
				}
				code, out := h.API("GET", path, "", nil)
				if code != http.StatusOK {
					t.Fatalf("list: HTTP %d %v", code, out)
				}
				for _, x := range out["topups"].([]any) {
					m := x.(map[string]any)
					if m["status"] != "in_doubt" {
						t.Fatalf("listed %v", m["status"])
					}
					seen[m["id"].(string)] = true
				}
				cursor, _ = out["next_cursor"].(string)
				if cursor == "" {
					break
				}
			}
			for _, id := range ids {
				if !seen[id] {
					t.Fatalf("in_doubt top-up %s missing from the queue (%v)", id, seen)
				}
			}
			if code, out := h.API("GET", "/v1/topups?status=in_doubt&older_than=1h", "", nil); code != http.StatusOK || len(out["topups"].([]any)) != 0 {
				t.Fatalf("older_than=1h: HTTP %d %v", code, out)
			}
			for _, bad := range []string{"status=nope", "older_than=-1s", "limit=0", "limit=1001", "cursor=%%%", "cursor=YWJj", "colour=red", "status=in_doubt&status=failed"} {
				if code, out := h.API("GET", "/v1/topups?"+bad, "", nil); code != http.StatusBadRequest {
					t.Fatalf("list ?%s: HTTP %d %v", bad, code, out)
				}
			}
			if age := gauge(t, h, "relay_oldest_unresolved_topup_seconds"); age < 0 {
				t.Fatalf("oldest unresolved gauge %v", age)
			}
			// Resolve the first as failed (the operator refunds the passenger).
			id := ids[0]
			for _, bad := range []map[string]any{{"outcome": "applied"}, {"outcome": "maybe", "reason": "x"}, {"outcome": "failed", "reason": ""}, {"outcome": "failed", "reason": "x", "extra": 1}} {
				if code, out := h.API("POST", "/v1/topups/"+id+"/resolve", "", bad); code != http.StatusBadRequest {
					t.Fatalf("resolve %v: HTTP %d %v", bad, code, out)
				}
			}
			code, out := h.API("POST", "/v1/topups/"+id+"/resolve", "", map[string]any{"outcome": "failed", "reason": "card reported destroyed"})
			if code != http.StatusOK || out["status"] != "failed" {
				t.Fatalf("resolve: HTTP %d %v", code, out)
			}
			res := out["resolution"].(map[string]any)
			hist := res["history"].([]any)[0].(map[string]any)
			if res["kind"] != "manual" || res["card_checked"] != false || hist["reason"] != "card reported destroyed" || !regexp.MustCompile(`^key:[0-9a-f]{12}$`).MatchString(hist["actor"].(string)) {
				t.Fatalf("resolution %v", res)
			}
			if code, out := h.API("POST", "/v1/topups/"+id+"/resolve", "", map[string]any{"outcome": "applied", "reason": "again"}); code != http.StatusConflict {
				t.Fatalf("second resolve: HTTP %d %v", code, out)
			}
			if code, out := h.API("POST", "/v1/topups/"+id+"/bridge-tokens", "", nil); code != http.StatusConflict {
				t.Fatalf("token for a resolved top-up: HTTP %d %v", code, out)
			}
			// The card comes back after all: its authenticated log holds the
			// credit the operator called failed. A balance tap shows it as
			// a conflict and moves no money.
			if err := cards[0].Tap(); err != nil {
				t.Fatal(err)
			}
			_, tok := h.BalanceToken()
			rep, err := h.Bridge(tok, cards[0], true)
			if err != nil || !rep.Result.OK || *rep.Result.Balance != 300 {
				t.Fatalf("balance tap: %v %+v", err, rep)
			}
			code, out = h.API("GET", "/v1/topups/"+id, "", nil)
			res = out["resolution"].(map[string]any)
			if code != http.StatusOK || out["status"] != "failed" || res["card_checked"] != true || res["conflict"] == nil {
				t.Fatalf("after the card came back: HTTP %d %v", code, out)
			}
			if n := counter(t, h, `relay_integrity_failures_total{reason="resolution_conflict"}`); n != 1 {
				t.Fatalf("conflict counter %v", n)
			}
			// The other two settle from their cards' logs on the next tap.
			for i := 1; i < 3; i++ {
				cards[i].Tap()
				_, tok := h.BalanceToken()
				if rep, err := h.Bridge(tok, cards[i], true); err != nil || !rep.Result.OK {
					t.Fatalf("balance tap %d: %v %+v", i, err, rep)
				}
				if s := h.Status(ids[i]); s != "applied" {
					t.Fatalf("top-up %d after its card's tap: %s", i, s)
				}
			}
			if age := gauge(t, h, "relay_oldest_unresolved_topup_seconds"); age != 0 {
				t.Fatalf("oldest unresolved gauge %v with nothing unresolved", age)
			}
		})
	}
}

// gauge reads one gauge from /metrics.
func gauge(t *testing.T, h *testserver.Harness, name string) float64 {
	t.Helper()
	return counter(t, h, name)
}

// counter reads one sample (name with its labels) from /metrics.
func counter(t *testing.T, h *testserver.Harness, name string) float64 {
	t.Helper()
	resp, err := http.Get(h.Admin.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindSubmatch(body)
	if m == nil {
		t.Fatalf("/metrics lacks %s", name)
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
