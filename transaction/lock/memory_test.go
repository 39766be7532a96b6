package lock

import (
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
