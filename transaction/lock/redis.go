package lock

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisConfig configures a Redis locker. The zero value is usable.
type RedisConfig struct {
	// Prefix starts every key this locker writes; default "relay:lock:".
	// Several deployments sharing one Redis must use distinct prefixes.
	Prefix string
	// ReleaseTimeout bounds Release, which ignores its context's
	// cancellation; default 5s.
	ReleaseTimeout time.Duration
}

// RedisLocker is the Locker for several relay processes sharing one Redis.
type RedisLocker struct {
	client         redis.Scripter
	prefix         string
	releaseTimeout time.Duration
}

// NewRedisClient opens a go-redis client for url ("redis://host:port/db")
// with ContextTimeoutEnabled, so every command obeys its context's
// deadline: a stalled Redis cannot hold a session past its own deadline.
func NewRedisClient(url string) (*redis.Client, error) {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("lock: parse Redis URL: %w", err)
	}
	opt.ContextTimeoutEnabled = true
	return redis.NewClient(opt), nil
}

// NewRedis returns a locker that keeps its locks in Redis through client
// (a *redis.Client from NewRedisClient, or a cluster client).
func NewRedis(client redis.Scripter, cfg RedisConfig) *RedisLocker {
	if cfg.Prefix == "" {
		cfg.Prefix = "relay:lock:"
	}
	if cfg.ReleaseTimeout <= 0 {
		cfg.ReleaseTimeout = 5 * time.Second
	}
	return &RedisLocker{client: client, prefix: cfg.Prefix, releaseTimeout: cfg.ReleaseTimeout}
}

