package transaction_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/internal/testbackend"
	"github.com/desfire-relay/relay/transaction"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/lock"
	"github.com/desfire-relay/relay/transaction/profile"
)

// hostile alters the n-th response the card gives (flip, truncate,
// extend, replay the previous one, or drop it as a lost tag).
type hostile struct {
	t    desfire.Transport
	n    int
	kind string
	seen int
	prev []byte
}

func (h *hostile) Transmit(ctx context.Context, a []byte) ([]byte, error) {
	r, err := h.t.Transmit(ctx, a)
	if err != nil {
		return r, err
	}
	h.seen++
	prev := h.prev
	h.prev = r
	if h.seen != h.n {
		return r, nil
	}
	r = append([]byte(nil), r...)
	switch h.kind {
	case "flip-first":
		r[0] ^= 0x01
	case "flip-last-data":
		if len(r) > 2 {
			r[len(r)-3] ^= 0x80
		} else {
			r[1] ^= 0x01
		}
	case "truncate":
		if len(r) > 2 {
			r = append(r[:len(r)-3], r[len(r)-2:]...)
		}
	case "extend":
		r = append(append(r[:len(r)-2:len(r)-2], 0x00), r[len(r)-2:]...)
	case "replay":
		if prev != nil {
			r = prev
		}
	case "status":
		r[len(r)-1] = 0x00
		r[len(r)-2] = 0x90
	}
	return r, nil
}

// TestHostileTransport: whatever one response is altered into, the
// top-up is applied only when the card really holds it, and a retry always
// ends with exactly one credit.
func TestHostileTransport(t *testing.T) {
	kinds := []string{"flip-first", "flip-last-data", "truncate", "extend", "replay", "status"}
	for _, p := range []profile.Profile{profile.AN12113(), profile.AN12113EV1()} {
		probe := newEnv(t, p, sqliteLedger(t), lock.NewMemory())
		_, tk, _, _ := probe.svc.CreateTopUp(context.Background(), "probe", ledger.Request{Amount: 10, Currency: "EUR"})
		before := probe.card.APDUs()
		probe.run(t, probe.open(t, tk), false)
		n := probe.card.APDUs() - before
		for i := 1; i <= n; i++ {
			for _, kind := range kinds {
				t.Run(fmt.Sprintf("%s/response-%d/%s", p.Name, i, kind), func(t *testing.T) {
					e := newEnv(t, p, sqliteLedger(t), lock.NewMemory())
					ctx := context.Background()
					tu, tk, _, _ := e.svc.CreateTopUp(ctx, "k", ledger.Request{Amount: 300, Currency: "EUR"})
					h := &hostile{t: e.card, n: i, kind: kind}
					res := e.svc.Run(ctx, e.open(t, tk), fmt.Sprintf("%X", testUID), bridge{t: h, batch: false})
					got, _ := e.svc.GetTopUp(ctx, tu.ID)
					v, records := e.cardState(t)
					if got.Status == ledger.StatusApplied && (v != 300 || records != 1) {
						t.Fatalf("applied but card holds %d with %d records (result %+v)", v, records, res)
					}
					if got.Status == ledger.StatusFailed && (v != 0 || records != 0) {
						t.Fatalf("failed but the card was credited")
					}
					for k := 0; k < 2 && got.Status != ledger.StatusApplied; k++ {
						tk2, err := e.svc.TopUpTicket(ctx, tu.ID)
						if err != nil {
							t.Fatalf("retry from %s: %v", got.Status, err)
						}
						e.run(t, e.open(t, tk2), true)
						e.card.Tap()
						got, _ = e.svc.GetTopUp(ctx, tu.ID)
					}
					v, records = e.cardState(t)
					if got.Status != ledger.StatusApplied || v != 300 || records != 1 {
						t.Fatalf("after retry: %s, card %d with %d records", got.Status, v, records)
					}
				})
			}
		}
	}
}

