package ledgertest

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/desfire-relay/relay/transaction/ledger"
)

// Opener returns a fresh, empty ledger for one test and arranges (with
// t.Cleanup) for it to be closed and removed.
type Opener func(t testing.TB) ledger.Ledger

// base is the suite's clock: a fixed instant, so no test depends on the
// wall clock; microsecond precision matches what the ledger stores.
var base = time.Date(2031, 3, 14, 15, 9, 26, 535897000, time.UTC)

// Run runs the whole suite against the ledgers that open returns.
func Run(t *testing.T, open Opener) {
	tests := []struct {
		name string
		fn   func(*testing.T, *env)
	}{
		{"CreateIdempotent", testCreateIdempotent},
		{"CreateConcurrentOneKey", testCreateConcurrent},
		{"CreateInvalidWritesNothing", testCreateInvalid},
		{"TransitionTable", testTransitionTable},
		{"TransitionConflict", testTransitionConflict},
		{"TransitionInvalidInput", testTransitionInvalidInput},
		{"CompareAndSetContention", testContention},
		{"StaleFence", testStaleFence},
		{"FenceRaceAcrossTopUps", testFenceRace},
		{"CardBinding", testCardBinding},
		{"Expiry", testExpiry},
		{"HistoryByCard", testHistory},
		{"Attempts", testAttempts},
		{"Sessions", testSessions},
		{"Tokens", testTokens},
		{"TokenConcurrentConsume", testTokenConcurrent},
		{"NotFoundAndPing", testNotFound},
		{"TMCPerCard", testTMCPerCard},
		{"Resolve", testResolve},
		{"ListAndOldest", testListAndOldest},
		{"Tenants", testTenants},
		{"RevokeTokens", testRevokeTokens},
		{"CreateTopUpSession", testCreateTopUpSession},
		{"SessionTopUp", testSessionTopUp},
		{"TransitionFinish", testTransitionFinish},
		{"ReaderIDs", testReaderIDs},
		{"CardKeys", testCardKeys},
		{"Reversal", testReversal},
		{"ReversalConcurrent", testReversalConcurrent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, &env{t: t, l: open(t), ctx: context.Background()})
		})
	}
}

// env is one test's ledger and helpers.
type env struct {
	t     *testing.T
	l     ledger.Ledger
	ctx   context.Context
	n     atomic.Int64 // key, card and fence counter
	fence atomic.Int64
}

func (e *env) next() int64 { return e.n.Add(1) }

// card returns a new 7-byte card UID in upper-case hex.
func (e *env) card() string { return fmt.Sprintf("04%012X", e.next()) }

func (e *env) key() string { return fmt.Sprintf("key-%d", e.next()) }

// newFence returns a fencing token higher than any issued before.
func (e *env) newFence() int64 { return e.fence.Add(1) }

func (e *env) create(req ledger.Request) ledger.TopUp {
	e.t.Helper()
	tu, created, err := e.l.CreateTopUp(e.ctx, req, e.key(), base)
	if err != nil || !created {
		e.t.Fatalf("CreateTopUp(%+v) = created %v, %v", req, created, err)
	}
	return tu
}

func (e *env) session(topUp uuid.UUID) ledger.Session {
	e.t.Helper()
	s, err := e.l.CreateSession(e.ctx, ledger.KindTopUp, topUp, base)
	if err != nil {
		e.t.Fatalf("CreateSession: %v", err)
	}
	return s
}

// step is a session transition with a fresh fence on card.
func (e *env) step(tu ledger.TopUp, sess uuid.UUID, card string, to ledger.Status) ledger.TopUp {
	e.t.Helper()
	out, err := e.l.Transition(e.ctx, ledger.Transition{
		TopUpID: tu.ID, From: tu.Status, To: to, Fence: e.newFence(),
		SessionID: sess, CardUID: card, Now: base.Add(time.Second),
	})
	if err != nil {
		e.t.Fatalf("Transition %s → %s: %v", tu.Status, to, err)
	}
	return out
}

func (e *env) op(tu ledger.TopUp, to ledger.Status) ledger.TopUp {
	e.t.Helper()
	out, err := e.l.Transition(e.ctx, ledger.Transition{TopUpID: tu.ID, From: tu.Status, To: to, Now: base.Add(time.Second)})
	if err != nil {
		e.t.Fatalf("Transition %s → %s: %v", tu.Status, to, err)
	}
	return out
}

func (e *env) get(id uuid.UUID) ledger.TopUp {
	e.t.Helper()
	tu, err := e.l.GetTopUp(e.ctx, id)
	if err != nil {
		e.t.Fatalf("GetTopUp: %v", err)
	}
	return tu
}

func (e *env) attempts(id uuid.UUID) []ledger.Attempt {
	e.t.Helper()
	as, err := e.l.ListAttempts(e.ctx, id)
	if err != nil {
		e.t.Fatalf("ListAttempts: %v", err)
	}
	return as
}

// reach creates a top-up bound to a new card and drives it to status s
// along allowed transitions. It returns the top-up, its card and session.
func (e *env) reach(s ledger.Status) (ledger.TopUp, string, uuid.UUID) {
	e.t.Helper()
	card := e.card()
	tu := e.create(ledger.Request{Amount: 500, Currency: "EUR", CardUID: card})
	sess := e.session(tu.ID).ID
	switch s {
	case ledger.StatusPending:
	case ledger.StatusExpired, ledger.StatusCancelled:
		tu = e.op(tu, s)
	default:
		tu = e.step(tu, sess, card, ledger.StatusInProgress)
		switch s {
		case ledger.StatusInProgress:
		case ledger.StatusInDoubt, ledger.StatusApplied, ledger.StatusFailed:
			tu = e.step(tu, sess, card, s)
		default:
			e.t.Fatalf("reach: no path to %s", s)
		}
	}
	if tu.Status != s {
		e.t.Fatalf("reach(%s) left %s", s, tu.Status)
	}
	return tu, card, sess
}

// same compares the stored fields a refused write must not have changed.
func same(a, b ledger.TopUp) error {
	switch {
	case a.Status != b.Status:
		return fmt.Errorf("status %s → %s", a.Status, b.Status)
	case a.Fence != b.Fence:
		return fmt.Errorf("fence %d → %d", a.Fence, b.Fence)
	case a.Attempts != b.Attempts:
		return fmt.Errorf("attempts %d → %d", a.Attempts, b.Attempts)
	case a.CardUID != b.CardUID:
		return fmt.Errorf("card %q → %q", a.CardUID, b.CardUID)
	case !a.UpdatedAt.Equal(b.UpdatedAt):
		return fmt.Errorf("updated_at %s → %s", a.UpdatedAt, b.UpdatedAt)
	case (a.BalanceAfter == nil) != (b.BalanceAfter == nil):
		return fmt.Errorf("balance_after changed")
	}
	return nil
}

