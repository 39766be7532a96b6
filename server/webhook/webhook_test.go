package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/ledger/sqlite"
)

var secret = strings.Repeat("s", 32)

func TestSignVerify(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"id":"x"}`)
	h := Sign([]byte(secret), now, body)
	if err := Verify([]byte(secret), h, body, now.Add(time.Minute), 5*time.Minute); err != nil {
		t.Fatalf("authentic delivery refused: %v", err)
	}
	for name, c := range map[string]struct {
		h    string
		body string
		at   time.Time
	}{
		"other body":  {h, `{"id":"y"}`, now},
		"stale":       {h, string(body), now.Add(6 * time.Minute)},
		"future":      {h, string(body), now.Add(-6 * time.Minute)},
		"no mac":      {"t=1800000000", string(body), now},
		"no time":     {strings.Split(h, ",")[1], string(body), now},
		"other key":   {Sign([]byte(strings.Repeat("k", 32)), now, body), string(body), now},
		"empty":       {"", string(body), now},
		"garbage mac": {"t=1800000000,v1=zz", string(body), now},
	} {
		if err := Verify([]byte(secret), c.h, []byte(c.body), c.at, 5*time.Minute); !errors.Is(err, ErrSignature) {
			t.Errorf("%s: Verify = %v, want ErrSignature", name, err)
		}
	}
}

// FuzzVerify: arbitrary headers never panic, and a header signed for one
// body never verifies another.
func FuzzVerify(f *testing.F) {
	signed := []byte(`{"id":"a"}`)
	f.Add(Sign([]byte(secret), time.Unix(1_800_000_000, 0), signed), []byte("{}"))
	f.Add(",,==,t=,v1=", []byte{})
	f.Fuzz(func(t *testing.T, h string, body []byte) {
		at := time.Unix(1_800_000_000, 0)
		_ = Verify([]byte(secret), h, body, at, time.Minute)
		if string(body) != string(signed) && Verify([]byte(secret), Sign([]byte(secret), at, signed), body, at, time.Minute) == nil {
			t.Fatalf("a signature over another body verified %q", body)
		}
	})
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.json", `{"endpoints":[{"name":"billing","url":"https://ops.example/hook","secret":"`+secret+`","events":["topup.applied"]}]}`, 0o600)
	eps, err := Load(good)
	if err != nil || len(eps) != 1 || eps[0].Tenant != ledger.DefaultTenant {
		t.Fatalf("Load = %+v, %v", eps, err)
	}
	for name, c := range map[string]struct {
		body string
		mode os.FileMode
		want string
	}{
		"world readable": {`{"endpoints":[]}`, 0o644, "mode"},
		"http":           {`{"endpoints":[{"name":"a","url":"http://x/","secret":"` + secret + `"}]}`, 0o600, "https"},
		"short secret":   {`{"endpoints":[{"name":"a","url":"https://x/","secret":"short"}]}`, 0o600, "32 bytes"},
		"unknown event":  {`{"endpoints":[{"name":"a","url":"https://x/","secret":"` + secret + `","events":["topup.paid"]}]}`, 0o600, "unknown event"},
		"twice":          {`{"endpoints":[{"name":"a","url":"https://x/","secret":"` + secret + `"},{"name":"a","url":"https://y/","secret":"` + secret + `"}]}`, 0o600, "twice"},
		"credentials":    {`{"endpoints":[{"name":"a","url":"https://u:p@x/","secret":"` + secret + `"}]}`, 0o600, "credentials"},
		"bad name":       {`{"endpoints":[{"name":"A B","url":"https://x/","secret":"` + secret + `"}]}`, 0o600, "name"},
		"unknown field":  {`{"endpoints":[],"extra":1}`, 0o600, "unknown field"},
		"bad tenant":     {`{"endpoints":[{"name":"a","url":"https://x/","secret":"` + secret + `","tenant":"A B"}]}`, 0o600, "tenant"},
	} {
		_, err := Load(write(strings.ReplaceAll(name, " ", "_")+".json", c.body, c.mode))
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Load = %v, want ErrConfig mentioning %q", name, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("%s: error shows the secret", name)
		}
	}
}

// receiver counts verified deliveries per event id and fails the first
// `fail` requests.
type receiver struct {
	mu     sync.Mutex
	got    map[string]Payload
	count  map[string]int
	fail   atomic.Int64
	hang   atomic.Bool
	forged atomic.Int64
	now    func() time.Time
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	if err := Verify([]byte(secret), req.Header.Get(SignatureHeader), body, r.now(), 5*time.Minute); err != nil {
		r.forged.Add(1)
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	if r.hang.Load() {
		<-req.Context().Done()
		return
	}
	if r.fail.Add(-1) >= 0 {
		http.Error(w, "down", http.StatusInternalServerError)
		return
	}
	var p Payload
	if err := json.Unmarshal(body, &p); err != nil || p.ID != req.Header.Get(EventIDHeader) {
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	r.got[p.ID] = p
	r.count[p.ID]++
	r.mu.Unlock()
}

func TestDispatcher(t *testing.T) {
	ctx := context.Background()
	l, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "l.db"), ledger.Config{Outbox: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	clock := time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	advance := func(d time.Duration) { mu.Lock(); clock = clock.Add(d); mu.Unlock() }
	rec := &receiver{got: map[string]Payload{}, count: map[string]int{}, now: now}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	eps, err := Check([]Endpoint{{Name: "ops", URL: srv.URL, Secret: secret, AllowHTTP: true}})
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(Config{Endpoints: eps, Outbox: l.(ledger.Outbox), TopUp: l.GetTopUp, Now: now,
		Client: &http.Client{Timeout: 200 * time.Millisecond}, MaxAttempts: 3})
	if err != nil {
		t.Fatal(err)
	}
	// A top-up that expires gives one event.
	tu, _, err := l.CreateTopUp(ctx, ledger.Request{Amount: 250, Currency: "EUR", Reference: "order-1"}, "k1", now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.ExpirePending(ctx, tu.ExpiresAt); err != nil {
		t.Fatal(err)
	}
	// The receiver fails twice: delivered on the third attempt, after
	// the backoff each time.
	rec.fail.Store(2)
	for i := range 3 {
		if n, err := d.RunOnce(ctx); n != 1 || err != nil {
			t.Fatalf("attempt %d: RunOnce = %d, %v", i+1, n, err)
		}
		if n, _ := d.RunOnce(ctx); n != 0 {
			t.Fatalf("attempt %d: retried before the backoff", i+1)
		}
		advance(5 * time.Hour)
	}
	if len(rec.got) != 1 {
		t.Fatalf("delivered %d events, want 1", len(rec.got))
	}
	for id, p := range rec.got {
		if rec.count[id] != 1 || p.Type != ledger.EventExpired || p.Data.TopUpID != tu.ID.String() ||
			p.Data.Amount != 250 || p.Data.Reference != "order-1" || p.Data.Status != "expired" {
			t.Fatalf("delivery %+v (count %d)", p, rec.count[id])
		}
	}
	// A receiver that hangs is cut off by the client timeout and parked
	// after MaxAttempts; redelivery brings it back.
	tu2, _, _ := l.CreateTopUp(ctx, ledger.Request{Amount: 1, Currency: "EUR"}, "k2", now())
	if _, err := l.ExpirePending(ctx, tu2.ExpiresAt); err != nil {
		t.Fatal(err)
	}
	rec.hang.Store(true)
	for range 3 {
		d.RunOnce(ctx)
		advance(5 * time.Hour)
	}
	rec.hang.Store(false)
	advance(48 * time.Hour)
	if n, _ := d.RunOnce(ctx); n != 0 {
		t.Fatal("a parked delivery was retried")
	}
	evs, dels, err := l.(ledger.Outbox).ListEvents(ctx, ledger.DefaultTenant, tu2.ID)
	if err != nil || len(evs) != 1 || len(dels) != 1 || !strings.Contains(dels[0].LastError, "gave up after 3") {
		t.Fatalf("parked delivery: %+v %+v %v", evs, dels, err)
	}
	if _, err := l.(ledger.Outbox).Redeliver(ctx, ledger.DefaultTenant, evs[0].ID, now()); err != nil {
		t.Fatal(err)
	}
	if n, err := d.RunOnce(ctx); n != 1 || err != nil {
		t.Fatalf("redelivery: %d, %v", n, err)
	}
	if rec.count[evs[0].ID.String()] != 1 || rec.forged.Load() != 0 {
		t.Fatalf("redelivered count %d, forged %d", rec.count[evs[0].ID.String()], rec.forged.Load())
	}
	if n, err := l.(ledger.Outbox).Backlog(ctx); n != 0 || err != nil {
		t.Fatalf("backlog %d, %v", n, err)
	}
}
