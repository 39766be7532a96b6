package transaction_test

import (
	"context"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/desfire/simcard"
	"github.com/desfire-relay/relay/internal/testcard"
	"github.com/desfire-relay/relay/transaction"
	"github.com/desfire-relay/relay/transaction/cardscript"
	"github.com/desfire-relay/relay/transaction/keys"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/ledger/sqlite"
	"github.com/desfire-relay/relay/transaction/lock"
	"github.com/desfire-relay/relay/transaction/profile"
)

var testUID = []byte{0x04, 0xA1, 0xB2, 0xC3, 0xD4, 0xE5, 0xF6}

type bridge struct {
	t     desfire.Transport
	batch bool
}

type plain struct{ t desfire.Transport }

func (p plain) Transmit(ctx context.Context, a []byte) ([]byte, error) { return p.t.Transmit(ctx, a) }

type batched struct{ t desfire.Transport }

func (b batched) Transmit(ctx context.Context, a []byte) ([]byte, error) { return b.t.Transmit(ctx, a) }
func (b batched) TransmitBatch(ctx context.Context, cmds []desfire.BatchCommand) ([][]byte, error) {
	return desfire.SequentialBatch(ctx, b.t, cmds)
}

func (b bridge) Transport() desfire.Transport {
	if b.batch {
		return batched{b.t}
	}
	return plain{b.t}
}
func (bridge) Prompt(transaction.Prompt, float64) {}

type env struct {
	svc  *transaction.Service
	l    ledger.Ledger
	card *simcard.Card
	kp   keys.Provider
	p    profile.Profile
}

func newEnv(t *testing.T, p profile.Profile, l ledger.Ledger, lk lock.Locker) *env {
	t.Helper()
	kp, _ := testcard.Keys(t, p)
	card := testcard.Issue(t, p, kp, testUID, 0)
	set := profile.DefaultSet()
	svc, err := transaction.New(transaction.Config{Ledger: l, Locker: lk, Keys: kp, Profiles: set, Profile: p.Name, LockTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return &env{svc: svc, l: l, card: card, kp: kp, p: p}
}

// sqliteService is a service on a fresh SQLite ledger, an in-memory lock
// and a one-second lock TTL, serving the default profiles plus extra;
// cfg says the rest (keys, profile or fleet, options).
func sqliteService(t *testing.T, cfg transaction.Config, extra ...profile.Profile) (*transaction.Service, ledger.Ledger) {
	t.Helper()
	set := profile.DefaultSet()
	for _, p := range extra {
		set[p.Name] = p
	}
	cfg.Ledger, cfg.Locker, cfg.Profiles, cfg.LockTTL = sqliteLedger(t), lock.NewMemory(), set, time.Second
	svc, err := transaction.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return svc, cfg.Ledger
}

func sqliteLedger(t *testing.T) ledger.Ledger {
	t.Helper()
	l, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "l.db"), ledger.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// cardValue reads the card's value and top-up log out of band (a balance
// script on a fresh tap).
func (e *env) cardState(t *testing.T) (int64, int) {
	t.Helper()
	e.card.Tap()
	b, err := cardscript.Balance(context.Background(), e.card, cardscript.BalanceParams{Profile: e.p, UID: testUID,
		Key: testcard.KeyFunc(e.p, e.kp, testUID)})
	if err != nil {
		t.Fatalf("read card: %v", err)
	}
	e.card.Tap()
	return b.Value, len(b.TopUps)
}

func (e *env) run(t *testing.T, sess ledger.Session, batch bool) transaction.Result {
	t.Helper()
	return e.svc.Run(context.Background(), sess, hex.EncodeToString(testUID), bridge{t: e.card, batch: batch})
}

func (e *env) open(t *testing.T, tk *transaction.Ticket) ledger.Session {
	t.Helper()
	s, err := e.svc.OpenSession(context.Background(), tk.Token)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestTopUpHappyPath(t *testing.T) {
	for _, p := range []profile.Profile{profile.AN12113(), profile.AN12113EV1()} {
		for _, batch := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/batch=%v", p.Name, batch), func(t *testing.T) {
				e := newEnv(t, p, sqliteLedger(t), lock.NewMemory())
				tu, tk, created, err := e.svc.CreateTopUp(context.Background(), "k1", ledger.Request{Amount: 1234, Currency: "EUR"})
				if err != nil || !created || tk == nil {
					t.Fatalf("create: %v", err)
				}
				res := e.run(t, e.open(t, tk), batch)
				if !res.OK || res.Status != "applied" || *res.Balance != 1234 {
					t.Fatalf("result %+v", res)
				}
				got, _ := e.svc.GetTopUp(context.Background(), tu.ID)
				if got.Status != ledger.StatusApplied || *got.BalanceAfter != 1234 || *got.BalanceBefore != 0 {
					t.Fatalf("ledger %+v", got)
				}
				if p.HasTMAC && (got.TMC == nil || len(got.TMV) != 8) {
					t.Fatal("TMAC not recorded")
				}
				if v, n := e.cardState(t); v != 1234 || n != 1 {
					t.Fatalf("card value %d, %d records", v, n)
				}
				// The token is single-use and the top-up is not payable again.
				if _, err := e.svc.OpenSession(context.Background(), tk.Token); err == nil {
					t.Fatal("token reused")
				}
				if _, err := e.svc.TopUpTicket(context.Background(), tu.ID); err == nil {
					t.Fatal("ticket for an applied top-up")
				}
			})
		}
	}
}