func testCreateIdempotent(t *testing.T, e *env) {
	req := ledger.Request{Amount: 1250, Currency: "EUR", CardUID: "04a1b2c3d4e5f6", Reference: "order 17"}
	first, created, err := e.l.CreateTopUp(e.ctx, req, "idem-1", base)
	if err != nil || !created {
		t.Fatalf("first create: created=%v err=%v", created, err)
	}
	if first.Status != ledger.StatusPending || first.Amount != 1250 || first.Currency != "EUR" ||
		first.CardUID != "04A1B2C3D4E5F6" || first.Reference != "order 17" || first.IdempotencyKey != "idem-1" {
		t.Errorf("created top-up = %+v", first)
	}
	if first.ID.Version() != 4 {
		t.Errorf("ID %s is not a v4 UUID", first.ID)
	}
	if string(first.LogRef) != string(ledger.LogRef(first.ID)) || len(first.LogRef) != ledger.LogRefLen {
		t.Errorf("LogRef = %x, want %x", first.LogRef, ledger.LogRef(first.ID))
	}
	norm, _ := req.Normalize()
	if string(first.RequestHash) != string(norm.Hash()) {
		t.Errorf("RequestHash = %x, want %x", first.RequestHash, norm.Hash())
	}
	if !first.CreatedAt.Equal(base) || !first.UpdatedAt.Equal(base) || !first.ExpiresAt.After(base) {
		t.Errorf("times: created %s updated %s expires %s", first.CreatedAt, first.UpdatedAt, first.ExpiresAt)
	}
	if first.Attempts != 0 || first.Fence != 0 || first.BalanceAfter != nil || first.TMC != nil || first.AppliedAt != nil {
		t.Errorf("new top-up carries session data: %+v", first)
	}

	replays := []struct {
		name string
		req  ledger.Request
	}{
		{"identical", req},
		{"uid in upper case", ledger.Request{Amount: 1250, Currency: "EUR", CardUID: "04A1B2C3D4E5F6", Reference: "order 17"}},
	}
	for _, r := range replays {
		t.Run("replay/"+r.name, func(t *testing.T) {
			again, created, err := e.l.CreateTopUp(e.ctx, r.req, "idem-1", base.Add(time.Minute))
			if err != nil || created {
				t.Fatalf("replay: created=%v err=%v", created, err)
			}
			if again.ID != first.ID || !again.CreatedAt.Equal(first.CreatedAt) {
				t.Errorf("replay returned %s created %s, want %s", again.ID, again.CreatedAt, first.ID)
			}
		})
	}
	conflicts := []struct {
		name string
		req  ledger.Request
	}{
		{"amount", ledger.Request{Amount: 1251, Currency: "EUR", CardUID: req.CardUID, Reference: req.Reference}},
		{"currency", ledger.Request{Amount: 1250, Currency: "USD", CardUID: req.CardUID, Reference: req.Reference}},
		{"card", ledger.Request{Amount: 1250, Currency: "EUR", CardUID: "04A1B2C3D4E5F7", Reference: req.Reference}},
		{"no card", ledger.Request{Amount: 1250, Currency: "EUR", Reference: req.Reference}},
		{"reference", ledger.Request{Amount: 1250, Currency: "EUR", CardUID: req.CardUID, Reference: "order 18"}},
	}
	for _, c := range conflicts {
		t.Run("conflict/"+c.name, func(t *testing.T) {
			_, _, err := e.l.CreateTopUp(e.ctx, c.req, "idem-1", base)
			if !errors.Is(err, ledger.ErrIdempotencyConflict) {
				t.Fatalf("err = %v, want ErrIdempotencyConflict", err)
			}
		})
	}
	other, created, err := e.l.CreateTopUp(e.ctx, req, "idem-2", base)
	if err != nil || !created || other.ID == first.ID {
		t.Fatalf("other key: created=%v id=%s err=%v", created, other.ID, err)
	}
	list, err := e.l.ListTopUpsByCard(e.ctx, req.CardUID)
	if err != nil || len(list) != 2 {
		t.Fatalf("card history has %d rows (%v), want 2", len(list), err)
	}
}

func testCreateConcurrent(t *testing.T, e *env) {
	const n = 50
	card := e.card()
	req := ledger.Request{Amount: 700, Currency: "GBP", CardUID: card}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		ids     = map[uuid.UUID]int{}
		created int
		errs    []error
	)
	start := make(chan struct{})
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			tu, c, err := e.l.CreateTopUp(e.ctx, req, "one-key", base)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			ids[tu.ID]++
			if c {
				created++
			}
		}()
	}
	close(start)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d creates failed, first: %v", len(errs), errs[0])
	}
	if created != 1 || len(ids) != 1 {
		t.Fatalf("created=%d distinct ids=%d, want 1 and 1", created, len(ids))
	}
	list, err := e.l.ListTopUpsByCard(e.ctx, card)
	if err != nil || len(list) != 1 {
		t.Fatalf("rows for the key's card = %d (%v), want 1", len(list), err)
	}
}

func testCreateInvalid(t *testing.T, e *env) {
	card := e.card()
	good := ledger.Request{Amount: 100, Currency: "EUR", CardUID: card}
	long := make([]byte, ledger.MaxReferenceLen+1)
	for i := range long {
		long[i] = 'r'
	}
	longKey := make([]byte, ledger.MaxIdempotencyKeyLen+1)
	for i := range longKey {
		longKey[i] = 'k'
	}
	cases := []struct {
		name  string
		edit  func(*ledger.Request)
		key   string
		field string
	}{
		{"zero amount", func(r *ledger.Request) { r.Amount = 0 }, "", "amount"},
		{"negative amount", func(r *ledger.Request) { r.Amount = -5 }, "", "amount"},
		{"absurd amount", func(r *ledger.Request) { r.Amount = ledger.MaxAmount + 1 }, "", "amount"},
		{"huge amount", func(r *ledger.Request) { r.Amount = 1 << 62 }, "", "amount"},
		{"lower-case currency", func(r *ledger.Request) { r.Currency = "eur" }, "", "currency"},
		{"short currency", func(r *ledger.Request) { r.Currency = "EU" }, "", "currency"},
		{"digit currency", func(r *ledger.Request) { r.Currency = "E1R" }, "", "currency"},
		{"empty currency", func(r *ledger.Request) { r.Currency = "" }, "", "currency"},
		{"non-hex uid", func(r *ledger.Request) { r.CardUID = "04ZZ0000000000" }, "", "card_uid"},
		{"odd uid", func(r *ledger.Request) { r.CardUID = "04A1B" }, "", "card_uid"},
		{"5-byte uid", func(r *ledger.Request) { r.CardUID = "0102030405" }, "", "card_uid"},
		{"long reference", func(r *ledger.Request) { r.Reference = string(long) }, "", "reference"},
		{"control in reference", func(r *ledger.Request) { r.Reference = "a\nb" }, "", "reference"},
		{"bad utf-8 reference", func(r *ledger.Request) { r.Reference = "\xff" }, "", "reference"},
		{"empty key", func(*ledger.Request) {}, "-", "idempotency_key"},
		{"long key", func(*ledger.Request) {}, string(longKey), "idempotency_key"},
		{"control in key", func(*ledger.Request) {}, "k\x00", "idempotency_key"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := good
			c.edit(&req)
			key := "invalid-" + c.name
			switch c.key {
			case "":
			case "-":
				key = ""
			default:
				key = c.key
			}
			_, _, err := e.l.CreateTopUp(e.ctx, req, key, base)
			var ve *ledger.ValidationError
			if !errors.Is(err, ledger.ErrInvalid) || !errors.As(err, &ve) || ve.Field != c.field {
				t.Fatalf("err = %v, want a ValidationError on %s", err, c.field)
			}
			if key != "" && len(key) <= ledger.MaxIdempotencyKeyLen && c.key == "" {
				// The key must still be free: nothing was written.
				tu, created, err := e.l.CreateTopUp(e.ctx, ledger.Request{Amount: 1, Currency: "CHF"}, key, base)
				if err != nil || !created {
					t.Fatalf("key %q was taken by a refused request: created=%v err=%v", key, created, err)
				}
				if tu.Amount != 1 {
					t.Fatalf("got %+v", tu)
				}
			}
		})
	}
	list, err := e.l.ListTopUpsByCard(e.ctx, card)
	if err != nil || len(list) != 0 {
		t.Fatalf("refused requests wrote %d rows (%v)", len(list), err)
	}
}

