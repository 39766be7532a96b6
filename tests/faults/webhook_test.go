package faults

import (
	crand "crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/desfire-relay/relay/internal/testbackend"
	"github.com/desfire-relay/relay/internal/testenv"
	"github.com/desfire-relay/relay/server/webhook"
	"github.com/desfire-relay/relay/transaction/profile"
)

// hookReceiver is an operator's webhook endpoint: it verifies every
// delivery's signature and counts deliveries per event id.
type hookReceiver struct {
	secret string
	down   atomic.Bool
	mu     sync.Mutex
	events map[string]webhook.Payload
	count  map[string]int
	forged int
}

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if err := webhook.Verify([]byte(h.secret), r.Header.Get(webhook.SignatureHeader), body, time.Now(), 5*time.Minute); err != nil {
		h.mu.Lock()
		h.forged++
		h.mu.Unlock()
		http.Error(w, "signature", http.StatusUnauthorized)
		return
	}
	if h.down.Load() {
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
		return
	}
	var p webhook.Payload
	if err := json.Unmarshal(body, &p); err != nil {
		http.Error(w, "body", http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	h.events[p.ID] = p
	h.count[p.ID]++
	h.mu.Unlock()
}

// TestWebhooksAcrossKill: a relayd process on Redis + PostgreSQL with a
// webhook endpoint runs top-ups that it is SIGKILLed in the middle of,
// while the endpoint is down (so every delivery is still owed when the
// process dies), then once more with deliveries outstanding. After the
// last restart the endpoint comes back and must receive exactly the
// events the ledger's outbox holds — each at least once, deduplicable by
// id, none the ledger does not have — and each top-up's last event must
// name the status the top-up ended in.
func TestWebhooksAcrossKill(t *testing.T) {
	dbURL := testbackend.PostgresSchema(t)
	redisURL := testenv.RedisURL(t)
	rec := &hookReceiver{secret: strings.Repeat("w", 40), events: map[string]webhook.Payload{}, count: map[string]int{}}
	rec.down.Store(true)
	hs := httptest.NewServer(rec)
	defer hs.Close()

	rd := newRelayd(t, dbURL, redisURL)
	hooks := filepath.Join(rd.dir, "webhooks.json")
	doc, _ := json.Marshal(webhook.File{Endpoints: []webhook.Endpoint{{Name: "ops", URL: hs.URL, Secret: rec.secret, AllowHTTP: true}}})
	if err := os.WriteFile(hooks, doc, 0o600); err != nil {
		t.Fatal(err)
	}
	rd.extra = []string{"-webhooks-file", hooks}
	p := profile.AN12113()
	if err := rd.start(p.Name); err != nil {
		t.Fatal(err)
	}
	m := &matrix{}
	if _, err := crand.Read(m.salt[:]); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed(), 17))
	n := m.probeAPDUs(t, rd.endpoint(), true)
	var ids []string
	for i := range 4 {
		k := rng.IntN(n + 1)
		m.scenario(t, fmt.Sprintf("kill-%d/after-%d-apdus", i+1, k), rd.endpoint(), true, false, func(s *scene) {
			ids = append(ids, s.id)
			h := &hookCard{card: s.card, at: k, fire: func() error { rd.kill(); return nil }}
			s.firstSession(h)
			if !h.didFire() {
				return
			}
			if err := rd.start(p.Name); err != nil {
				s.t.Fatalf("restart relayd: %v", err)
			}
		})
	}
	if m.double+m.lost+m.unresolved+m.unsettled > 0 {
		t.Fatalf("money: %s", m.summary())
	}
	// Deliveries are owed; the process dies once more before any lands.
	rd.kill()
	rec.down.Store(false)
	if err := rd.start(p.Name); err != nil {
		t.Fatal(err)
	}

	ep := rd.endpoint()
	ledgerEvents := map[string]map[string]any{} // event id → event, per the outbox
	lastStatus := map[string]string{}           // top-up → status of its last top-up event
	deadline := time.Now().Add(90 * time.Second)
	for {
		clear(ledgerEvents)
		// The scenarios' top-ups, plus any other a delivery names (the
		// probe run): every delivered event must be in some outbox list.
		check := map[string]bool{}
		for _, id := range ids {
			check[id] = true
		}
		rec.mu.Lock()
		for _, p := range rec.events {
			if p.Data.TopUpID != "" {
				check[p.Data.TopUpID] = true
			}
		}
		rec.mu.Unlock()
		for id := range check {
			out, err := ep.apiOK(10*time.Second, "GET", "/v1/topups/"+id+"/events", "", nil)
			if err != nil {
				t.Fatal(err)
			}
			evs, _ := out["events"].([]any)
			for _, e := range evs {
				ev := e.(map[string]any)
				ledgerEvents[ev["id"].(string)] = ev
				if typ := ev["type"].(string); strings.HasPrefix(typ, "topup.") {
					lastStatus[id] = ev["status"].(string)
				}
			}
		}
		rec.mu.Lock()
		missing := 0
		for id := range ledgerEvents {
			if rec.count[id] == 0 {
				missing++
			}
		}
		rec.mu.Unlock()
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d outbox events never delivered", missing, len(ledgerEvents))
		}
		time.Sleep(500 * time.Millisecond)
	}

	rec.mu.Lock()
	defer rec.mu.Unlock()
	dups := 0
	for id, p := range rec.events {
		ev, ok := ledgerEvents[id]
		if !ok {
			t.Errorf("delivered event %s (%s %s) is not in the ledger's outbox", id, p.Type, p.Data.TopUpID)
			continue
		}
		if ev["type"] != p.Type || ev["status"] != p.Data.Status {
			t.Errorf("event %s delivered as %s/%s, ledger says %v/%v", id, p.Type, p.Data.Status, ev["type"], ev["status"])
		}
		dups += rec.count[id] - 1
	}
	if rec.forged != 0 {
		t.Errorf("%d deliveries failed signature verification", rec.forged)
	}
	for _, id := range ids {
		tu, err := ep.apiOK(10*time.Second, "GET", "/v1/topups/"+id, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		if st := tu["status"].(string); st != lastStatus[id] {
			t.Errorf("top-up %s is %s but its last event says %q", id, st, lastStatus[id])
		}
	}
	types := map[string]int{}
	for _, p := range rec.events {
		types[p.Type]++
	}
	var summary []string
	for k, v := range types {
		summary = append(summary, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(summary)
	t.Logf("webhooks: top-ups=%d events=%d duplicates=%d relayd starts=%d [%s]", len(ids), len(rec.events), dups, rd.starts, strings.Join(summary, " "))
}