// TestRaceForOneCardAndOneTopUp runs many sessions at once, each with its
// own service (separate database and Redis connections), for one top-up
// and for other top-ups of the same card, on both backends: exactly one
// credit per top-up, every loser gets a clear error.
func TestRaceForOneCardAndOneTopUp(t *testing.T) {
	for _, b := range testbackend.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			l, lk := b.Open(t)
			e := newEnv(t, profile.AN12113(), l, lk)
			ctx := context.Background()
			tu, _, _, err := e.svc.CreateTopUp(ctx, "race", ledger.Request{Amount: 100, Currency: "EUR"})
			if err != nil {
				t.Fatal(err)
			}
			const n = 8
			// A new ticket revokes the top-up's unused ones, so each bridge
			// opens its session before the next ticket is issued; the runs
			// below still race.
			var sessions []ledger.Session
			for i := 0; i < n; i++ {
				tk, err := e.svc.TopUpTicket(ctx, tu.ID)
				if err != nil {
					t.Fatal(err)
				}
				s, err := e.svc.OpenSession(ctx, tk.Token)
				if err != nil {
					t.Fatal(err)
				}
				sessions = append(sessions, s)
			}
			// One card, many bridges: the card answers one APDU at a time.
			var cardMu sync.Mutex
			shared := serial{t: e.card, mu: &cardMu}
			var wg sync.WaitGroup
			results := make([]transaction.Result, n)
			for i := range sessions {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					results[i] = e.svc.Run(ctx, sessions[i], fmt.Sprintf("%X", testUID), bridge{t: shared, batch: true})
				}(i)
			}
			wg.Wait()
			applied := 0
			for _, r := range results {
				switch {
				case r.OK && r.Status == "applied":
					applied++
				case r.Reason == "":
					t.Fatalf("loser without an error code: %+v", r)
				}
			}
			got, _ := e.svc.GetTopUp(ctx, tu.ID)
			v, records := e.cardState(t)
			if got.Status != ledger.StatusApplied || v != 100 || records != 1 {
				t.Fatalf("%d sessions reported applied; ledger %s, card %d with %d records", applied, got.Status, v, records)
			}
			t.Logf("%d sessions, %d reported applied (one credit); losers: %v", n, applied, codes(results))
		})
	}
}

func codes(rs []transaction.Result) map[string]int {
	m := map[string]int{}
	for _, r := range rs {
		m[string(r.Reason)]++
	}
	return m
}

// serial lets several sessions share one card, one APDU at a time, as a
// card relayed by several bridges would behave.
type serial struct {
	t  desfire.Transport
	mu *sync.Mutex
}

func (s serial) Transmit(ctx context.Context, a []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.t.Transmit(ctx, a)
}

// TestLockLostStopsBeforeCommit: a session whose card lock is lost before
// the commit never sends it, and the top-up is provably not applied.
func TestLockLostStopsBeforeCommit(t *testing.T) {
	lk := &losingLocker{Locker: lock.NewMemory()}
	e := newEnv(t, profile.AN12113(), sqliteLedger(t), lk)
	ctx := context.Background()
	tu, tk, _, _ := e.svc.CreateTopUp(ctx, "lost", ledger.Request{Amount: 100, Currency: "EUR"})
	res := e.run(t, e.open(t, tk), true)
	got, _ := e.svc.GetTopUp(ctx, tu.ID)
	v, records := e.cardState(t)
	if res.OK || got.Status != ledger.StatusFailed || v != 0 || records != 0 {
		t.Fatalf("lost lock: result %+v, ledger %s, card %d/%d", res, got.Status, v, records)
	}
}

// losingLocker hands out locks that report themselves lost on Check.
type losingLocker struct{ lock.Locker }

func (l *losingLocker) Acquire(ctx context.Context, key string, o lock.Options) (lock.Lock, error) {
	k, err := l.Locker.Acquire(ctx, key, o)
	if err != nil {
		return nil, err
	}
	return lostLock{k}, nil
}

type lostLock struct{ lock.Lock }

func (lostLock) Check(context.Context) error { return lock.ErrLockLost }