var allStatuses = []ledger.Status{
	ledger.StatusPending, ledger.StatusInProgress, ledger.StatusInDoubt, ledger.StatusApplied,
	ledger.StatusFailed, ledger.StatusExpired, ledger.StatusCancelled,
}

// testTransitionTable tries every ordered pair of statuses on a top-up
// really in the From status: allowed pairs must succeed, all others must
// fail with ErrInvalidTransition and change nothing.
func testTransitionTable(t *testing.T, e *env) {
	for _, from := range allStatuses {
		for _, to := range allStatuses {
			t.Run(from.String()+"→"+to.String(), func(t *testing.T) {
				tu, card, sess := e.reach(from)
				rule, allowed := ledger.CheckTransition(from, to)
				tr := ledger.Transition{TopUpID: tu.ID, From: from, To: to, Now: base.Add(time.Hour)}
				if allowed == nil && rule.Session {
					tr.Fence, tr.SessionID, tr.CardUID = e.newFence(), sess, card
				}
				if to == ledger.StatusPending && allowed == nil {
					tr.ExpiresAt = base.Add(48 * time.Hour)
				}
				out, err := e.l.Transition(e.ctx, tr)
				after := e.get(tu.ID)
				if allowed != nil {
					if !errors.Is(err, ledger.ErrInvalidTransition) {
						t.Fatalf("err = %v, want ErrInvalidTransition", err)
					}
					if d := same(tu, after); d != nil {
						t.Fatalf("refused transition wrote: %v", d)
					}
					return
				}
				if err != nil {
					t.Fatalf("allowed transition failed: %v", err)
				}
				if out.Status != to || after.Status != to || !after.UpdatedAt.Equal(tr.Now) {
					t.Fatalf("returned %s, stored %s updated %s", out.Status, after.Status, after.UpdatedAt)
				}
				if rule.Session && after.Fence != tr.Fence {
					t.Errorf("fence = %d, want %d", after.Fence, tr.Fence)
				}
				if to == ledger.StatusApplied && (after.AppliedAt == nil || !after.AppliedAt.Equal(tr.Now)) {
					t.Errorf("applied_at = %v, want %s", after.AppliedAt, tr.Now)
				}
				if to == ledger.StatusPending && !after.ExpiresAt.Equal(tr.ExpiresAt) {
					t.Errorf("expires_at = %s, want %s", after.ExpiresAt, tr.ExpiresAt)
				}
			})
		}
	}
	t.Run("zero status", func(t *testing.T) {
		tu, _, _ := e.reach(ledger.StatusPending)
		_, err := e.l.Transition(e.ctx, ledger.Transition{TopUpID: tu.ID, From: ledger.StatusPending, Now: base})
		if !errors.Is(err, ledger.ErrInvalidTransition) {
			t.Fatalf("err = %v, want ErrInvalidTransition", err)
		}
	})
}

// testTransitionConflict asks for each allowed transition while the
// top-up is in some other status: compare-and-set must refuse it.
func testTransitionConflict(t *testing.T, e *env) {
	for _, from := range allStatuses {
		for _, to := range allStatuses {
			rule, err := ledger.CheckTransition(from, to)
			if err != nil {
				continue
			}
			// The top-up is actually in a different status than From.
			actual := ledger.StatusPending
			if from == ledger.StatusPending {
				actual = ledger.StatusCancelled
			}
			t.Run(fmt.Sprintf("%s→%s while %s", from, to, actual), func(t *testing.T) {
				tu, card, sess := e.reach(actual)
				tr := ledger.Transition{TopUpID: tu.ID, From: from, To: to, Now: base.Add(time.Hour)}
				if rule.Session {
					tr.Fence, tr.SessionID, tr.CardUID = e.newFence(), sess, card
				}
				_, err := e.l.Transition(e.ctx, tr)
				if !errors.Is(err, ledger.ErrConflict) {
					t.Fatalf("err = %v, want ErrConflict", err)
				}
				if d := same(tu, e.get(tu.ID)); d != nil {
					t.Fatalf("refused transition wrote: %v", d)
				}
				if n := len(e.attempts(tu.ID)); n != 0 {
					t.Fatalf("refused transition left %d attempts", n)
				}
			})
		}
	}
}

func testTransitionInvalidInput(t *testing.T, e *env) {
	tu, card, sess := e.reach(ledger.StatusInProgress)
	good := ledger.Transition{TopUpID: tu.ID, From: ledger.StatusInProgress, To: ledger.StatusApplied,
		Fence: e.newFence(), SessionID: sess, CardUID: card, Now: base.Add(time.Minute)}
	cases := []struct {
		name  string
		edit  func(*ledger.Transition)
		field string
	}{
		{"no fence", func(t *ledger.Transition) { t.Fence = 0 }, "fence"},
		{"negative fence", func(t *ledger.Transition) { t.Fence = -1 }, "fence"},
		{"no session", func(t *ledger.Transition) { t.SessionID = uuid.Nil }, "session_id"},
		{"no card", func(t *ledger.Transition) { t.CardUID = "" }, "card_uid"},
		{"bad card", func(t *ledger.Transition) { t.CardUID = "xyz" }, "card_uid"},
		{"short tmv", func(t *ledger.Transition) { t.TMV = []byte{1, 2, 3} }, "tmv"},
		{"long error code", func(t *ledger.Transition) { t.ErrorCode = string(make([]byte, 65)) }, "error_code"},
		{"no time", func(t *ledger.Transition) { t.Now = time.Time{} }, "now"},
		{"no top-up", func(t *ledger.Transition) { t.TopUpID = uuid.Nil }, "topup_id"},
		{"expiry off pending", func(t *ledger.Transition) { t.ExpiresAt = base }, "expires_at"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tr := good
			c.edit(&tr)
			_, err := e.l.Transition(e.ctx, tr)
			var ve *ledger.ValidationError
			if !errors.As(err, &ve) || ve.Field != c.field {
				t.Fatalf("err = %v, want a ValidationError on %s", err, c.field)
			}
			if d := same(tu, e.get(tu.ID)); d != nil {
				t.Fatalf("refused transition wrote: %v", d)
			}
		})
	}
	t.Run("session on operator transition", func(t *testing.T) {
		p, _, s := e.reach(ledger.StatusPending)
		_, err := e.l.Transition(e.ctx, ledger.Transition{TopUpID: p.ID, From: ledger.StatusPending,
			To: ledger.StatusCancelled, SessionID: s, Now: base})
		if !errors.Is(err, ledger.ErrInvalid) {
			t.Fatalf("err = %v, want ErrInvalid", err)
		}
	})
	t.Run("unknown top-up", func(t *testing.T) {
		tr := good
		tr.TopUpID = uuid.New()
		_, err := e.l.Transition(e.ctx, tr)
		if !errors.Is(err, ledger.ErrNotFound) {
			t.Fatalf("err = %v, want ErrNotFound", err)
		}
	})
}

