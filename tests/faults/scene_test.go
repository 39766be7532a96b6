package faults

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/desfire/simcard"
	"github.com/desfire-relay/relay/internal/testcard"
	"github.com/desfire-relay/relay/mobile-bridge/bridge"
	"github.com/desfire-relay/relay/transaction/keys"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/profile"
)

// endpoint is a relay server under test, in-process or a relayd child:
// its operator API, its bridge endpoint, and the keys and card profile
// it uses (to issue cards it can top up).
type endpoint struct {
	base    string // http://host:port
	apiKey  string
	kp      keys.Provider
	profile profile.Profile
}

func (e *endpoint) wsURL() string { return "ws" + strings.TrimPrefix(e.base, "http") + "/v1/bridge" }

// api calls the operator API once. Transport failures are errors (the
// server may be down on purpose); HTTP errors are returned as the code.
func (e *endpoint) api(method, path, idem string, body any) (int, map[string]any, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		r = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, e.base+path, r)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+e.apiKey)
	req.Header.Set("Content-Type", "application/json")
	if idem != "" {
		req.Header.Set("Idempotency-Key", idem)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return resp.StatusCode, nil, fmt.Errorf("%s %s: HTTP %d, body: %w", method, path, resp.StatusCode, err)
	}
	return resp.StatusCode, out, nil
}

