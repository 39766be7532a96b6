package hostile

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/desfire-relay/relay/desfire/simcard"
	"github.com/desfire-relay/relay/internal/rawbridge"
	"github.com/desfire-relay/relay/internal/testbackend"
	"github.com/desfire-relay/relay/internal/testcard"
	"github.com/desfire-relay/relay/internal/testserver"
	"github.com/desfire-relay/relay/mobile-bridge/bridge"
	"github.com/desfire-relay/relay/protocol"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/profile"
)

// tally counts the cases that ran to their ledger assertions, per test,
// and TestMain prints it, so the CI log shows how much hostile input the
// server faced.
var tally = struct {
	sync.Mutex
	n map[string]int
}{n: map[string]int{}}

func count(t *testing.T) {
	name, _, _ := strings.Cut(t.Name(), "/")
	tally.Lock()
	tally.n[name]++
	tally.Unlock()
}

// atExit runs after the tests, for suites that print a summary line.
var atExit []func()

func TestMain(m *testing.M) {
	code := m.Run()
	total := 0
	var parts []string
	tally.Lock()
	for k, v := range tally.n {
		total += v
		parts = append(parts, fmt.Sprintf("%s=%d", k, v))
	}
	tally.Unlock()
	fmt.Printf("hostile: %d cases checked against the ledger (%s)\n", total, strings.Join(parts, " "))
	for _, f := range atExit {
		f()
	}
	os.Exit(code)
}

// profiles are the two card profiles of the default set.
func profiles() []profile.Profile { return []profile.Profile{profile.AN12113(), profile.AN12113EV1()} }

// env is one running server (real handlers, real WebSocket) with helpers
// that are safe to call from subtests.
type env struct {
	h       *testserver.Harness
	p       profile.Profile
	backend string
	batch   bool
}

func newEnv(t *testing.T, b testbackend.Backend, p profile.Profile, o testserver.Options) *env {
	t.Helper()
	return &env{h: testserver.New(t, b, p, o), p: p, backend: b.Name, batch: true}
}

// forEach runs f for every backend and profile, one server each, the
// four in parallel (each has its own server, ledger and cards).
func forEach(t *testing.T, o testserver.Options, f func(t *testing.T, e *env)) {
	forEachOf(t, testbackend.Backends(), o, f)
}

// forEachOf is forEach over the given backends.
func forEachOf(t *testing.T, backends []testbackend.Backend, o testserver.Options, f func(t *testing.T, e *env)) {
	for _, b := range backends {
		for _, p := range profiles() {
			t.Run(b.Name+"/"+p.Name, func(t *testing.T) {
				t.Parallel()
				f(t, newEnv(t, b, p, o))
			})
		}
	}
}

var uidSeq atomic.Uint32

// newUID returns a 7-byte UID no other card of this run has.
func newUID() []byte {
	n := uidSeq.Add(1)
	return []byte{0x04, 0x5A, 0x17, byte(n >> 16), byte(n >> 8), byte(n), 0x80}
}

// card issues a new card with the server's keys.
func (e *env) card(t *testing.T, initial int32) *simcard.Card {
	t.Helper()
	return testcard.Issue(t, e.p, e.h.Keys, newUID(), initial)
}

// api calls the operator API.
func (e *env) api(t *testing.T, method, path string, body any) (int, map[string]any) {
	t.Helper()
	return apiAs(t, e.h.HTTP.URL, "Bearer "+testserver.APIKey, method, path, "", body)
}

