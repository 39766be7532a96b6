package server

import (
	"fmt"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// TestLimitersBounded: once maxKeys addresses are tracked, idle buckets
// are swept, and while none is idle new addresses are refused rather than
// tracked.
func TestLimitersBounded(t *testing.T) {
	ls := newLimiters(rate.Limit(1), 1)
	ls.maxKeys = 3
	for i := 0; i < 3; i++ {
		if !ls.allow(fmt.Sprint(i)) {
			t.Fatalf("address %d refused", i)
		}
	}
	if ls.allow("new") || len(ls.m) != 3 {
		t.Fatalf("fourth address with no idle bucket: %d tracked", len(ls.m))
	}
	ls.mu.Lock()
	for _, e := range ls.m {
		e.seen = e.seen.Add(-2 * time.Minute)
	}
	ls.swept = time.Time{}
	ls.mu.Unlock()
	if !ls.allow("new") || len(ls.m) != 1 {
		t.Fatalf("after the sweep: %d tracked", len(ls.m))
	}
}

// TestTagLimiterFreshReadings: a counter above every one seen passes
// without drawing; repeats draw from the bucket.
func TestTagLimiterFreshReadings(t *testing.T) {
	ls := newLimiters(rate.Limit(0.0001), 1)
	for ctr := uint32(1); ctr <= 5; ctr++ {
		if !ls.allowTag("04AA", ctr) {
			t.Fatalf("fresh counter %d refused", ctr)
		}
	}
	if !ls.allowTag("04AA", 5) || ls.allowTag("04AA", 5) || ls.allowTag("04AA", 3) {
		t.Fatal("repeats: want one from the burst, then refusals")
	}
	if !ls.allowTag("04AA", 6) {
		t.Fatal("fresh counter after the bucket emptied")
	}
}