// TestTearEveryAPDU tears the card after each APDU of a top-up, then taps
// it again (a retry with a new token) until the top-up is settled: the
// card's value and the ledger must agree and the credit must be there
// exactly once.
func TestTearEveryAPDU(t *testing.T) {
	const amount = 700
	for _, p := range []profile.Profile{profile.AN12113(), profile.AN12113EV1()} {
		for _, batch := range []bool{true, false} {
			for _, tearAfterCommit := range []bool{false, true} {
				// Count the APDUs of an undisturbed top-up.
				probe := newEnv(t, p, sqliteLedger(t), lock.NewMemory())
				_, tk, _, _ := probe.svc.CreateTopUp(context.Background(), "probe", ledger.Request{Amount: amount, Currency: "EUR"})
				before := probe.card.APDUs()
				if res := probe.run(t, probe.open(t, tk), batch); !res.OK {
					t.Fatalf("probe: %+v", res)
				}
				n := probe.card.APDUs() - before
				for cut := 0; cut <= n; cut++ {
					if tearAfterCommit && cut > 0 {
						break
					}
					name := fmt.Sprintf("%s/batch=%v/tear-after-%d", p.Name, batch, cut)
					if tearAfterCommit {
						name = fmt.Sprintf("%s/batch=%v/tear-after-commit", p.Name, batch)
					}
					t.Run(name, func(t *testing.T) {
						e := newEnv(t, p, sqliteLedger(t), lock.NewMemory())
						ctx := context.Background()
						tu, tk, _, err := e.svc.CreateTopUp(ctx, "k", ledger.Request{Amount: amount, Currency: "EUR"})
						if err != nil {
							t.Fatal(err)
						}
						if tearAfterCommit {
							e.card.SetTearAfterCommit(true)
						} else {
							e.card.RemoveAfter(cut)
						}
						first := e.run(t, e.open(t, tk), batch)
						e.card.Tap()
						// Retry until settled (bounded).
						for i := 0; i < 3; i++ {
							cur, _ := e.svc.GetTopUp(ctx, tu.ID)
							if cur.Status == ledger.StatusApplied {
								break
							}
							tk2, err := e.svc.TopUpTicket(ctx, tu.ID)
							if err != nil {
								t.Fatalf("retry ticket from %s: %v (first %+v)", cur.Status, err, first)
							}
							res := e.run(t, e.open(t, tk2), batch)
							e.card.Tap()
							if !res.OK && i == 2 {
								t.Fatalf("retry: %+v", res)
							}
						}
						got, _ := e.svc.GetTopUp(ctx, tu.ID)
						v, records := e.cardState(t)
						if got.Status != ledger.StatusApplied || v != amount || records != 1 {
							t.Fatalf("first %+v; ledger %s, card value %d with %d records", first, got.Status, v, records)
						}
					})
				}
			}
		}
	}
}