// race runs fn from n goroutines released together and returns how many
// succeeded and the errors of the others.
func race(n int, fn func(i int) error) (int, []error) {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		wins int
		errs []error
	)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			err := fn(i)
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				wins++
			} else {
				errs = append(errs, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	return wins, errs
}

func testContention(t *testing.T, e *env) {
	const n = 20
	card := e.card()
	tu := e.create(ledger.Request{Amount: 900, Currency: "EUR", CardUID: card})
	fence := e.newFence()
	sessions := make([]uuid.UUID, n)
	for i := range sessions {
		sessions[i] = e.session(tu.ID).ID
	}
	t.Run("start", func(t *testing.T) {
		wins, errs := race(n, func(i int) error {
			_, err := e.l.Transition(e.ctx, ledger.Transition{TopUpID: tu.ID, From: ledger.StatusPending,
				To: ledger.StatusInProgress, Fence: fence, SessionID: sessions[i], CardUID: card, Now: base.Add(time.Second)})
			return err
		})
		if wins != 1 {
			t.Fatalf("%d sessions started the top-up, want exactly 1", wins)
		}
		for _, err := range errs {
			if !errors.Is(err, ledger.ErrConflict) {
				t.Errorf("loser err = %v, want ErrConflict", err)
			}
		}
		got := e.get(tu.ID)
		if got.Status != ledger.StatusInProgress || got.Attempts != 1 || len(e.attempts(tu.ID)) != 1 {
			t.Fatalf("after race: status %s attempts %d rows %d", got.Status, got.Attempts, len(e.attempts(tu.ID)))
		}
	})
	t.Run("finish", func(t *testing.T) {
		// The same session races applied against failed: one outcome only.
		sess := e.attempts(tu.ID)[0].SessionID
		wins, errs := race(n, func(i int) error {
			to := ledger.StatusApplied
			if i%2 == 1 {
				to = ledger.StatusFailed
			}
			_, err := e.l.Transition(e.ctx, ledger.Transition{TopUpID: tu.ID, From: ledger.StatusInProgress,
				To: to, Fence: fence, SessionID: sess, CardUID: card, Now: base.Add(2 * time.Second)})
			return err
		})
		if wins != 1 {
			t.Fatalf("%d finishes won, want exactly 1", wins)
		}
		for _, err := range errs {
			if !errors.Is(err, ledger.ErrConflict) {
				t.Errorf("loser err = %v, want ErrConflict", err)
			}
		}
		got := e.get(tu.ID)
		as := e.attempts(tu.ID)
		if len(as) != 1 || as[0].Outcome != got.Status || as[0].EndedAt == nil {
			t.Fatalf("attempt %+v does not match status %s", as, got.Status)
		}
	})
}

func testStaleFence(t *testing.T, e *env) {
	card := e.card()
	a := e.create(ledger.Request{Amount: 100, Currency: "EUR", CardUID: card})
	b := e.create(ledger.Request{Amount: 200, Currency: "EUR", CardUID: card})
	sa, sb := e.session(a.ID).ID, e.session(b.ID).ID
	old := e.newFence()
	a = e.step2(a, sa, card, ledger.StatusInProgress, old)
	// Another session takes the card lock over with a newer token.
	newer := e.newFence()
	e.step2(b, sb, card, ledger.StatusInProgress, newer)

	t.Run("write from the old lock", func(t *testing.T) {
		bal := int64(42)
		_, err := e.l.Transition(e.ctx, ledger.Transition{TopUpID: a.ID, From: ledger.StatusInProgress,
			To: ledger.StatusInDoubt, Fence: old, SessionID: sa, CardUID: card, BalanceAfter: &bal, Now: base.Add(time.Minute)})
		if !errors.Is(err, ledger.ErrStaleFence) {
			t.Fatalf("err = %v, want ErrStaleFence", err)
		}
		if d := same(a, e.get(a.ID)); d != nil {
			t.Fatalf("stale write changed the top-up: %v", d)
		}
		as := e.attempts(a.ID)
		if len(as) != 1 || as[0].Outcome != ledger.StatusInProgress || as[0].EndedAt != nil {
			t.Fatalf("stale write changed the attempt: %+v", as)
		}
	})
	t.Run("start from the old lock", func(t *testing.T) {
		c := e.create(ledger.Request{Amount: 300, Currency: "EUR"})
		sc := e.session(c.ID).ID
		_, err := e.l.Transition(e.ctx, ledger.Transition{TopUpID: c.ID, From: ledger.StatusPending,
			To: ledger.StatusInProgress, Fence: old, SessionID: sc, CardUID: card, Now: base.Add(time.Minute)})
		if !errors.Is(err, ledger.ErrStaleFence) {
			t.Fatalf("err = %v, want ErrStaleFence", err)
		}
		got := e.get(c.ID)
		if d := same(c, got); d != nil {
			t.Fatalf("stale start changed the top-up: %v", d)
		}
		if got.CardUID != "" || len(e.attempts(c.ID)) != 0 {
			t.Fatalf("stale start bound card %q or recorded %d attempts", got.CardUID, len(e.attempts(c.ID)))
		}
	})
	t.Run("equal fence is the same lock", func(t *testing.T) {
		got, err := e.l.Transition(e.ctx, ledger.Transition{TopUpID: a.ID, From: ledger.StatusInProgress,
			To: ledger.StatusFailed, Fence: newer, SessionID: sb, CardUID: card, Now: base.Add(time.Minute)})
		if err != nil || got.Status != ledger.StatusFailed || got.Fence != newer {
			t.Fatalf("newest fence refused: %+v %v", got, err)
		}
	})
	t.Run("other cards unaffected", func(t *testing.T) {
		other := e.card()
		c := e.create(ledger.Request{Amount: 300, Currency: "EUR"})
		got, err := e.l.Transition(e.ctx, ledger.Transition{TopUpID: c.ID, From: ledger.StatusPending,
			To: ledger.StatusInProgress, Fence: old, SessionID: e.session(c.ID).ID, CardUID: other, Now: base.Add(time.Minute)})
		if err != nil || got.CardUID != other {
			t.Fatalf("fence of another card refused: %+v %v", got, err)
		}
	})
}

func (e *env) step2(tu ledger.TopUp, sess uuid.UUID, card string, to ledger.Status, fence int64) ledger.TopUp {
	e.t.Helper()
	out, err := e.l.Transition(e.ctx, ledger.Transition{TopUpID: tu.ID, From: tu.Status, To: to, Fence: fence,
		SessionID: sess, CardUID: card, Now: base.Add(time.Second)})
	if err != nil {
		e.t.Fatalf("Transition %s → %s fence %d: %v", tu.Status, to, fence, err)
	}
	return out
}

// testFenceRace starts many top-ups on one card concurrently, each with
// its own fence: whatever the interleaving, the card's fence never goes
// back, so a session whose fence is below the final one cannot write.
func testFenceRace(t *testing.T, e *env) {
	const n = 16
	card := e.card()
	tus := make([]ledger.TopUp, n)
	sess := make([]uuid.UUID, n)
	fences := make([]int64, n)
	for i := range tus {
		tus[i] = e.create(ledger.Request{Amount: int64(i + 1), Currency: "EUR", CardUID: card})
		sess[i] = e.session(tus[i].ID).ID
		fences[i] = e.newFence()
	}
	_, errs := race(n, func(i int) error {
		_, err := e.l.Transition(e.ctx, ledger.Transition{TopUpID: tus[i].ID, From: ledger.StatusPending,
			To: ledger.StatusInProgress, Fence: fences[i], SessionID: sess[i], CardUID: card, Now: base.Add(time.Second)})
		return err
	})
	for _, err := range errs {
		if !errors.Is(err, ledger.ErrStaleFence) {
			t.Fatalf("err = %v, want ErrStaleFence", err)
		}
	}
	// Every session but the highest-fenced one is now stale.
	top := n - 1
	for i := range tus {
		if e.get(tus[i].ID).Status != ledger.StatusInProgress {
			continue
		}
		_, err := e.l.Transition(e.ctx, ledger.Transition{TopUpID: tus[i].ID, From: ledger.StatusInProgress,
			To: ledger.StatusFailed, Fence: fences[i], SessionID: sess[i], CardUID: card, Now: base.Add(time.Minute)})
		if i == top && err != nil {
			t.Fatalf("highest fence refused: %v", err)
		}
		if i != top && !errors.Is(err, ledger.ErrStaleFence) {
			t.Fatalf("session %d (fence %d) wrote after fence %d: %v", i, fences[i], fences[top], err)
		}
	}
	if got := e.get(tus[top].ID).Status; got != ledger.StatusInProgress && got != ledger.StatusFailed {
		t.Fatalf("highest-fenced top-up is %s", got)
	}
}

func testCardBinding(t *testing.T, e *env) {
	x, y := e.card(), e.card()
	t.Run("bound at create", func(t *testing.T) {
		tu := e.create(ledger.Request{Amount: 100, Currency: "EUR", CardUID: x})
		_, err := e.l.Transition(e.ctx, ledger.Transition{TopUpID: tu.ID, From: ledger.StatusPending,
			To: ledger.StatusInProgress, Fence: e.newFence(), SessionID: e.session(tu.ID).ID, CardUID: y, Now: base})
		if !errors.Is(err, ledger.ErrCardMismatch) {
			t.Fatalf("err = %v, want ErrCardMismatch", err)
		}
		if d := same(tu, e.get(tu.ID)); d != nil {
			t.Fatalf("mismatch wrote: %v", d)
		}
	})
	t.Run("bound by the first session", func(t *testing.T) {
		tu := e.create(ledger.Request{Amount: 100, Currency: "EUR"})
		sess := e.session(tu.ID).ID
		got, err := e.l.Transition(e.ctx, ledger.Transition{TopUpID: tu.ID, From: ledger.StatusPending,
			To: ledger.StatusInProgress, Fence: e.newFence(), SessionID: sess, CardUID: strings.ToLower(y), Now: base})
		if err != nil || got.CardUID != y {
			t.Fatalf("bind: card %q err %v, want %s", got.CardUID, err, y)
		}
		got = e.step(got, sess, y, ledger.StatusFailed)
		_, err = e.l.Transition(e.ctx, ledger.Transition{TopUpID: tu.ID, From: ledger.StatusFailed,
			To: ledger.StatusInProgress, Fence: e.newFence(), SessionID: e.session(tu.ID).ID, CardUID: x, Now: base})
		if !errors.Is(err, ledger.ErrCardMismatch) {
			t.Fatalf("retry on another card: err = %v, want ErrCardMismatch", err)
		}
		list, err := e.l.ListTopUpsByCard(e.ctx, y)
		if err != nil || len(list) != 1 || list[0].ID != tu.ID {
			t.Fatalf("history of the bound card = %v, %v", list, err)
		}
	})
	t.Run("unbound when the session failed before any commit", func(t *testing.T) {
		tu := e.create(ledger.Request{Amount: 100, Currency: "EUR"})
		sess := e.session(tu.ID).ID
		got := e.step(tu, sess, y, ledger.StatusInProgress)
		got, err := e.l.Transition(e.ctx, ledger.Transition{TopUpID: got.ID, From: ledger.StatusInProgress,
			To: ledger.StatusFailed, Fence: e.newFence(), SessionID: sess, CardUID: y, Unbind: true, ErrorCode: "card_unknown", Now: base})
		if err != nil || got.CardUID != "" || got.Status != ledger.StatusFailed {
			t.Fatalf("unbind: %+v, %v", got, err)
		}
		if a := e.attempts(tu.ID); len(a) != 1 || a[0].CardUID != y {
			t.Fatalf("attempt lost the UID the session used: %+v", a)
		}
		// Any card may take it now.
		e.step(e.op(got, ledger.StatusPending), e.session(tu.ID).ID, x, ledger.StatusInProgress)
		// Unbind belongs to in_progress → failed only.
		other := e.create(ledger.Request{Amount: 100, Currency: "EUR"})
		_, err = e.l.Transition(e.ctx, ledger.Transition{TopUpID: other.ID, From: ledger.StatusPending,
			To: ledger.StatusInProgress, Fence: e.newFence(), SessionID: e.session(other.ID).ID, CardUID: y, Unbind: true, Now: base})
		if !errors.Is(err, ledger.ErrInvalid) {
			t.Fatalf("unbind on pending → in_progress: err = %v, want ErrInvalid", err)
		}
	})
}

func testExpiry(t *testing.T, e *env) {
	p := e.create(ledger.Request{Amount: 100, Currency: "EUR"})
	running, _, _ := e.reach(ledger.StatusInProgress)
	doubt, _, _ := e.reach(ledger.StatusInDoubt)
	failed, _, _ := e.reach(ledger.StatusFailed)
	deadline := p.ExpiresAt

	if n, err := e.l.ExpirePending(e.ctx, deadline.Add(-time.Microsecond)); err != nil || n != 0 {
		t.Fatalf("before the deadline: expired %d (%v), want 0", n, err)
	}
	_, err := e.l.Transition(e.ctx, ledger.Transition{TopUpID: p.ID, From: ledger.StatusPending,
		To: ledger.StatusInProgress, Fence: e.newFence(), SessionID: e.session(p.ID).ID, CardUID: e.card(), Now: deadline})
	if !errors.Is(err, ledger.ErrTopUpExpired) {
		t.Fatalf("start at the deadline: err = %v, want ErrTopUpExpired", err)
	}
	n, err := e.l.ExpirePending(e.ctx, deadline)
	if err != nil || n != 1 {
		t.Fatalf("at the deadline: expired %d (%v), want 1", n, err)
	}
	got := e.get(p.ID)
	if got.Status != ledger.StatusExpired || !got.UpdatedAt.Equal(deadline) {
		t.Fatalf("expired top-up: %s updated %s", got.Status, got.UpdatedAt)
	}
	for _, tu := range []ledger.TopUp{running, doubt, failed} {
		if s := e.get(tu.ID).Status; s != tu.Status {
			t.Errorf("ExpirePending moved a %s top-up to %s", tu.Status, s)
		}
	}
	if n, err := e.l.ExpirePending(e.ctx, deadline.Add(time.Hour)); err != nil || n != 0 {
		t.Fatalf("second run expired %d (%v), want 0", n, err)
	}
	t.Run("retry gets a new expiry", func(t *testing.T) {
		later := deadline.Add(time.Hour)
		again, err := e.l.Transition(e.ctx, ledger.Transition{TopUpID: failed.ID, From: ledger.StatusFailed,
			To: ledger.StatusPending, ExpiresAt: later.Add(time.Hour), Now: later})
		if err != nil || !again.ExpiresAt.Equal(later.Add(time.Hour)) {
			t.Fatalf("failed → pending: %+v %v", again, err)
		}
		if n, err := e.l.ExpirePending(e.ctx, later); err != nil || n != 0 {
			t.Fatalf("renewed top-up expired early: %d %v", n, err)
		}
	})
}

func testHistory(t *testing.T, e *env) {
	x, y := e.card(), e.card()
	var made []ledger.TopUp
	for i := range 4 {
		tu, created, err := e.l.CreateTopUp(e.ctx, ledger.Request{Amount: int64(100 * (i + 1)), Currency: "EUR", CardUID: x},
			e.key(), base.Add(time.Duration(i)*time.Minute))
		if err != nil || !created {
			t.Fatal(err)
		}
		made = append(made, tu)
	}
	e.create(ledger.Request{Amount: 5, Currency: "EUR", CardUID: y})
	// Put the second and third in doubt.
	for _, i := range []int{2, 1} {
		sess := e.session(made[i].ID).ID
		tu := e.step(made[i], sess, x, ledger.StatusInProgress)
		e.step(tu, sess, x, ledger.StatusInDoubt)
	}
	list, err := e.l.ListTopUpsByCard(e.ctx, "04"+x[2:])
	if err != nil || len(list) != 4 {
		t.Fatalf("history = %d rows, %v", len(list), err)
	}
	for i, tu := range list {
		if want := made[3-i].ID; tu.ID != want {
			t.Errorf("history[%d] = %s, want %s (newest first)", i, tu.ID, want)
		}
	}
	// The fourth is taken by a session that never ends: in_progress.
	e.step(made[3], e.session(made[3].ID).ID, x, ledger.StatusInProgress)
	open, err := e.l.UnresolvedByCard(e.ctx, x)
	if err != nil || len(open) != 3 || open[0].ID != made[1].ID || open[1].ID != made[2].ID || open[2].ID != made[3].ID {
		t.Fatalf("unresolved = %v, %v; want [%s %s %s] oldest first", open, err, made[1].ID, made[2].ID, made[3].ID)
	}
	if open[0].Status != ledger.StatusInDoubt || open[2].Status != ledger.StatusInProgress {
		t.Fatalf("unresolved statuses = %s, %s", open[0].Status, open[2].Status)
	}
	if d, err := e.l.UnresolvedByCard(e.ctx, y); err != nil || len(d) != 0 {
		t.Fatalf("other card unresolved = %v, %v", d, err)
	}
	if l, err := e.l.ListTopUpsByCard(e.ctx, e.card()); err != nil || len(l) != 0 {
		t.Fatalf("unknown card history = %v, %v", l, err)
	}
	if _, err := e.l.ListTopUpsByCard(e.ctx, "nothex"); !errors.Is(err, ledger.ErrInvalid) {
		t.Fatalf("bad uid: err = %v, want ErrInvalid", err)
	}
	if _, err := e.l.UnresolvedByCard(e.ctx, "0102"); !errors.Is(err, ledger.ErrInvalid) {
		t.Fatalf("bad uid: err = %v, want ErrInvalid", err)
	}
}

func testAttempts(t *testing.T, e *env) {
	card := e.card()
	tu := e.create(ledger.Request{Amount: 1000, Currency: "EUR", CardUID: card})
	at := func(s int) time.Time { return base.Add(time.Duration(s) * time.Second) }
	do := func(tr ledger.Transition) ledger.TopUp {
		t.Helper()
		tr.TopUpID, tr.CardUID = tu.ID, card
		out, err := e.l.Transition(e.ctx, tr)
		if err != nil {
			t.Fatalf("%s → %s: %v", tr.From, tr.To, err)
		}
		return out
	}
	s1, s2, s3 := e.session(tu.ID).ID, e.session(tu.ID).ID, e.session(tu.ID).ID
	do(ledger.Transition{From: ledger.StatusPending, To: ledger.StatusInProgress, Fence: 101, SessionID: s1, Now: at(1)})
	do(ledger.Transition{From: ledger.StatusInProgress, To: ledger.StatusFailed, Fence: 101, SessionID: s1, ErrorCode: "tag_lost", Now: at(2)})
	before, after := int64(250), int64(1250)
	do(ledger.Transition{From: ledger.StatusFailed, To: ledger.StatusInProgress, Fence: 102, SessionID: s2,
		BalanceBefore: &before, Now: at(3)})
	mid := do(ledger.Transition{From: ledger.StatusInProgress, To: ledger.StatusInDoubt, Fence: 102, SessionID: s2, ErrorCode: "timeout", Now: at(4)})
	if mid.Attempts != 2 || mid.BalanceBefore == nil || *mid.BalanceBefore != 250 {
		t.Fatalf("in doubt: %+v", mid)
	}
	tmc := uint32(7)
	tmv := []byte{1, 2, 3, 4, 5, 6, 7, 8}
	final := do(ledger.Transition{From: ledger.StatusInDoubt, To: ledger.StatusApplied, Fence: 103, SessionID: s3,
		BalanceAfter: &after, TMC: &tmc, TMV: tmv, Now: at(5)})

	if final.Status != ledger.StatusApplied || final.Attempts != 3 || final.Fence != 103 ||
		final.BalanceBefore == nil || *final.BalanceBefore != 250 || final.BalanceAfter == nil || *final.BalanceAfter != 1250 ||
		final.TMC == nil || *final.TMC != 7 || string(final.TMV) != string(tmv) ||
		final.AppliedAt == nil || !final.AppliedAt.Equal(at(5)) {
		t.Fatalf("applied top-up = %+v", final)
	}
	if got := e.get(tu.ID); got.Attempts != 3 || string(got.TMV) != string(tmv) {
		t.Fatalf("stored top-up = %+v", got)
	}
	want := []struct {
		sess    uuid.UUID
		fence   int64
		start   time.Time
		end     time.Time
		outcome ledger.Status
		code    string
	}{
		{s1, 101, at(1), at(2), ledger.StatusFailed, "tag_lost"},
		{s2, 102, at(3), at(4), ledger.StatusInDoubt, "timeout"},
		{s3, 103, at(5), at(5), ledger.StatusApplied, ""},
	}
	as := e.attempts(tu.ID)
	if len(as) != len(want) {
		t.Fatalf("%d attempts, want %d: %+v", len(as), len(want), as)
	}
	for i, w := range want {
		a := as[i]
		if a.SessionID != w.sess || a.TopUpID != tu.ID || a.CardUID != card || a.Fence != w.fence ||
			!a.StartedAt.Equal(w.start) || a.EndedAt == nil || !a.EndedAt.Equal(w.end) ||
			a.Outcome != w.outcome || a.ErrorCode != w.code || a.ID == uuid.Nil {
			t.Errorf("attempt %d = %+v, want %+v", i, a, w)
		}
	}
	t.Run("open attempt has no end", func(t *testing.T) {
		tu, _, _ := e.reach(ledger.StatusInProgress)
		as := e.attempts(tu.ID)
		if len(as) != 1 || as[0].EndedAt != nil || as[0].Outcome != ledger.StatusInProgress {
			t.Fatalf("attempts = %+v", as)
		}
	})
	t.Run("operator transitions record none", func(t *testing.T) {
		tu, _, _ := e.reach(ledger.StatusCancelled)
		if as := e.attempts(tu.ID); len(as) != 0 {
			t.Fatalf("attempts = %+v", as)
		}
	})
}

func tokenHash(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

func testSessions(t *testing.T, e *env) {
	tu := e.create(ledger.Request{Amount: 100, Currency: "EUR"})
	s, err := e.l.CreateSession(e.ctx, ledger.KindTopUp, tu.ID, base)
	if err != nil || s.Kind != ledger.KindTopUp || s.TopUpID != tu.ID || s.Status != ledger.SessionOpen ||
		!s.CreatedAt.Equal(base) || s.EndedAt != nil || s.ID == uuid.Nil {
		t.Fatalf("CreateSession = %+v, %v", s, err)
	}
	bal, err := e.l.CreateSession(e.ctx, ledger.KindBalance, uuid.Nil, base)
	if err != nil || bal.Kind != ledger.KindBalance || bal.TopUpID != uuid.Nil {
		t.Fatalf("balance session = %+v, %v", bal, err)
	}
	refused := []struct {
		name  string
		kind  ledger.SessionKind
		topUp uuid.UUID
		want  error
	}{
		{"top-up without id", ledger.KindTopUp, uuid.Nil, ledger.ErrInvalid},
		{"balance with id", ledger.KindBalance, tu.ID, ledger.ErrInvalid},
		{"unknown kind", 0, uuid.Nil, ledger.ErrInvalid},
		{"unknown top-up", ledger.KindTopUp, uuid.New(), ledger.ErrNotFound},
	}
	for _, r := range refused {
		t.Run(r.name, func(t *testing.T) {
			if _, err := e.l.CreateSession(e.ctx, r.kind, r.topUp, base); !errors.Is(err, r.want) {
				t.Fatalf("err = %v, want %v", err, r.want)
			}
		})
	}
	balance := int64(4321)
	out := ledger.SessionOutcome{OK: true, CardUID: "04aabbccddeeff", Balance: &balance,
		Records: []byte(`[{"amount":100,"logref":"0011223344556677"}]`)}
	done, err := e.l.FinishSession(e.ctx, bal.ID, out, base.Add(time.Minute))
	if err != nil || done.Status != ledger.SessionOK || done.EndedAt == nil || !done.EndedAt.Equal(base.Add(time.Minute)) {
		t.Fatalf("FinishSession = %+v, %v", done, err)
	}
	got, err := e.l.GetSession(e.ctx, bal.ID)
	if err != nil || !got.Outcome.OK || got.Outcome.CardUID != "04AABBCCDDEEFF" || got.Outcome.Balance == nil ||
		*got.Outcome.Balance != 4321 || string(got.Outcome.Records) != string(out.Records) {
		t.Fatalf("GetSession = %+v (records %s), %v", got, got.Outcome.Records, err)
	}
	if _, err := e.l.FinishSession(e.ctx, bal.ID, out, base.Add(time.Hour)); !errors.Is(err, ledger.ErrSessionClosed) {
		t.Fatalf("second finish: err = %v, want ErrSessionClosed", err)
	}
	failed, err := e.l.FinishSession(e.ctx, s.ID, ledger.SessionOutcome{ErrorCode: "card_busy"}, base.Add(time.Minute))
	if err != nil || failed.Status != ledger.SessionFailed || failed.Outcome.ErrorCode != "card_busy" {
		t.Fatalf("failed finish = %+v, %v", failed, err)
	}
	if _, err := e.l.FinishSession(e.ctx, uuid.New(), out, base); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("unknown session: err = %v", err)
	}
	if _, err := e.l.FinishSession(e.ctx, s.ID, ledger.SessionOutcome{Records: []byte("{")}, base); !errors.Is(err, ledger.ErrInvalid) {
		t.Fatalf("bad records: err = %v", err)
	}
	if _, err := e.l.GetSession(e.ctx, uuid.New()); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("unknown session: err = %v", err)
	}
}

