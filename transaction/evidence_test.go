package transaction_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/transaction"
	"github.com/desfire-relay/relay/transaction/keys"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/lock"
	"github.com/desfire-relay/relay/transaction/profile"
)

// forger relays to the card but answers every command with native code
// ins (CLA 90) itself, with the bare status word sw: what a lying bridge
// can send for any command, since status words carry no MAC.
type forger struct {
	t   desfire.Transport
	ins byte
	sw  []byte
	hit int
}

func (f *forger) Transmit(ctx context.Context, a []byte) ([]byte, error) {
	if len(a) > 1 && a[0] == 0x90 && a[1] == f.ins {
		f.hit++
		return append([]byte(nil), f.sw...), nil
	}
	return f.t.Transmit(ctx, a)
}

// tagLostAfterCommit relays everything; once CommitTransaction went
// reached the card, it reports the card lost: the card holds the credit, the
// server never sees the proof.
type tagLostAfterCommit struct {
	t         desfire.Transport
	committed bool
}

func (l *tagLostAfterCommit) Transmit(ctx context.Context, a []byte) ([]byte, error) {
	if l.committed {
		return nil, desfire.ErrTagLost
	}
	r, err := l.t.Transmit(ctx, a)
	if len(a) > 1 && a[0] == 0x90 && a[1] == desfire.CmdCommitTransaction {
		l.committed = true
		return nil, desfire.ErrTagLost // the card committed; its answer is lost
	}
	return r, err
}

// TestForgedBoundaryErrorOnLogRead is the regression for the lying bridge
// of the "exactly-once" issue: the commit reaches the card, the bridge
// reports tag_lost (in_doubt), then on the next tap — a retry of the
// top-up or a balance lookup — it answers the top-up log read with a bare
// 91BE. A boundary error proves nothing: the top-up must stay in_doubt,
// and the next honest tap settles it as applied, with exactly one credit
// on the card. (Before the fix the server took 91BE for "log empty",
// marked the top-up failed and the honest retry credited it again.)
func TestForgedBoundaryErrorOnLogRead(t *testing.T) {
	for _, p := range []profile.Profile{profile.AN12113(), profile.AN12113EV1()} {
		for _, next := range []string{"topup", "balance"} {
			t.Run(fmt.Sprintf("%s/next=%s", p.Name, next), func(t *testing.T) {
				ctx := context.Background()
				e := newEnv(t, p, sqliteLedger(t), lock.NewMemory())
				tu, tk, _, err := e.svc.CreateTopUp(ctx, "forged-91be", ledger.Request{Amount: 450, Currency: "EUR"})
				if err != nil {
					t.Fatal(err)
				}
				uid := fmt.Sprintf("%X", testUID)
				res := e.svc.Run(ctx, e.open(t, tk), uid, bridge{t: &tagLostAfterCommit{t: e.card}})
				if got, _ := e.svc.GetTopUp(ctx, tu.ID); got.Status != ledger.StatusInDoubt || res.OK {
					t.Fatalf("after tag_lost past the commit: %s (%+v)", got.Status, res)
				}
				e.card.Tap()
				// The lying tap.
				f := &forger{t: e.card, ins: desfire.CmdReadRecords, sw: []byte{0x91, 0xBE}}
				var tk2 *transaction.Ticket
				if next == "topup" {
					tk2, err = e.svc.TopUpTicket(ctx, tu.ID)
				} else {
					tk2, err = e.svc.BalanceTicket(ctx)
				}
				if err != nil {
					t.Fatal(err)
				}
				res = e.svc.Run(ctx, e.open(t, tk2), uid, bridge{t: f, batch: true})
				if f.hit == 0 {
					t.Fatalf("the log was never read (%+v)", res)
				}
				got, _ := e.svc.GetTopUp(ctx, tu.ID)
				if got.Status != ledger.StatusInDoubt || res.OK {
					t.Fatalf("a forged 91BE on the log read moved the top-up to %s (%+v)", got.Status, res)
				}
				e.card.Tap()
				// An honest retry settles it from the card's log.
				tk3, err := e.svc.TopUpTicket(ctx, tu.ID)
				if err != nil {
					t.Fatal(err)
				}
				res = e.run(t, e.open(t, tk3), true)
				got, _ = e.svc.GetTopUp(ctx, tu.ID)
				v, n := e.cardState(t)
				if got.Status != ledger.StatusApplied || v != 450 || n != 1 {
					t.Fatalf("after the honest tap: ledger %s, card %d with %d records (%+v)", got.Status, v, n, res)
				}
			})
		}
	}
}

