package lock

import (
	"context"
	"errors"
	"time"
)

// Errors a caller tells apart with errors.Is.
var (
	// ErrLocked means another session holds the key (after waiting up to
	// Options.Wait, when asked to wait): the card is busy.
	ErrLocked = errors.New("lock: held by another session")
	// ErrLockLost means a Lock is no longer held: it expired, was removed,
	// or passed to another holder. A session that sees it must not send
	// anything more that changes the card.
	ErrLockLost = errors.New("lock: lost")
)

// DefaultTTL is the lease of a Redis lock when Options.TTL is zero: long
// enough to ride out a slow renewal round trip, short enough that a card
// held by a crashed process is free again within seconds.
const DefaultTTL = 15 * time.Second

// Options tune one Acquire call. The zero value fails fast with the
// default TTL.
type Options struct {
	// TTL is how long a Redis lock lives without renewal (DefaultTTL when
	// zero; at least MinTTL). Renewal every TTL/3 keeps it while the lock
	// is held. In-process locks ignore it.
	TTL time.Duration
	// Wait bounds how long Acquire waits for a held key to be released.
	// Zero or negative fails at once with ErrLocked.
	Wait time.Duration
}

// MinTTL is the shortest lease accepted: renewal every TTL/3 must fit
// several Redis round trips.
const MinTTL = 30 * time.Millisecond

// Locker hands out per-key locks. Implementations are safe for concurrent
// use.
type Locker interface {
	// Acquire takes the lock on key. When the key is held it fails with
	// ErrLocked at once, or after waiting up to opts.Wait; a context that
	// ends while waiting fails with the context's error. The returned Lock
	// stays held until Release, until it is lost, or until ctx ends (the
	// lock's renewal is tied to ctx).
	Acquire(ctx context.Context, key string, opts Options) (Lock, error)
}

// Lock is one held lock.
type Lock interface {
	// Key is the key this lock holds.
	Key() string
	// Fence is the fencing token: strictly greater than that of every
	// earlier lock on the same key, across all processes sharing the
	// store. Pass it to every ledger write made under this lock.
	Fence() int64
	// Waited is how long Acquire waited for the key, for metrics.
	Waited() time.Duration
	// Lost is closed once the lock is no longer held: renewal failed, the
	// lock expired or was removed, Acquire's context ended, or Release was
	// called.
	Lost() <-chan struct{}
	// Check verifies with the store that the lock is still held, returning
	// ErrLockLost when it is not. A session calls it right before sending
	// a commit to the card.
	Check(ctx context.Context) error
	// Release gives the lock up: it stops renewal (waiting for it) and
	// removes the lock only if it is still this holder's. It returns
	// ErrLockLost when the lock was no longer ours, and nil on later calls.
	// Release works even when ctx is already cancelled (it detaches from
	// cancellation and bounds its own time), so a session can release in
	// a deferred call after its context ended.
	Release(ctx context.Context) error
}