func testTokens(t *testing.T, e *env) {
	open := func() ledger.Session {
		s, err := e.l.CreateSession(e.ctx, ledger.KindBalance, uuid.Nil, base)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	expires := base.Add(10 * time.Minute)
	s := open()
	h := tokenHash("token-one")
	if err := e.l.IssueToken(e.ctx, s.ID, h, expires); err != nil {
		t.Fatalf("IssueToken: %v", err)
	}
	if err := e.l.IssueToken(e.ctx, s.ID, tokenHash("token-two"), expires); !errors.Is(err, ledger.ErrTokenExists) {
		t.Fatalf("second token for a session: err = %v, want ErrTokenExists", err)
	}
	if err := e.l.IssueToken(e.ctx, open().ID, h, expires); !errors.Is(err, ledger.ErrTokenExists) {
		t.Fatalf("same hash for another session: err = %v, want ErrTokenExists", err)
	}
	got, err := e.l.ConsumeToken(e.ctx, h, expires.Add(-time.Microsecond))
	if err != nil || got.ID != s.ID || got.Status != ledger.SessionOpen {
		t.Fatalf("ConsumeToken = %+v, %v", got, err)
	}

	expired := open()
	eh := tokenHash("token-expired")
	if err := e.l.IssueToken(e.ctx, expired.ID, eh, expires); err != nil {
		t.Fatal(err)
	}
	closed := open()
	ch := tokenHash("token-closed")
	if err := e.l.IssueToken(e.ctx, closed.ID, ch, expires); err != nil {
		t.Fatal(err)
	}
	if _, err := e.l.FinishSession(e.ctx, closed.ID, ledger.SessionOutcome{ErrorCode: "cancelled"}, base); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		hash []byte
		now  time.Time
		want error
	}{
		{"used", h, base, ledger.ErrTokenUsed},
		{"used and expired", h, expires.Add(time.Hour), ledger.ErrTokenUsed},
		{"unknown", tokenHash("never issued"), base, ledger.ErrTokenUnknown},
		{"expired at the instant", eh, expires, ledger.ErrTokenExpired},
		{"expired later", eh, expires.Add(time.Hour), ledger.ErrTokenExpired},
		{"session finished", ch, base, ledger.ErrSessionClosed},
		{"short hash", h[:16], base, ledger.ErrInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := e.l.ConsumeToken(e.ctx, c.hash, c.now); !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
		})
	}
	t.Run("expired token stays unused", func(t *testing.T) {
		if _, err := e.l.ConsumeToken(e.ctx, eh, base); err != nil {
			t.Fatalf("consume before expiry after refused tries: %v", err)
		}
	})
	t.Run("issue refused", func(t *testing.T) {
		if err := e.l.IssueToken(e.ctx, closed.ID, tokenHash("x"), expires); !errors.Is(err, ledger.ErrSessionClosed) {
			t.Errorf("finished session: err = %v", err)
		}
		if err := e.l.IssueToken(e.ctx, uuid.New(), tokenHash("y"), expires); !errors.Is(err, ledger.ErrNotFound) {
			t.Errorf("unknown session: err = %v", err)
		}
		if err := e.l.IssueToken(e.ctx, open().ID, []byte("short"), expires); !errors.Is(err, ledger.ErrInvalid) {
			t.Errorf("short hash: err = %v", err)
		}
	})
}

