package lock

import (
	"context"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BenchmarkRedisTopUpLock is what the card lock costs one top-up session:
// Acquire (fence drawn in the same script), Check right before the
// commit, Release — three Redis round trips. Besides wall time per
// session it reports the client's CPU and, when Redis runs on this
// machine, the Redis server's CPU per session (from /proc), the figures
// docs/ARCHITECTURE.md weighs against what each round trip buys.
func BenchmarkRedisTopUpLock(b *testing.B) {
	admin := newTestClient(b)
	lk := NewRedis(newTestClient(b), RedisConfig{Prefix: testPrefix(b, admin)})
	ctx := context.Background()
	pid := redisPID(ctx, b)
	cpu0, srv0 := selfCPU(), procCPU(pid)
	n := 0
	for b.Loop() {
		l, err := lk.Acquire(ctx, "card", Options{})
		if err != nil {
			b.Fatal(err)
		}
		if err := l.Check(ctx); err != nil {
			b.Fatal(err)
		}
		if err := l.Release(ctx); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64((selfCPU()-cpu0).Microseconds())/float64(n), "client-cpu-µs/op")
	if pid > 0 {
		b.ReportMetric(float64((procCPU(pid)-srv0).Microseconds())/float64(n), "redis-cpu-µs/op")
	}
}

// redisPID is the Redis server's process id when it runs here, else 0.
func redisPID(ctx context.Context, b *testing.B) int {
	info, err := newTestClient(b).Info(ctx, "server").Result()
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			pid, _ := strconv.Atoi(v)
			if _, err := os.Stat("/proc/" + v + "/stat"); err == nil {
				return pid
			}
		}
	}
	return 0
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU is a process's user+system CPU time from /proc/<pid>/stat.
func procCPU(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}