func apiAs(t *testing.T, base, auth, method, path, idem string, body any) (int, map[string]any) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, base+path, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", auth)
	req.Header.Set("Content-Type", "application/json")
	if idem != "" {
		req.Header.Set("Idempotency-Key", idem)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// topUp is one operator top-up and the card it is meant for.
type topUp struct {
	ID     string
	Token  string
	Amount int64
	// reversal: the entry debits Amount (it reverses a credit).
	reversal bool
}

// delta is what the entry changes the card's value by.
func (tu topUp) delta() int32 {
	if tu.reversal {
		return -int32(tu.Amount)
	}
	return int32(tu.Amount)
}

var idemSeq atomic.Uint64

// topUp creates a pending top-up (bound to uid when given).
func (e *env) topUp(t *testing.T, amount int64, uid []byte) topUp {
	t.Helper()
	body := map[string]any{"amount": amount, "currency": e.p.Currency}
	if uid != nil {
		body["card_uid"] = hex.EncodeToString(uid)
	}
	code, out := apiAs(t, e.h.HTTP.URL, "Bearer "+testserver.APIKey, "POST", "/v1/topups", fmt.Sprintf("hostile-%d", idemSeq.Add(1)), body)
	if code != http.StatusCreated {
		t.Fatalf("create top-up: HTTP %d %v", code, out)
	}
	tu := topUp{Amount: amount}
	tu.ID, _ = out["id"].(string)
	tu.Token, _ = out["bridge_token"].(string)
	if tu.ID == "" || tu.Token == "" || out["status"] != "pending" {
		t.Fatalf("create top-up: %v", out)
	}
	return tu
}

// get reads a top-up from the operator API.
func (e *env) get(t *testing.T, id string) map[string]any {
	t.Helper()
	code, out := e.api(t, "GET", "/v1/topups/"+id, nil)
	if code != http.StatusOK {
		t.Fatalf("get top-up %s: HTTP %d %v", id, code, out)
	}
	return out
}

// newToken asks for a retry token and returns the HTTP status and token.
func (e *env) newToken(t *testing.T, id string) (int, string, map[string]any) {
	t.Helper()
	code, out := e.api(t, "POST", "/v1/topups/"+id+"/bridge-tokens", nil)
	tok, _ := out["bridge_token"].(string)
	return code, tok, out
}

// wsURL is the bridge endpoint.
func (e *env) wsURL() string { return e.h.WSURL() }

// raw runs one raw session.
func (e *env) raw(t *testing.T, o rawbridge.Options) rawbridge.Outcome {
	t.Helper()
	out, err := runRaw(e.wsURL(), o)
	if err != nil {
		t.Fatalf("raw bridge: %v (%v)", err, out)
	}
	return out
}

// honest runs the reference bridge for one session.
func (e *env) honest(t *testing.T, token string, c *simcard.Card) (*bridge.Report, error) {
	t.Helper()
	if err := c.Tap(); err != nil {
		t.Fatal(err)
	}
	return e.h.Bridge(token, c, e.batch)
}

// credits reads the card's committed state directly: the value and how
// many top-up log records carry the reference of top-up id.
func (e *env) credits(t *testing.T, c *simcard.Card, id string) (value int32, n int) {
	t.Helper()
	aid := e.p.AIDBytes()
	v, err := c.Value(aid, e.p.ValueFile)
	if err != nil {
		t.Fatalf("card value: %v", err)
	}
	recs, err := c.Records(aid, e.p.TopUpLogFile)
	if err != nil {
		t.Fatalf("card log: %v", err)
	}
	if id == "" {
		return v, 0
	}
	ref := ledger.LogRef(uuid.MustParse(id))
	for _, r := range recs {
		lr, err := profile.ParseLogRecord(r)
		if err != nil {
			t.Fatalf("card log record: %v", err)
		}
		if bytes.Equal(lr.Ref[:], ref) {
			n++
		}
	}
	return v, n
}

// value is the card's committed value.
func (e *env) value(t *testing.T, c *simcard.Card) int32 {
	t.Helper()
	v, _ := e.credits(t, c, "")
	return v
}

// assertLedger checks a top-up after a session ended: the ledger never
// says applied unless the card holds exactly one credit of it, never says
// proven-not-applied while the card holds it, and the card's value is
// base plus what the card's log proves. It returns the status.
func (e *env) assertLedger(t *testing.T, tu topUp, c *simcard.Card, base int32, o *rawbridge.Outcome) string {
	t.Helper()
	got := e.get(t, tu.ID)
	status, _ := got["status"].(string)
	v, n := e.credits(t, c, tu.ID)
	if n > 1 {
		t.Fatalf("top-up %s credited %d times (ledger %s, card value %d)", tu.ID, n, status, v)
	}
	if want := base + int32(n)*int32(tu.Amount); v != want {
		t.Fatalf("card value %d, want %d (base %d, %d credit(s) of %d; ledger %s)", v, want, base, n, tu.Amount, status)
	}
	switch status {
	case "applied":
		if n != 1 {
			t.Fatalf("ledger says applied but the card holds no credit of %s (value %d)", tu.ID, v)
		}
		// balance_after is known when the session that committed proved
		// it; a top-up resolved later from the card's log may lack it.
		if ba, ok := got["balance_after"].(float64); ok && int32(ba) != base+int32(tu.Amount) {
			t.Fatalf("applied with balance_after %v, card %d", got["balance_after"], v)
		}
	case "pending", "failed":
		if n != 0 {
			t.Fatalf("ledger says %s (not applied) but the card holds the credit of %s", status, tu.ID)
		}
	case "in_doubt":
		// Either way; the next tap resolves it. But in_doubt means "a
		// commit was sent": a session in which no transceive carried
		// CommitTransaction has proven that nothing was applied.
		if o != nil && !carriesCommit(o.Transceives) {
			t.Errorf("BUG: top-up %s is in_doubt though no transceive of the session carried CommitTransaction (%d exchanges, %v); the card holds %d credit(s)", tu.ID, len(o.Transceives), o, n)
		}
	default:
		t.Fatalf("after the session the top-up is %q (want pending, failed, in_doubt or applied); ledger %v", status, got)
	}
	if o != nil && o.Result != nil && o.Result.Kind == "topup" && o.Result.TopUpID == tu.ID && o.Result.Status != status {
		t.Fatalf("result said status %q, ledger says %q", o.Result.Status, status)
	}
	if o != nil && o.Result != nil && o.Result.OK && status != "applied" {
		t.Fatalf("result ok but the ledger says %s", status)
	}
	return status
}

// retry finishes a top-up the way an operator would after a hostile
// session: a new token (refused with 409 when already applied) and the
// reference bridge; in the end the card holds exactly one credit.
func (e *env) retry(t *testing.T, tu topUp, c *simcard.Card, base int32) {
	t.Helper()
	status := e.get(t, tu.ID)["status"]
	code, tok, out := e.newToken(t, tu.ID)
	if status == "applied" {
		if code != http.StatusConflict || errCode(out) != "not_payable" {
			t.Fatalf("new token for an applied top-up: HTTP %d %v, want 409 not_payable", code, out)
		}
	} else {
		if code != http.StatusCreated || tok == "" {
			t.Fatalf("new token for a %v top-up: HTTP %d %v", status, code, out)
		}
		rep, err := e.honest(t, tok, c)
		if err != nil {
			t.Fatalf("legitimate retry from %v: %v (%+v)", status, err, rep)
		}
		if !rep.Result.OK || rep.Result.Status != "applied" {
			t.Fatalf("legitimate retry from %v: %+v", status, rep.Result)
		}
	}
	if s := e.assertLedger(t, tu, c, base, nil); s != "applied" {
		t.Fatalf("after the retry the top-up is %s", s)
	}
	if _, n := e.credits(t, c, tu.ID); n != 1 {
		t.Fatalf("after the retry the card holds %d credits of the top-up", n)
	}
	count(t)
}

// balance runs a clean balance lookup and checks it against the card.
func (e *env) balance(t *testing.T, c *simcard.Card) int64 {
	t.Helper()
	_, out := e.api(t, "POST", "/v1/sessions", map[string]any{"kind": "balance"})
	tok, _ := out["bridge_token"].(string)
	rep, err := e.honest(t, tok, c)
	if err != nil || rep.Result.Balance == nil {
		t.Fatalf("balance lookup: %v %+v", err, rep)
	}
	if v := e.value(t, c); *rep.Result.Balance != int64(v) {
		t.Fatalf("balance lookup says %d, card holds %d", *rep.Result.Balance, v)
	}
	return *rep.Result.Balance
}

// serving proves the server still serves: a normal top-up on a fresh
// card is applied exactly once.
func (e *env) serving(t *testing.T) {
	t.Helper()
	c := e.card(t, 40)
	tu := e.topUp(t, 60, nil)
	rep, err := e.honest(t, tu.Token, c)
	if err != nil || !rep.Result.OK || rep.Result.Status != "applied" {
		t.Fatalf("normal top-up on another card: %v %+v", err, rep)
	}
	if s := e.assertLedger(t, tu, c, 40, nil); s != "applied" {
		t.Fatalf("normal top-up is %s", s)
	}
	if b := e.balance(t, c); b != 100 {
		t.Fatalf("normal top-up: balance %d, want 100", b)
	}
}

func errCode(out map[string]any) string {
	m, _ := out["error"].(map[string]any)
	s, _ := m["code"].(string)
	return s
}

// opts are the server deadlines of the suite's servers: generous, since
// no scenario but the slow-bridge one waits for them.
func opts() testserver.Options {
	return testserver.Options{ExchangeTimeout: 3 * time.Second, SessionTimeout: 10 * time.Second}
}

// carriesCommit reports whether any transceive carried CommitTransaction.
func carriesCommit(trs []*protocol.Transceive) bool {
	for _, tr := range trs {
		for _, c := range tr.CAPDUs {
			if len(c.APDU) > 1 && c.APDU[1] == insCommit {
				return true
			}
		}
	}
	return false
}
