package faults

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/desfire-relay/relay/internal/testbackend"
	"github.com/desfire-relay/relay/internal/testserver"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/ledger/postgres"
	"github.com/desfire-relay/relay/transaction/lock"
	"github.com/desfire-relay/relay/transaction/profile"
)

// crashAfterApplied is a PostgreSQL ledger that, when armed, crashes the
// database ("pg_ctl restart -m immediate": shared memory and unwritten
// WAL buffers are gone, recovery replays what reached the WAL) right
// after an applied transition returns. applied commits asynchronously
// (synchronous_commit off for that transaction), so the crash may take
// it back: the top-up is then in_doubt again, and the card's next tap
// must settle it from its log, exactly once.
type crashAfterApplied struct {
	ledger.Ledger
	pg    *privatePostgres
	armed atomic.Bool

	mu    sync.Mutex
	fired bool
	err   error
}

func (c *crashAfterApplied) Transition(ctx context.Context, t ledger.Transition) (ledger.TopUp, error) {
	out, err := c.Ledger.Transition(ctx, t)
	if err == nil && t.To == ledger.StatusApplied && c.armed.CompareAndSwap(true, false) {
		rerr := c.pg.restart("immediate")
		c.mu.Lock()
		c.fired, c.err = true, rerr
		c.mu.Unlock()
	}
	return out, err
}

func (c *crashAfterApplied) result() (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fired, c.err
}

// asyncAppliedFamily: PostgreSQL crashes right after each session's
// asynchronous applied commit; the next tap (a top-up session or a
// balance lookup) settles the top-up exactly once.
func (m *matrix) asyncAppliedFamily(t *testing.T, full bool) {
	rs := startPrivateRedis(t)
	pg := startPrivatePostgres(t)
	var crash *crashAfterApplied
	backend := testbackend.Backend{Name: "private redis+postgres, crash after applied", Shared: true, Open: func(tb testing.TB) (ledger.Ledger, lock.Locker) {
		l, err := postgres.Open(context.Background(), pg.URL(), ledger.Config{})
		if err != nil {
			tb.Fatalf("private PostgreSQL ledger: %v", err)
		}
		tb.Cleanup(func() { l.Close() })
		c, err := lock.NewRedisClient(rs.URL())
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { c.Close() })
		crash = &crashAfterApplied{Ledger: l, pg: pg}
		return crash, lock.NewRedis(c, lock.RedisConfig{})
	}}
	opts := testserver.Options{ExchangeTimeout: 10 * time.Second, SessionTimeout: 40 * time.Second}
	cfgs := []setup{{profile.AN12113(), true}}
	if full {
		cfgs = allConfigs()
	}
	rounds := 2
	if full {
		rounds = 6
	}
	for _, c := range cfgs {
		ep := inProcess(t, backend, c.p, opts)
		for i := range rounds {
			m.scenario(t, fmt.Sprintf("%s/crash-after-applied-%d", c, i), ep, c.batch, i%2 == 1, func(s *scene) {
				crash.armed.Store(true)
				s.firstSession(s.card)
				crash.armed.Store(false)
				fired, err := crash.result()
				if err != nil {
					s.t.Fatal(err)
				}
				if !fired {
					s.t.Fatal("the session never recorded applied: no crash happened")
				}
				st, _, err := s.status()
				s.logf("PostgreSQL crashed (-m immediate) right after the asynchronous applied commit; the top-up reads %s after recovery (err %v)", st, err)
				crash.mu.Lock()
				crash.fired = false
				crash.mu.Unlock()
			})
		}
	}
}
