package lock

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// harness runs the behavioural suite against one implementation.
type harness struct {
	// newLocker returns a locker with its own connection to the shared
	// store (for Redis a separate client, as another process would have).
	newLocker func(t *testing.T) Locker
	// expire removes key's lock behind its holder's back, as an expired
	// lease or an operator would.
	expire func(t *testing.T, key string)
	// ttl is the lease the suite asks for.
	ttl time.Duration
	// lingers is true when an abandoned lock stays held until its TTL
	// (Redis) rather than being freed at once (in-process).
	lingers bool
}

// hang bounds waits for events that must happen, so a broken lock fails
// the test instead of hanging it. It is a guard, not a timing assertion.
const hang = 20 * time.Second

func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(hang):
		t.Fatalf("%s: not closed after %v", what, hang)
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func mustAcquire(t *testing.T, lk Locker, key string, opts Options) Lock {
	t.Helper()
	l, err := lk.Acquire(context.Background(), key, opts)
	if err != nil {
		t.Fatalf("Acquire(%q): %v", key, err)
	}
	t.Cleanup(func() { _ = l.Release(context.Background()) })
	return l
}

func runSuite(t *testing.T, h harness) {
	ctx := context.Background()
	opts := Options{TTL: h.ttl}
	wait := Options{TTL: h.ttl, Wait: hang}

	t.Run("fail fast when held", func(t *testing.T) {
		a := mustAcquire(t, h.newLocker(t), "card-ff", opts)
		if a.Key() != "card-ff" || a.Fence() <= 0 {
			t.Fatalf("Key=%q Fence=%d", a.Key(), a.Fence())
		}
		_, err := h.newLocker(t).Acquire(ctx, "card-ff", opts)
		if !errors.Is(err, ErrLocked) {
			t.Fatalf("second Acquire: %v, want ErrLocked", err)
		}
		// Other keys are independent.
		mustAcquire(t, h.newLocker(t), "card-ff-other", opts)
	})

	t.Run("waits until released", func(t *testing.T) {
		a := mustAcquire(t, h.newLocker(t), "card-wait", opts)
		got := make(chan Lock, 1)
		errc := make(chan error, 1)
		lk := h.newLocker(t)
		go func() {
			l, err := lk.Acquire(ctx, "card-wait", wait)
			if err != nil {
				errc <- err
				return
			}
			got <- l
		}()
		time.Sleep(20 * time.Millisecond) // let it start waiting (not needed for correctness)
		if err := a.Release(ctx); err != nil {
			t.Fatalf("Release: %v", err)
		}
		select {
		case b := <-got:
			defer b.Release(ctx)
			if b.Fence() <= a.Fence() {
				t.Errorf("fence after wait %d, want > %d", b.Fence(), a.Fence())
			}
			if b.Waited() < 0 {
				t.Errorf("Waited = %v", b.Waited())
			}
		case err := <-errc:
			t.Fatalf("waiting Acquire: %v", err)
		case <-time.After(hang):
			t.Fatal("waiting Acquire did not return")
		}
	})

	t.Run("wait times out", func(t *testing.T) {
		mustAcquire(t, h.newLocker(t), "card-timeout", opts)
		_, err := h.newLocker(t).Acquire(ctx, "card-timeout", Options{TTL: h.ttl, Wait: 50 * time.Millisecond})
		if !errors.Is(err, ErrLocked) {
			t.Fatalf("Acquire: %v, want ErrLocked", err)
		}
	})

	t.Run("context ends while waiting", func(t *testing.T) {
		mustAcquire(t, h.newLocker(t), "card-ctx", opts)
		cctx, cancel := context.WithCancel(ctx)
		errc := make(chan error, 1)
		lk := h.newLocker(t)
		go func() {
			_, err := lk.Acquire(cctx, "card-ctx", wait)
			errc <- err
		}()
		time.Sleep(20 * time.Millisecond) // let it start waiting (not needed for correctness)
		cancel()
		select {
		case err := <-errc:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("Acquire: %v, want context.Canceled", err)
			}
		case <-time.After(hang):
			t.Fatal("Acquire ignored its context")
		}
	})

	t.Run("empty key", func(t *testing.T) {
		if _, err := h.newLocker(t).Acquire(ctx, "", opts); err == nil {
			t.Fatal("Acquire(\"\") succeeded")
		}
	})

	t.Run("fence strictly increasing", func(t *testing.T) {
		var last int64
		for i := range 6 {
			l, err := h.newLocker(t).Acquire(ctx, "card-fence", opts)
			if err != nil {
				t.Fatalf("round %d: %v", i, err)
			}
			if l.Fence() <= last {
				t.Errorf("round %d: fence %d after %d", i, l.Fence(), last)
			}
			last = l.Fence()
			if i%2 == 1 {
				// Lost locks count too: the next holder still gets a
				// greater fence.
				h.expire(t, "card-fence")
				waitClosed(t, l.Lost(), "Lost after expiry")
			}
			_ = l.Release(ctx)
		}
	})

	t.Run("mutual exclusion", func(t *testing.T) {
		const workers, rounds = 6, 8
		var (
			inside    atomic.Int32
			lastFence int64 // only touched while holding the lock
			wg        sync.WaitGroup
		)
		for w := range workers {
			lk := h.newLocker(t)
			wg.Go(func() {
				for r := range rounds {
					l, err := lk.Acquire(ctx, "card-mutex", wait)
					if err != nil {
						t.Errorf("worker %d round %d: %v", w, r, err)
						return
					}
					if n := inside.Add(1); n != 1 {
						t.Errorf("worker %d: %d holders at once", w, n)
					}
					if l.Fence() <= lastFence {
						t.Errorf("worker %d: fence %d after %d", w, l.Fence(), lastFence)
					}
					lastFence = l.Fence()
					if err := l.Check(ctx); err != nil {
						t.Errorf("worker %d: Check while held: %v", w, err)
					}
					time.Sleep(time.Millisecond)
					inside.Add(-1)
					if err := l.Release(ctx); err != nil {
						t.Errorf("worker %d: Release: %v", w, err)
					}
				}
			})
		}
		wg.Wait()
	})

	t.Run("forced expiry is reported", func(t *testing.T) {
		a := mustAcquire(t, h.newLocker(t), "card-expire", opts)
		if err := a.Check(ctx); err != nil {
			t.Fatalf("Check while held: %v", err)
		}
		if isClosed(a.Lost()) {
			t.Fatal("Lost closed while held")
		}
		h.expire(t, "card-expire")
		if err := a.Check(ctx); !errors.Is(err, ErrLockLost) {
			t.Fatalf("Check after expiry: %v, want ErrLockLost", err)
		}
		waitClosed(t, a.Lost(), "Lost after expiry")
	})

	t.Run("stale holder cannot release a newer lock", func(t *testing.T) {
		a := mustAcquire(t, h.newLocker(t), "card-stale", opts)
		h.expire(t, "card-stale")
		b := mustAcquire(t, h.newLocker(t), "card-stale", opts)
		if b.Fence() <= a.Fence() {
			t.Errorf("new holder's fence %d, want > %d", b.Fence(), a.Fence())
		}
		if err := a.Release(ctx); !errors.Is(err, ErrLockLost) {
			t.Errorf("stale Release: %v, want ErrLockLost", err)
		}
		if err := b.Check(ctx); err != nil {
			t.Errorf("new holder's Check after stale Release: %v", err)
		}
		if _, err := h.newLocker(t).Acquire(ctx, "card-stale", opts); !errors.Is(err, ErrLocked) {
			t.Errorf("Acquire after stale Release: %v, want ErrLocked", err)
		}
	})

	t.Run("release is idempotent", func(t *testing.T) {
		a := mustAcquire(t, h.newLocker(t), "card-rel", opts)
		for i := range 3 {
			if err := a.Release(ctx); err != nil {
				t.Fatalf("Release #%d: %v", i+1, err)
			}
		}
		waitClosed(t, a.Lost(), "Lost after Release")
		if err := a.Check(ctx); !errors.Is(err, ErrLockLost) {
			t.Errorf("Check after Release: %v, want ErrLockLost", err)
		}
		b := mustAcquire(t, h.newLocker(t), "card-rel", opts)
		if err := a.Release(ctx); err != nil {
			t.Errorf("Release again after another took it: %v", err)
		}
		if err := b.Check(ctx); err != nil {
			t.Errorf("new holder's Check: %v", err)
		}
	})

	t.Run("concurrent releases", func(t *testing.T) {
		a := mustAcquire(t, h.newLocker(t), "card-crel", opts)
		var wg sync.WaitGroup
		var nils atomic.Int32
		for range 4 {
			wg.Go(func() {
				if err := a.Release(ctx); err == nil {
					nils.Add(1)
				} else {
					t.Errorf("Release: %v", err)
				}
			})
		}
		wg.Wait()
		if nils.Load() != 4 {
			t.Errorf("%d of 4 Releases returned nil", nils.Load())
		}
	})

	t.Run("release with a cancelled context", func(t *testing.T) {
		a := mustAcquire(t, h.newLocker(t), "card-cancelled", opts)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := a.Release(cctx); err != nil {
			t.Fatalf("Release(cancelled ctx): %v", err)
		}
		mustAcquire(t, h.newLocker(t), "card-cancelled", opts)
	})

	t.Run("abandoned with its context", func(t *testing.T) {
		actx, cancel := context.WithCancel(ctx)
		a, err := h.newLocker(t).Acquire(actx, "card-abandon", opts)
		if err != nil {
			t.Fatal(err)
		}
		cancel()
		waitClosed(t, a.Lost(), "Lost after the context ended")
		if err := a.Check(ctx); !errors.Is(err, ErrLockLost) {
			t.Errorf("Check after the context ended: %v, want ErrLockLost", err)
		}
		_, err = h.newLocker(t).Acquire(ctx, "card-abandon", opts)
		if h.lingers {
			// Still held in the store until its TTL (or Release).
			if !errors.Is(err, ErrLocked) {
				t.Errorf("Acquire after abandon: %v, want ErrLocked until the TTL", err)
			}
			if err := a.Release(ctx); err != nil {
				t.Errorf("Release after abandon: %v", err)
			}
		} else if err != nil {
			t.Errorf("Acquire after abandon: %v, want the freed lock", err)
		}
	})
}