// Lua scripts. KEYS[1] is the lock key, KEYS[2] the fence counter,
// ARGV[1] the holder's token, ARGV[2] a TTL in milliseconds, ARGV[3] (on
// acquire) the current time in microseconds.
var (
	// Take the lock if free and draw the next fence in the same step, so
	// fences follow the order of acquisitions. 0 means held. The fence
	// never falls below the clock in microseconds, so a Redis that lost
	// its data (restart without persistence) cannot hand out fences the
	// ledger has already seen.
	acquireScript = redis.NewScript(`
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local f = redis.call('INCR', KEYS[2])
  local now = tonumber(ARGV[3])
  if f < now then
    redis.call('SET', KEYS[2], ARGV[3])
    f = now
  end
  return f
end
return 0`)
	// Extend the lease only if the lock is still ours. 1 ok, 0 lost.
	renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0`)
	// Is the lock still ours? 1 yes, 0 no.
	checkScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return 1
end
return 0`)
	// Delete the lock only if it is still ours. 1 deleted, 0 not ours.
	releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`)
)

// keys returns the lock key and the fence key for key; the shared hash tag
// puts both in one Redis Cluster slot, as a script touching both needs.
func (r *RedisLocker) keys(key string) (lockKey, fenceKey string) {
	base := r.prefix + "{" + key + "}"
	return base, base + ":fence"
}

// Acquire implements Locker.
func (r *RedisLocker) Acquire(ctx context.Context, key string, opts Options) (Lock, error) {
	if key == "" {
		return nil, errors.New("lock: empty key")
	}
	ttl := opts.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	if ttl < MinTTL {
		return nil, fmt.Errorf("lock %q: TTL %v below %v", key, ttl, MinTTL)
	}
	lockKey, fenceKey := r.keys(key)
	token := crand.Text() // 128 random bits
	start := time.Now()
	deadline := start.Add(opts.Wait)
	backoff := 5 * time.Millisecond
	for {
		sent := time.Now()
		fence, err := acquireScript.Run(ctx, r.client, []string{lockKey, fenceKey}, token, ttl.Milliseconds(), time.Now().UnixMicro()).Int64()
		if err != nil {
			return nil, fmt.Errorf("lock %q: acquire: %w", key, err)
		}
		if fence > 0 {
			return r.start(ctx, key, token, fence, ttl, time.Since(start), sent), nil
		}
		now := time.Now()
		if !now.Before(deadline) {
			if opts.Wait > 0 {
				return nil, fmt.Errorf("lock %q: still held after waiting %v: %w", key, now.Sub(start).Round(time.Millisecond), ErrLocked)
			}
			return nil, fmt.Errorf("lock %q: %w", key, ErrLocked)
		}
		// Poll with jittered exponential backoff, capped so a released
		// lock is noticed quickly.
		sleep := min(backoff/2+rand.N(backoff/2+1), deadline.Sub(now))
		backoff = min(backoff*2, 100*time.Millisecond)
		t := time.NewTimer(sleep)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("lock %q: waiting: %w", key, ctx.Err())
		case <-t.C:
		}
	}
}

// start builds the Lock and starts its renewal goroutine; sent is when the
// acquiring request was sent, from which the lease is counted.
func (r *RedisLocker) start(ctx context.Context, key, token string, fence int64, ttl, waited time.Duration, sent time.Time) *redisLock {
	rctx, cancel := context.WithCancel(ctx)
	l := &redisLock{
		locker: r,
		key:    key,
		token:  token,
		fence:  fence,
		ttl:    ttl,
		waited: waited,
		lost:   make(chan struct{}),
		cancel: cancel,
		done:   make(chan struct{}),
	}
	l.lockKey, l.fenceKey = r.keys(key)
	go l.renew(rctx, sent.Add(ttl))
	return l
}

// redisLock is one lock held in Redis.
type redisLock struct {
	locker            *RedisLocker
	key               string
	lockKey, fenceKey string
	token             string
	fence             int64
	ttl               time.Duration
	waited            time.Duration

	lost     chan struct{} // closed by markLost
	lostOnce sync.Once

	cancel context.CancelFunc // stops renew
	done   chan struct{}      // closed when renew returns

	releaseMu sync.Mutex // serializes Release; guards released
	released  bool
}

func (l *redisLock) Key() string           { return l.key }
func (l *redisLock) Fence() int64          { return l.fence }
func (l *redisLock) Waited() time.Duration { return l.waited }
func (l *redisLock) Lost() <-chan struct{} { return l.lost }
func (l *redisLock) markLost()             { l.lostOnce.Do(func() { close(l.lost) }) }
func (l *redisLock) isLost() bool {
	select {
	case <-l.lost:
		return true
	default:
		return false
	}
}

// renew extends the lease every TTL/3 until ctx ends or the lock is found
// lost. validUntil is when the lease runs out as far as we can know: the
// lease is counted from the moment a request was sent, never from its
// answer. Transient errors are retried until validUntil passes.
func (l *redisLock) renew(ctx context.Context, validUntil time.Time) {
	defer close(l.done)
	defer l.markLost()
	interval := l.ttl / 3
	t := time.NewTimer(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !time.Now().Before(validUntil) {
			return // expired before we could renew (paused, or Redis unreachable)
		}
		sent := time.Now()
		rctx, cancel := context.WithDeadline(ctx, validUntil)
		ok, err := renewScript.Run(rctx, l.locker.client, []string{l.lockKey}, l.token, l.ttl.Milliseconds()).Int64()
		cancel()
		switch {
		case err == nil && ok == 1:
			validUntil = sent.Add(l.ttl)
			t.Reset(interval)
		case err == nil:
			return // no longer ours
		default:
			// Transient failure: retry sooner while the lease may still hold.
			t.Reset(max(min(interval/4, time.Until(validUntil)), time.Millisecond))
		}
	}
}

// Check implements Lock.
func (l *redisLock) Check(ctx context.Context) error {
	if l.isLost() {
		return fmt.Errorf("lock %q: %w", l.key, ErrLockLost)
	}
	n, err := checkScript.Run(ctx, l.locker.client, []string{l.lockKey}, l.token).Int64()
	if err != nil {
		return fmt.Errorf("lock %q: check: %w", l.key, err)
	}
	if n != 1 {
		l.markLost()
		return fmt.Errorf("lock %q: %w", l.key, ErrLockLost)
	}
	return nil
}

// Release implements Lock.
func (l *redisLock) Release(ctx context.Context) error {
	l.releaseMu.Lock()
	defer l.releaseMu.Unlock()
	if l.released {
		return nil
	}
	l.cancel()
	<-l.done
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.locker.releaseTimeout)
	defer cancel()
	n, err := releaseScript.Run(ctx, l.locker.client, []string{l.lockKey}, l.token).Int64()
	if err != nil {
		// Not marked released: a later call may retry; the key expires
		// within its TTL in any case.
		return fmt.Errorf("lock %q: release: %w", l.key, err)
	}
	l.released = true
	if n != 1 {
		return fmt.Errorf("lock %q: release: %w", l.key, ErrLockLost)
	}
	return nil
}