func testTokenConcurrent(t *testing.T, e *env) {
	const n = 20
	tu := e.create(ledger.Request{Amount: 100, Currency: "EUR"})
	s := e.session(tu.ID)
	h := tokenHash("contended")
	if err := e.l.IssueToken(e.ctx, s.ID, h, base.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	wins, errs := race(n, func(int) error {
		got, err := e.l.ConsumeToken(e.ctx, h, base)
		if err == nil && (got.ID != s.ID || got.TopUpID != tu.ID) {
			return fmt.Errorf("consumed into session %+v", got)
		}
		return err
	})
	if wins != 1 {
		t.Fatalf("%d consumers won, want exactly 1", wins)
	}
	for _, err := range errs {
		if !errors.Is(err, ledger.ErrTokenUsed) {
			t.Errorf("loser err = %v, want ErrTokenUsed", err)
		}
	}
}

func testNotFound(t *testing.T, e *env) {
	if _, err := e.l.GetTopUp(e.ctx, uuid.New()); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("GetTopUp unknown: err = %v", err)
	}
	if as, err := e.l.ListAttempts(e.ctx, uuid.New()); err != nil || len(as) != 0 {
		t.Fatalf("ListAttempts unknown = %v, %v", as, err)
	}
	if err := e.l.Ping(e.ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

// BenchTransition measures Transition: one top-up cycling between
// in_progress and failed (each a full guarded transaction with fence
// check and attempt update), serially and from parallel goroutines on
// distinct cards.
func BenchTransition(b *testing.B, open Opener) {
	l := open(b)
	ctx := context.Background()
	var seq atomic.Int64
	// setup and cycle return errors rather than calling b.Fatal because
	// RunParallel calls them from goroutines other than the benchmark's.
	setup := func() (ledger.TopUp, uuid.UUID, string, error) {
		n := seq.Add(1)
		card := fmt.Sprintf("04%012X", n)
		tu, _, err := l.CreateTopUp(ctx, ledger.Request{Amount: 100, Currency: "EUR", CardUID: card}, fmt.Sprintf("bench-%d", n), base)
		if err != nil {
			return tu, uuid.Nil, "", err
		}
		s, err := l.CreateSession(ctx, ledger.KindTopUp, tu.ID, base)
		return tu, s.ID, card, err
	}
	cycle := func(tu ledger.TopUp, sess uuid.UUID, card string, i int) error {
		from, to := ledger.StatusInProgress, ledger.StatusFailed
		switch {
		case i == 0:
			from, to = ledger.StatusPending, ledger.StatusInProgress
		case i%2 == 0:
			from, to = ledger.StatusFailed, ledger.StatusInProgress
		}
		_, err := l.Transition(ctx, ledger.Transition{TopUpID: tu.ID, From: from, To: to, Fence: 1,
			SessionID: sess, CardUID: card, Now: base.Add(time.Second)})
		return err
	}
	b.Run("serial", func(b *testing.B) {
		tu, sess, card, err := setup()
		if err != nil {
			b.Fatal(err)
		}
		for i := 0; b.Loop(); i++ {
			if err := cycle(tu, sess, card, i); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			tu, sess, card, err := setup()
			if err != nil {
				b.Error(err)
				return
			}
			for i := 0; pb.Next(); i++ {
				if err := cycle(tu, sess, card, i); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// testReaderIDs: the Transaction MAC Reader IDs go with → applied only,
// both 16 bytes, and are stored and read back; a top-up without them
// reads back nil.
func testReaderIDs(t *testing.T, e *env) {
	rid, prev := make([]byte, ledger.ReaderIDLen), make([]byte, ledger.ReaderIDLen)
	for i := range rid {
		rid[i], prev[i] = byte(i), byte(0xF0+i)
	}
	bad := []struct {
		name      string
		to        ledger.Status
		rid, prev []byte
	}{
		{"previous without reader", ledger.StatusApplied, nil, prev},
		{"short reader", ledger.StatusApplied, rid[:15], prev},
		{"reader without previous", ledger.StatusApplied, rid, nil},
		{"not applied", ledger.StatusFailed, rid, prev},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			tu, card, sess := e.reach(ledger.StatusInDoubt)
			_, err := e.l.Transition(e.ctx, ledger.Transition{TopUpID: tu.ID, From: tu.Status, To: b.to, Fence: e.newFence(),
				SessionID: sess, CardUID: card, ReaderID: b.rid, PrevReaderID: b.prev, Now: base.Add(2 * time.Second)})
			var ve *ledger.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error %v, want a validation error", err)
			}
			if got := e.get(tu.ID); got.Status != ledger.StatusInDoubt || got.ReaderID != nil {
				t.Fatalf("refused write changed the top-up: %+v", got)
			}
		})
	}
	tu, card, sess := e.reach(ledger.StatusInDoubt)
	out, err := e.l.Transition(e.ctx, ledger.Transition{TopUpID: tu.ID, From: tu.Status, To: ledger.StatusApplied, Fence: e.newFence(),
		SessionID: sess, CardUID: card, ReaderID: rid, PrevReaderID: prev, Now: base.Add(2 * time.Second)})
	if err != nil || string(out.ReaderID) != string(rid) || string(out.PrevReaderID) != string(prev) {
		t.Fatalf("applied with reader IDs: %+v (%v)", out, err)
	}
	if got := e.get(tu.ID); string(got.ReaderID) != string(rid) || string(got.PrevReaderID) != string(prev) {
		t.Fatalf("stored reader IDs %X %X", got.ReaderID, got.PrevReaderID)
	}
	plain, _, _ := e.reach(ledger.StatusApplied)
	if got := e.get(plain.ID); got.ReaderID != nil || got.PrevReaderID != nil {
		t.Fatalf("top-up without reader IDs reads %X %X", got.ReaderID, got.PrevReaderID)
	}
}

// testCardKeys: a key roll-forward is recorded in flight before the
// ChangeKey leaves and settled by the version the card proves next,
// whichever it is.
func testCardKeys(t *testing.T, e *env) {
	ck, ok := e.l.(ledger.CardKeys)
	if !ok {
		t.Fatal("the ledger does not record card keys")
	}
	card, now := e.card(), base.Add(time.Minute)
	if _, err := ck.GetCardKey(e.ctx, card, 0x014499, 3); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("unknown card key: %v", err)
	}
	if _, err := ck.IntendCardKey(e.ctx, card, 0x014499, 3, 1, 1, now); err == nil {
		t.Fatal("a roll-forward to the held version was accepted")
	}
	k, err := ck.IntendCardKey(e.ctx, card, 0x014499, 3, 1, 2, now)
	if err != nil || k.Version != 1 || k.Pending == nil || *k.Pending != 2 {
		t.Fatalf("intend: %+v (%v)", k, err)
	}
	// The ChangeKey did not land: the card proves version 1.
	if k, err = ck.ProveCardKey(e.ctx, card, 0x014499, 3, 1, now); err != nil || k.Version != 1 || k.Pending != nil {
		t.Fatalf("prove the old version: %+v (%v)", k, err)
	}
	if _, err = ck.IntendCardKey(e.ctx, card, 0x014499, 3, 1, 2, now); err != nil {
		t.Fatal(err)
	}
	if k, err = ck.ProveCardKey(e.ctx, card, 0x014499, 3, 2, now); err != nil || k.Version != 2 || k.Pending != nil {
		t.Fatalf("prove the new version: %+v (%v)", k, err)
	}
	if k, err = ck.GetCardKey(e.ctx, card, 0x014499, 3); err != nil || k.Version != 2 || !k.UpdatedAt.Equal(now) {
		t.Fatalf("read back: %+v (%v)", k, err)
	}
	if other, err := ck.GetCardKey(e.ctx, card, 0x014499, 2); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("another key of the card: %+v (%v)", other, err)
	}
}
