package lock

import (
	"context"
	"testing"
	"time"
)

func TestMemory(t *testing.T) {
	m := NewMemory()
	runSuite(t, harness{
		newLocker: func(*testing.T) Locker { return m },
		expire:    func(_ *testing.T, key string) { m.expire(key) },
		ttl:       time.Second,
	})
}

// A restarted process gets a new MemoryLocker; its fences must still be
// above every fence the old one handed out, or the ledger would refuse
// the new sessions' writes as stale.
func TestMemoryFencesSurviveRestart(t *testing.T) {
	ctx := context.Background()
	old := NewMemory()
	var last int64
	for i := 0; i < 3; i++ {
		l, err := old.Acquire(ctx, "card:1", Options{})
		if err != nil {
			t.Fatal(err)
		}
		last = l.Fence()
		l.Release(ctx)
	}
	// A restart takes far longer than the few microseconds by which a
	// burst of acquisitions can run the counter ahead of the clock.
	time.Sleep(5 * time.Millisecond)
	l, err := NewMemory().Acquire(ctx, "card:1", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release(ctx)
	if l.Fence() <= last {
		t.Fatalf("fence after restart %d, not above %d", l.Fence(), last)
	}
}