// apiOK calls the API until it answers 2xx or d has passed: a server that
// is restarting or has lost its database answers again later.
func (e *endpoint) apiOK(d time.Duration, method, path, idem string, body any) (map[string]any, error) {
	deadline := time.Now().Add(d)
	for {
		code, out, err := e.api(method, path, idem, body)
		if err == nil && code >= 200 && code < 300 {
			return out, nil
		}
		if err == nil && code >= 400 && code < 500 {
			return out, fmt.Errorf("%s %s: HTTP %d %v", method, path, code, out)
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("%s %s: HTTP %d %v", method, path, code, out)
			}
			return out, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// scene is one scenario: a freshly issued card and one top-up for it.
type scene struct {
	t       *testing.T
	ep      *endpoint
	card    *simcard.Card
	uid     []byte
	initial int32
	amount  int64
	id      string
	token   string // of the first session
	batch   bool
	log     []string // what happened, for failure messages
}

func (s *scene) logf(format string, args ...any) {
	s.log = append(s.log, fmt.Sprintf(format, args...))
}

// newScene issues a card and creates a pending top-up bound to it.
func (m *matrix) newScene(t *testing.T, ep *endpoint, batch bool) *scene {
	t.Helper()
	uid := m.nextUID()
	s := &scene{t: t, ep: ep, uid: uid, initial: 100, amount: 700, batch: batch}
	s.card = testcard.Issue(t, ep.profile, ep.kp, uid, s.initial)
	out, err := ep.apiOK(15*time.Second, "POST", "/v1/topups", "faults-"+hex.EncodeToString(uid),
		map[string]any{"amount": s.amount, "currency": "EUR", "card_uid": hex.EncodeToString(uid)})
	if err != nil {
		t.Fatalf("create top-up: %v", err)
	}
	s.id, _ = out["id"].(string)
	s.token, _ = out["bridge_token"].(string)
	if s.id == "" || s.token == "" {
		t.Fatalf("create top-up: %v", out)
	}
	return s
}

// bridgeOpts is the reference bridge's configuration for a session.
func (s *scene) bridgeOpts(token string) bridge.Options {
	return bridge.Options{URL: s.ep.wsURL(), Token: token, Name: "faults", Version: "1", Platform: "sim", Batch: s.batch}
}

// runBridge runs the reference bridge over card (the simulated card,
// maybe wrapped by a fault) with a bounded context.
func (s *scene) runBridge(token string, card desfire.Transport) (*bridge.Report, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return bridge.Run(ctx, s.bridgeOpts(token), card, bridge.CardInfo{UID: s.uid})
}

// firstSession runs the top-up's first session through the reference
// bridge over card, and notes its outcome.
func (s *scene) firstSession(card desfire.Transport) {
	rep, err := s.runBridge(s.token, card)
	s.note("first session", rep, err)
}

func (s *scene) note(what string, rep *bridge.Report, err error) {
	switch {
	case rep != nil && rep.Result.Type != "":
		code := ""
		if rep.Result.Error != nil {
			code = " " + rep.Result.Error.Code
		}
		st := "status=" + rep.Result.Status
		if rep.Result.Kind == "balance" && rep.Result.Balance != nil {
			st = fmt.Sprintf("balance=%d", *rep.Result.Balance)
		}
		s.logf("%s: %s%s after %d exchanges", what, st, code, rep.Exchanges)
	case err != nil:
		s.logf("%s: %v", what, err)
	default:
		s.logf("%s: no result", what)
	}
}

func (s *scene) status() (string, map[string]any, error) {
	out, err := s.ep.apiOK(20*time.Second, "GET", "/v1/topups/"+s.id, "", nil)
	if err != nil {
		return "", nil, err
	}
	st, _ := out["status"].(string)
	return st, out, nil
}

// settle is the card's next tap: the top-up is retried with new bridge
// tokens until the ledger says applied (bounded). With viaBalance the
// first tap is a balance lookup, the other way an in_doubt top-up is
// resolved.
func (s *scene) settle(viaBalance bool) {
	deadline := time.Now().Add(45 * time.Second)
	for i := 0; i < 12 && time.Now().Before(deadline); i++ {
		st, _, err := s.status()
		if err != nil {
			s.logf("settle: %v", err)
			continue
		}
		switch st {
		case "applied":
			return
		case "pending", "in_doubt", "failed", "in_progress":
		default:
			s.logf("settle: top-up is %s, not retryable", st)
			return
		}
		if err := s.card.Tap(); err != nil {
			s.t.Fatal(err)
		}
		what := fmt.Sprintf("retap %d (from %s)", i+1, st)
		var out map[string]any
		if viaBalance && i == 0 {
			what = fmt.Sprintf("balance tap (from %s)", st)
			out, err = s.ep.apiOK(20*time.Second, "POST", "/v1/sessions", "", map[string]any{"kind": "balance"})
		} else {
			out, err = s.ep.apiOK(20*time.Second, "POST", "/v1/topups/"+s.id+"/bridge-tokens", "", nil)
		}
		if err != nil {
			s.logf("%s: token: %v", what, err)
			continue
		}
		tok, _ := out["bridge_token"].(string)
		rep, err := s.runBridge(tok, bridge.Sim{Card: s.card})
		s.note(what, rep, err)
		if rep != nil && rep.Result.Error != nil && rep.Result.Error.Code == "card_busy" {
			// A dead or closing session still holds the card's lock.
			time.Sleep(300 * time.Millisecond)
		}
	}
}

// verdict is what one scenario proved about the card and the ledger.
type verdict struct {
	double, lost, unresolved, unsettled bool
	detail                              string
}

func (v verdict) bad() bool { return v.double || v.lost || v.unresolved || v.unsettled }

// judge compares the card's committed state (read out of band through the
// simulated card's inspection API) with the ledger (operator API).
func (s *scene) judge() verdict {
	var v verdict
	p := s.ep.profile
	aid := p.AIDBytes()
	value, err := s.card.Value(aid, p.ValueFile)
	if err != nil {
		s.t.Fatalf("card value: %v", err)
	}
	raw, err := s.card.Records(aid, p.TopUpLogFile)
	if err != nil {
		s.t.Fatalf("card top-up log: %v", err)
	}
	id, err := uuid.Parse(s.id)
	if err != nil {
		s.t.Fatal(err)
	}
	ref := ledger.LogRef(id)
	onCard := 0
	for _, r := range raw {
		rec, err := profile.ParseLogRecord(r)
		if err != nil {
			s.t.Fatalf("card top-up log: %v", err)
		}
		if bytes.Equal(rec.Ref[:], ref) {
			onCard++
		}
	}
	credited := int64(value) - int64(s.initial)
	st, tu, err := s.status()
	if err != nil {
		v.unsettled = true
		v.detail = fmt.Sprintf("ledger unreadable: %v", err)
		return v
	}
	hist, err := s.ep.apiOK(20*time.Second, "GET", "/v1/cards/"+hex.EncodeToString(s.uid)+"/topups", "", nil)
	histStatus, histN := "", 0
	if err == nil {
		list, _ := hist["topups"].([]any)
		histN = len(list)
		for _, x := range list {
			if m, _ := x.(map[string]any); m["id"] == s.id {
				histStatus, _ = m["status"].(string)
			}
		}
	}
	v.detail = fmt.Sprintf("ledger %s (card history: %q of %d), card: %d log record(s) for the top-up, value %d (initial %d, amount %d)",
		st, histStatus, histN, onCard, value, s.initial, s.amount)
	settledOff := st == "failed" || st == "pending" || st == "expired" || st == "cancelled"
	switch {
	case onCard > 1 || credited > s.amount:
		v.double = true
	case st == "applied" && (onCard == 0 || credited < s.amount):
		v.lost = true
	case onCard > 0 && settledOff:
		v.lost = true
	case onCard != 0 && credited != s.amount, onCard == 0 && credited != 0:
		// The value and the log disagree: a credit without its record or
		// the reverse, which one transaction should make impossible.
		v.lost = true
	}
	if st == "in_doubt" || st == "in_progress" {
		v.unresolved = true
	}
	if st != "applied" && !v.bad() {
		// Never applied although the card was tapped again and again.
		v.unsettled = true
	}
	if histStatus != st || histN != 1 {
		v.unsettled = true
		v.detail += "; the card's ledger history disagrees with the top-up"
	}
	if st == "applied" {
		if b, ok := tu["balance_after"].(float64); ok && int64(b) != int64(s.initial)+s.amount {
			v.lost = true
			v.detail += fmt.Sprintf("; ledger balance_after %v", b)
		}
	}
	return v
}

// matrix counts scenarios and their verdicts across all families.
type matrix struct {
	mu         sync.Mutex
	seq        int
	salt       [3]byte
	scenarios  int
	double     int
	lost       int
	unresolved int
	unsettled  int
}

// nextUID gives every scenario a card of its own, so no lock or ledger
// history is shared between scenarios (or with other suites on the same
// Redis).
func (m *matrix) nextUID() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.seq++
	return []byte{0x04, 0xFA, m.salt[0], m.salt[1], m.salt[2], byte(m.seq >> 8), byte(m.seq)}
}

// scenario runs one fault case as a subtest: fault drives the disturbed
// first session, then the card is tapped again and the outcome judged.
func (m *matrix) scenario(t *testing.T, name string, ep *endpoint, batch, viaBalance bool, fault func(s *scene)) {
	t.Helper()
	t.Run(name, func(t *testing.T) {
		s := m.newScene(t, ep, batch)
		fault(s)
		s.settle(viaBalance)
		v := s.judge()
		m.mu.Lock()
		m.scenarios++
		if v.double {
			m.double++
		}
		if v.lost {
			m.lost++
		}
		if v.unresolved {
			m.unresolved++
		}
		if v.unsettled {
			m.unsettled++
		}
		m.mu.Unlock()
		if v.bad() {
			t.Errorf("top-up %s on card %X: double=%v lost=%v unresolved=%v unsettled=%v\n  %s\n  %s",
				s.id, s.uid, v.double, v.lost, v.unresolved, v.unsettled, v.detail, strings.Join(s.log, "\n  "))
		} else {
			t.Logf("%s; %s", v.detail, strings.Join(s.log, "; "))
		}
	})
}

func (m *matrix) summary() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return fmt.Sprintf("faults: scenarios=%d double_credits=%d lost_topups=%d unresolved_in_doubt=%d",
		m.scenarios, m.double, m.lost, m.unresolved)
}

