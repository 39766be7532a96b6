package lock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// MemoryLocker is the Locker for a single relay process (the embedded
// default): locks and fence counters live in memory. A fence never falls
// below the clock in microseconds, so fences keep increasing across
// process restarts and the ledger's fence check keeps accepting them. It has no TTL: a lock is held until Release, or until
// its Acquire context ends, which frees it at once (a Redis lock would
// linger until its TTL ran out).
type MemoryLocker struct {
	mu     sync.Mutex          // guards held and fences
	held   map[string]*memLock // key -> current holder
	fences map[string]int64    // key -> last fence handed out
}

// NewMemory returns an empty in-process locker.
func NewMemory() *MemoryLocker {
	return &MemoryLocker{held: map[string]*memLock{}, fences: map[string]int64{}}
}

// Acquire implements Locker.
func (m *MemoryLocker) Acquire(ctx context.Context, key string, opts Options) (Lock, error) {
	if key == "" {
		return nil, errors.New("lock: empty key")
	}
	start := time.Now()
	var timeout <-chan time.Time
	if opts.Wait > 0 {
		t := time.NewTimer(opts.Wait)
		defer t.Stop()
		timeout = t.C
	}
	for {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("lock %q: %w", key, err)
		}
		m.mu.Lock()
		cur := m.held[key]
		if cur == nil {
			m.fences[key] = max(m.fences[key]+1, time.Now().UnixMicro())
			l := &memLock{
				locker: m,
				key:    key,
				fence:  m.fences[key],
				waited: time.Since(start),
				lost:   make(chan struct{}),
				freed:  make(chan struct{}),
			}
			m.held[key] = l
			m.mu.Unlock()
			// Abandoned with its context: free it, as a Redis lock whose
			// renewal stopped would expire.
			l.stop = context.AfterFunc(ctx, func() { m.free(l) })
			return l, nil
		}
		freed := cur.freed
		m.mu.Unlock()
		if opts.Wait <= 0 {
			return nil, fmt.Errorf("lock %q: %w", key, ErrLocked)
		}
		select {
		case <-freed:
		case <-timeout:
			return nil, fmt.Errorf("lock %q: still held after waiting %v: %w", key, time.Since(start).Round(time.Millisecond), ErrLocked)
		case <-ctx.Done():
			return nil, fmt.Errorf("lock %q: waiting: %w", key, ctx.Err())
		}
	}
}

// free removes l if it still holds its key (waking waiters) and marks it
// lost; it reports whether l was the holder.
func (m *MemoryLocker) free(l *memLock) bool {
	m.mu.Lock()
	holder := m.held[l.key] == l
	if holder {
		delete(m.held, l.key)
		close(l.freed)
	}
	m.mu.Unlock()
	l.lostOnce.Do(func() { close(l.lost) })
	return holder
}

// expire takes key from its holder as a lost lease would (tests use it to
// stand in for a TTL running out).
func (m *MemoryLocker) expire(key string) {
	m.mu.Lock()
	l := m.held[key]
	m.mu.Unlock()
	if l != nil {
		m.free(l)
	}
}

// memLock is one lock held in a MemoryLocker.
type memLock struct {
	locker *MemoryLocker
	key    string
	fence  int64
	waited time.Duration
	stop   func() bool   // stops the context.AfterFunc
	lost   chan struct{} // closed once no longer held
	freed  chan struct{} // closed when the key is freed; guarded by locker.mu

	lostOnce sync.Once

	releaseMu sync.Mutex // serializes Release; guards released
	released  bool
}

func (l *memLock) Key() string           { return l.key }
func (l *memLock) Fence() int64          { return l.fence }
func (l *memLock) Waited() time.Duration { return l.waited }
func (l *memLock) Lost() <-chan struct{} { return l.lost }

// Check implements Lock.
func (l *memLock) Check(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("lock %q: check: %w", l.key, err)
	}
	l.locker.mu.Lock()
	ok := l.locker.held[l.key] == l
	l.locker.mu.Unlock()
	if !ok {
		return fmt.Errorf("lock %q: %w", l.key, ErrLockLost)
	}
	return nil
}

// Release implements Lock.
func (l *memLock) Release(context.Context) error {
	l.releaseMu.Lock()
	defer l.releaseMu.Unlock()
	if l.released {
		return nil
	}
	l.released = true
	l.stop()
	if !l.locker.free(l) {
		return fmt.Errorf("lock %q: release: %w", l.key, ErrLockLost)
	}
	return nil
}
