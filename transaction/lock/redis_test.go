package lock

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/desfire-relay/relay/internal/testenv"
)

// redisTestTTL is short so expiry and renewal show within a test, and
// long enough for renewal at TTL/3 on a loaded 2-core machine under -race.
const redisTestTTL = 600 * time.Millisecond

// newTestClient opens a client on $REDIS_URL (skipping locally, failing
// under CI=true when it is unset) and closes it after the test.
func newTestClient(t testing.TB) *redis.Client {
	t.Helper()
	c, err := NewRedisClient(testenv.RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if err := c.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("Redis at REDIS_URL does not answer: %v", err)
	}
	return c
}

// testPrefix returns a key prefix of its own for one test, and deletes its
// keys afterwards (the test may run against a shared Redis).
func testPrefix(t testing.TB, admin *redis.Client) string {
	p := "relaytest:" + crand.Text()[:10] + ":"
	t.Cleanup(func() {
		ctx := context.Background()
		keys, err := admin.Keys(ctx, p+"*").Result()
		if err == nil && len(keys) > 0 {
			admin.Del(ctx, keys...)
		}
	})
	return p
}

func TestRedis(t *testing.T) {
	admin := newTestClient(t)
	prefix := testPrefix(t, admin)
	runSuite(t, harness{
		newLocker: func(t *testing.T) Locker {
			return NewRedis(newTestClient(t), RedisConfig{Prefix: prefix})
		},
		expire: func(t *testing.T, key string) {
			lockKey, _ := NewRedis(admin, RedisConfig{Prefix: prefix}).keys(key)
			if n, err := admin.Del(context.Background(), lockKey).Result(); err != nil || n != 1 {
				t.Fatalf("DEL %s = %d, %v", lockKey, n, err)
			}
		},
		ttl:     redisTestTTL,
		lingers: true,
	})
}

func TestRedisRenewalOutlivesTTL(t *testing.T) {
	admin := newTestClient(t)
	lk := NewRedis(newTestClient(t), RedisConfig{Prefix: testPrefix(t, admin)})
	ctx := context.Background()
	a := mustAcquire(t, lk, "card", Options{TTL: redisTestTTL})
	lockKey, _ := lk.keys("card")
	// Hold for several TTLs; without renewal the key would be gone.
	for i := range 4 {
		time.Sleep(redisTestTTL / 2)
		if err := a.Check(ctx); err != nil {
			t.Fatalf("Check after %d half-TTLs: %v", i+1, err)
		}
	}
	if isClosed(a.Lost()) {
		t.Fatal("Lost closed while renewal should keep the lock")
	}
	if _, err := NewRedis(newTestClient(t), RedisConfig{Prefix: lk.prefix}).Acquire(ctx, "card", Options{TTL: redisTestTTL}); !errors.Is(err, ErrLocked) {
		t.Fatalf("other client's Acquire: %v, want ErrLocked", err)
	}
	if pttl := admin.PTTL(ctx, lockKey).Val(); pttl <= 0 || pttl > redisTestTTL {
		t.Errorf("PTTL = %v, want within (0, %v]", pttl, redisTestTTL)
	}
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if n := admin.Exists(ctx, lockKey).Val(); n != 0 {
		t.Errorf("lock key still exists after Release")
	}
}

func TestRedisPExpireFromOtherClient(t *testing.T) {
	admin := newTestClient(t)
	lk := NewRedis(newTestClient(t), RedisConfig{Prefix: testPrefix(t, admin)})
	ctx := context.Background()
	a := mustAcquire(t, lk, "card", Options{TTL: redisTestTTL})
	lockKey, _ := lk.keys("card")
	if err := admin.PExpire(ctx, lockKey, time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, a.Lost(), "Lost after PEXPIRE 1")
	if err := a.Check(ctx); !errors.Is(err, ErrLockLost) {
		t.Fatalf("Check: %v, want ErrLockLost", err)
	}
	// The key is free for a new holder, with a greater fence.
	b := mustAcquire(t, lk, "card", Options{TTL: redisTestTTL})
	if b.Fence() <= a.Fence() {
		t.Errorf("fence %d after %d", b.Fence(), a.Fence())
	}
}