// hookCard is the simulated card behind the reference bridge with a fault
// that fires once, when the card has executed exactly `at` APDUs of this
// session (0: before the first one). After the fault the card goes on
// answering, as a phone would until it notices the server is gone.
type hookCard struct {
	card  *simcard.Card
	at    int
	fire  func() error
	mu    sync.Mutex
	n     int
	fired bool
	err   error
}

// Transmit implements desfire.Transport.
func (h *hookCard) Transmit(ctx context.Context, capdu []byte) ([]byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.maybeFire()
	r, err := bridge.Sim{Card: h.card}.Transmit(ctx, capdu)
	h.n++
	h.maybeFire()
	return r, err
}

func (h *hookCard) maybeFire() {
	if !h.fired && h.n == h.at {
		h.fired = true
		h.err = h.fire()
	}
}

func (h *hookCard) didFire() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.fired
}

func (h *hookCard) fireErr() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err
}

// errNoProbe is returned when an undisturbed probe session fails.
var errNoProbe = errors.New("probe top-up did not succeed")

// probeAPDUs counts the APDUs of an undisturbed top-up on ep, so the
// families can cut after each of them.
func (m *matrix) probeAPDUs(t *testing.T, ep *endpoint, batch bool) int {
	t.Helper()
	s := m.newScene(t, ep, batch)
	before := s.card.APDUs()
	rep, err := s.runBridge(s.token, bridge.Sim{Card: s.card})
	if err != nil || rep == nil || rep.Result.Status != "applied" {
		t.Fatalf("%v: %+v %v", errNoProbe, rep, err)
	}
	return s.card.APDUs() - before
}