// countMetrics counts integrity failures by reason.
type countMetrics struct {
	mu        sync.Mutex
	integrity map[string]int
}

// metricsEnv is an AN12113 environment on SQLite whose service reports to
// the returned countMetrics.
func metricsEnv(t *testing.T) (*env, *countMetrics) {
	t.Helper()
	p := profile.AN12113()
	l := sqliteLedger(t)
	e := newEnv(t, p, l, lock.NewMemory())
	m := &countMetrics{}
	svc, err := transaction.New(transaction.Config{Ledger: l, Locker: lock.NewMemory(), Keys: e.kp, Profile: p.Name, LockTTL: time.Second, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	e.svc = svc
	return e, m
}

func (m *countMetrics) LockWait(time.Duration)        {}
func (m *countMetrics) SessionOutcome(string, string) {}
func (m *countMetrics) TopUpOutcome(string)           {}
func (m *countMetrics) LedgerError()                  {}
func (m *countMetrics) IntegrityFailure(reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.integrity == nil {
		m.integrity = map[string]int{}
	}
	m.integrity[reason]++
}

// TestTMCNotAboveLastIsIntegrity: a commit proof whose Transaction MAC
// counter is not above the last one the ledger accepted for the card is
// an integrity failure — the session fails with integrity, the top-up
// stays in_doubt, the metric counts it — never applied.
func TestTMCNotAboveLastIsIntegrity(t *testing.T) {
	ctx := context.Background()
	e, m := metricsEnv(t)
	svc, l, p := e.svc, e.l, e.p
	uid := fmt.Sprintf("%X", testUID)
	// The ledger already accepted counter 5 for this card (say, from a
	// proof the card's own counter has not reached).
	x, _, _, _ := svc.CreateTopUp(ctx, "tmc-x", ledger.Request{Amount: 1, Currency: "EUR", CardUID: uid})
	xs, err := l.CreateSession(ctx, ledger.KindTopUp, x.ID, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	five := uint32(5)
	for _, to := range []ledger.Status{ledger.StatusInProgress, ledger.StatusInDoubt, ledger.StatusApplied} {
		tr := ledger.Transition{TopUpID: x.ID, From: x.Status, To: to, Fence: 1, SessionID: xs.ID, CardUID: uid, Now: time.Now()}
		if to == ledger.StatusApplied {
			tr.TMC, tr.TMV, tr.App = &five, make([]byte, 8), p.AID
		}
		if x, err = l.Transition(ctx, tr); err != nil {
			t.Fatal(err)
		}
	}
	tu, tk, _, err := svc.CreateTopUp(ctx, "tmc-a", ledger.Request{Amount: 300, Currency: "EUR"})
	if err != nil {
		t.Fatal(err)
	}
	res := e.run(t, e.open(t, tk), true)
	got, _ := svc.GetTopUp(ctx, tu.ID)
	if res.OK || res.Reason != transaction.ReasonIntegrity || got.Status != ledger.StatusInDoubt {
		t.Fatalf("proof with TMC 1 after 5: result %+v, ledger %s", res, got.Status)
	}
	if m.integrity["tmc_replay"] != 1 {
		t.Fatalf("integrity metric %v", m.integrity)
	}
}

// failingKeys fails the Transaction MAC key lookup.
type failingKeys struct{ keys.Provider }

func (f failingKeys) CardKey(ctx context.Context, ref keys.Ref, uid []byte) (keys.Secret, error) {
	if ref.Name == keys.TMACName {
		return nil, errors.New("key store unavailable")
	}
	return f.Provider.CardKey(ctx, ref, uid)
}

// failingLedger fails the in_progress → in_doubt write.
type failingLedger struct{ ledger.Ledger }

func (f failingLedger) Transition(ctx context.Context, x ledger.Transition) (ledger.TopUp, error) {
	if x.To == ledger.StatusInDoubt {
		return ledger.TopUp{}, errors.New("database unavailable")
	}
	return f.Ledger.Transition(ctx, x)
}

// TestNothingSentNothingInDoubt: a session that fails before anything
// that could change the card left the server — a key lookup error, a
// ledger error before the commit, a lost lock — ends with the top-up
// failed and the binding it made removed, never in_progress or in_doubt.
func TestNothingSentNothingInDoubt(t *testing.T) {
	ctx := context.Background()
	p := profile.AN12113()
	for _, c := range []struct {
		name string
		cfg  func(*transaction.Config)
	}{
		{"key lookup", func(c *transaction.Config) { c.Keys = failingKeys{c.Keys} }},
		{"ledger write", func(c *transaction.Config) { c.Ledger = failingLedger{c.Ledger} }},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := sqliteLedger(t)
			e := newEnv(t, p, l, lock.NewMemory())
			cfg := transaction.Config{Ledger: l, Locker: lock.NewMemory(), Keys: e.kp, Profile: p.Name, LockTTL: time.Second}
			c.cfg(&cfg)
			svc, err := transaction.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			e.svc = svc
			tu, tk, _, err := svc.CreateTopUp(ctx, "nothing-sent", ledger.Request{Amount: 300, Currency: "EUR"})
			if err != nil {
				t.Fatal(err)
			}
			res := e.run(t, e.open(t, tk), true)
			got, _ := l.GetTopUp(ctx, tu.ID)
			if res.OK || got.Status != ledger.StatusFailed || got.CardUID != "" {
				t.Fatalf("result %+v; ledger %s bound to %q, want failed and unbound", res, got.Status, got.CardUID)
			}
			if v, n := e.cardState(t); v != 0 || n != 0 {
				t.Fatalf("card %d with %d records", v, n)
			}
		})
	}
}

// TestResolutionConflict: an operator resolves an in_doubt top-up; a
// later tap of the card whose authenticated log proves otherwise records
// a conflict on the top-up (and counts it) without moving any money; one
// that agrees is recorded as checked.
func TestResolutionConflict(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name      string
		committed bool // the commit reached the card
		outcome   ledger.Status
		conflict  bool
	}{
		{"failed-but-on-card", true, ledger.StatusFailed, true},
		{"applied-and-on-card", true, ledger.StatusApplied, false},
		{"applied-but-absent", false, ledger.StatusApplied, true},
		{"failed-and-absent", false, ledger.StatusFailed, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			e, m := metricsEnv(t)
			svc := e.svc
			uid := fmt.Sprintf("%X", testUID)
			tu, tk, _, _ := svc.CreateTopUp(ctx, "resolve", ledger.Request{Amount: 450, Currency: "EUR"})
			var tr desfire.Transport = &tagLostAfterCommit{t: e.card}
			if !c.committed {
				tr = &forger{t: e.card, ins: desfire.CmdCommitTransaction, sw: nil}
			}
			svc.Run(ctx, e.open(t, tk), uid, bridge{t: tr})
			if got, _ := svc.GetTopUp(ctx, tu.ID); got.Status != ledger.StatusInDoubt {
				t.Fatalf("setup: %s", got.Status)
			}
			if _, err := svc.Resolve(ctx, tu.ID, c.outcome, "key:test", "passenger called"); err != nil {
				t.Fatal(err)
			}
			if _, err := svc.TopUpTicket(ctx, tu.ID); !errors.Is(err, transaction.ErrNotPayable) {
				t.Fatalf("ticket for a resolved top-up: %v", err)
			}
			e.card.Tap()
			before, _ := e.cardState(t)
			bt, _ := svc.BalanceTicket(ctx)
			if res := e.run(t, e.open(t, bt), true); !res.OK {
				t.Fatalf("balance tap: %+v", res)
			}
			got, _ := svc.GetTopUp(ctx, tu.ID)
			if got.Status != c.outcome || !got.ResolutionChecked || (got.Conflict != "") != c.conflict {
				t.Fatalf("after the tap: %s checked=%v conflict=%q", got.Status, got.ResolutionChecked, got.Conflict)
			}
			if want := map[bool]int{true: 1, false: 0}[c.conflict]; m.integrity["resolution_conflict"] != want {
				t.Fatalf("conflict metric %v", m.integrity)
			}
			if after, _ := e.cardState(t); after != before {
				t.Fatalf("the check moved money: %d → %d", before, after)
			}
		})
	}
}