func TestRedisLockKeyHoldsToken(t *testing.T) {
	admin := newTestClient(t)
	lk := NewRedis(newTestClient(t), RedisConfig{Prefix: testPrefix(t, admin)})
	ctx := context.Background()
	a := mustAcquire(t, lk, "card", Options{TTL: redisTestTTL})
	b := mustAcquire(t, lk, "card2", Options{TTL: redisTestTTL})
	ka, fa := lk.keys("card")
	kb, _ := lk.keys("card2")
	ta, tb := admin.Get(ctx, ka).Val(), admin.Get(ctx, kb).Val()
	if ta == "" || ta == tb || ta != a.(*redisLock).token || tb != b.(*redisLock).token {
		t.Errorf("tokens %q and %q: want distinct random tokens stored in the lock keys", ta, tb)
	}
	if f, _ := admin.Get(ctx, fa).Int64(); f != a.Fence() {
		t.Errorf("fence key = %d, lock fence = %d", f, a.Fence())
	}
}

func TestRedisOptions(t *testing.T) {
	tests := []struct {
		name string
		ttl  time.Duration
	}{
		{"below minimum", MinTTL - time.Millisecond},
		{"negative", -time.Second},
	}
	lk := NewRedis(redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}), RedisConfig{})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := lk.Acquire(context.Background(), "card", Options{TTL: tc.ttl}); err == nil {
				t.Fatalf("TTL %v accepted", tc.ttl)
			}
		})
	}
}

func TestRedisUnreachable(t *testing.T) {
	// Port 1 on loopback: nothing listens, the connection is refused.
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	defer c.Close()
	_, err := NewRedis(c, RedisConfig{}).Acquire(context.Background(), "card", Options{})
	if err == nil || errors.Is(err, ErrLocked) {
		t.Fatalf("Acquire with Redis down: %v, want a connection error (not ErrLocked)", err)
	}
}

func TestNewRedisClient(t *testing.T) {
	c, err := NewRedisClient("redis://127.0.0.1:6390/3")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if o := c.Options(); !o.ContextTimeoutEnabled || o.DB != 3 || o.Addr != "127.0.0.1:6390" {
		t.Errorf("options: ContextTimeoutEnabled=%v DB=%d Addr=%s", o.ContextTimeoutEnabled, o.DB, o.Addr)
	}
	if _, err := NewRedisClient("http://nope"); err == nil {
		t.Error("non-Redis URL accepted")
	}
}

func BenchmarkRedisAcquireRelease(b *testing.B) {
	admin := newTestClient(b)
	lk := NewRedis(newTestClient(b), RedisConfig{Prefix: testPrefix(b, admin)})
	ctx := context.Background()
	for b.Loop() {
		l, err := lk.Acquire(ctx, "card", Options{})
		if err != nil {
			b.Fatal(err)
		}
		if err := l.Release(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMemoryAcquireRelease(b *testing.B) {
	lk := NewMemory()
	ctx := context.Background()
	for b.Loop() {
		l, err := lk.Acquire(ctx, "card", Options{})
		if err != nil {
			b.Fatal(err)
		}
		_ = l.Release(ctx)
	}
}

// A Redis that lost its data (restart without persistence) must not hand
// out fences below those it handed out before.
func TestRedisFenceSurvivesDataLoss(t *testing.T) {
	url := testenv.RedisURL(t)
	ctx := context.Background()
	client, err := NewRedisClient(url)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	prefix := fmt.Sprintf("test:%d:", time.Now().UnixNano())
	lk := NewRedis(client, RedisConfig{Prefix: prefix})
	l, err := lk.Acquire(ctx, "card", Options{TTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	before := l.Fence()
	l.Release(ctx)
	keys, _ := client.Keys(ctx, prefix+"*").Result()
	if len(keys) > 0 {
		client.Del(ctx, keys...)
	}
	l, err = lk.Acquire(ctx, "card", Options{TTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release(ctx)
	if l.Fence() <= before {
		t.Fatalf("fence after data loss %d, not above %d", l.Fence(), before)
	}
}
