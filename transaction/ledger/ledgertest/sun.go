package ledgertest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/desfire-relay/relay/transaction/ledger"
)

// RunSUN runs the SUN replay-state suite against the ledgers open
// returns; they must implement ledger.SUNStore.
func RunSUN(t *testing.T, open Opener) {
	tests := []struct {
		name string
		fn   func(*testing.T, ledger.SUNStore)
	}{
		{"AcceptAndReplay", testSUNAcceptReplay},
		{"ConcurrentOneURL", testSUNConcurrent},
		{"RequireKnown", testSUNRequireKnown},
		{"Signals", testSUNSignals},
		{"InvalidInput", testSUNInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, ok := open(t).(ledger.SUNStore)
			if !ok {
				t.Fatal("ledger does not implement ledger.SUNStore")
			}
			tc.fn(t, s)
		})
	}
}

func sunCheck(uid string, ctr uint32, mac string, at time.Time) ledger.SUNCheck {
	return ledger.SUNCheck{UID: uid, Template: "t1", Counter: ctr, MAC: mac, Region: "DE", At: at}
}

func testSUNAcceptReplay(t *testing.T, s ledger.SUNStore) {
	ctx := context.Background()
	uid := "04DE5F1EACC040"
	rec, err := s.RecordSUN(ctx, sunCheck(uid, 61, "94EED9EE65337086", base))
	if err != nil {
		t.Fatal(err)
	}
	if !rec.Accepted || rec.Known || rec.HasPrev {
		t.Fatalf("first message: %+v", rec)
	}
	for _, ctr := range []uint32{61, 60, 0} {
		rec, err = s.RecordSUN(ctx, sunCheck(uid, ctr, "AAAAAAAAAAAAAAAA", base.Add(time.Second)))
		if err != nil {
			t.Fatal(err)
		}
		if rec.Accepted || !rec.Known || rec.LastCounter != 61 || rec.LastMAC != "94EED9EE65337086" {
			t.Fatalf("counter %d after 61: %+v", ctr, rec)
		}
	}
	next := sunCheck(uid, 62, "0102030405060708", base.Add(time.Minute))
	next.Region = "FR"
	rec, err = s.RecordSUN(ctx, next)
	if err != nil {
		t.Fatal(err)
	}
	if !rec.Accepted || !rec.Known || !rec.HasPrev || rec.PrevCounter != 61 || !rec.PrevAt.Equal(base) || rec.PrevRegion != "DE" {
		t.Fatalf("counter 62 after 61: %+v", rec)
	}
	tag, err := s.SUNTag(ctx, uid)
	if err != nil {
		t.Fatal(err)
	}
	if tag.LastCounter != 62 || tag.Verified != 2 || tag.Replays != 3 || tag.CloneFlag || tag.Template != "t1" ||
		tag.LastAt == nil || !tag.LastAt.Equal(base.Add(time.Minute)) || !tag.FirstAt.Equal(base) || tag.Tenant != ledger.DefaultTenant {
		t.Fatalf("tag: %+v", tag)
	}
	// A tag first seen through a tenant's template is that tenant's; a
	// later message (another template's tenant) does not move it.
	c := sunCheck("04DE5F1EACC041", 5, "AA", base)
	c.Tenant = "acme"
	if _, err := s.RecordSUN(ctx, c); err != nil {
		t.Fatal(err)
	}
	c.Tenant, c.Counter = "globex", 6
	if _, err := s.RecordSUN(ctx, c); err != nil {
		t.Fatal(err)
	}
	if tag, err := s.SUNTag(ctx, c.UID); err != nil || tag.Tenant != "acme" || tag.LastCounter != 6 {
		t.Fatalf("tenant of a tag: %+v %v", tag, err)
	}
}

func testSUNConcurrent(t *testing.T, s ledger.SUNStore) {
	ctx := context.Background()
	for round, ctr := range []uint32{5, 6} { // a new tag, then a known one
		const n = 100
		var (
			wg       sync.WaitGroup
			mu       sync.Mutex
			accepted int
			errs     []error
		)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rec, err := s.RecordSUN(ctx, sunCheck("04AABBCCDDEE01", ctr, "1122334455667788", base))
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
				} else if rec.Accepted {
					accepted++
				}
			}()
		}
		wg.Wait()
		if len(errs) > 0 || accepted != 1 {
			t.Fatalf("round %d: %d of %d accepted, errors %v", round, accepted, n, errs)
		}
	}
	tag, err := s.SUNTag(ctx, "04AABBCCDDEE01")
	if err != nil {
		t.Fatal(err)
	}
	if tag.Verified != 2 || tag.Replays != 198 {
		t.Fatalf("tag after two rounds: %+v", tag)
	}
}

func testSUNRequireKnown(t *testing.T, s ledger.SUNStore) {
	ctx := context.Background()
	c := sunCheck("04000000000001", 1, "1122334455667788", base)
	c.RequireKnown = true
	rec, err := s.RecordSUN(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Accepted || rec.Known {
		t.Fatalf("unregistered tag: %+v", rec)
	}
	if _, err := s.SUNTag(ctx, c.UID); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("unregistered tag stored: %v", err)
	}
	for i, tenant := range []string{"acme", "globex"} {
		// The second registration (another tenant) changes nothing.
		if err := s.RegisterSUNTag(ctx, c.UID, "t1", tenant, base); err != nil {
			t.Fatalf("registration %d: %v", i, err)
		}
	}
	if tag, err := s.SUNTag(ctx, c.UID); err != nil || tag.Tenant != "acme" {
		t.Fatalf("registered tag's tenant: %+v %v", tag, err)
	}
	c.Counter = 0
	if rec, err = s.RecordSUN(ctx, c); err != nil {
		t.Fatal(err)
	}
	if !rec.Accepted || !rec.Known || rec.HasPrev {
		t.Fatalf("registered tag, counter 0: %+v", rec)
	}
}

func testSUNSignals(t *testing.T, s ledger.SUNStore) {
	ctx := context.Background()
	uid := "04000000000002"
	if err := s.AddSUNSignals(ctx, uid, []ledger.SUNSignal{{Kind: "x", At: base}}); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("signal for an unknown tag: %v", err)
	}
	if _, err := s.RecordSUN(ctx, sunCheck(uid, 1, "1122334455667788", base)); err != nil {
		t.Fatal(err)
	}
	if err := s.AddSUNSignals(ctx, uid, nil); err != nil {
		t.Fatal(err)
	}
	tag, err := s.SUNTag(ctx, uid)
	if err != nil {
		t.Fatal(err)
	}
	if tag.CloneFlag || len(tag.Signals) != 0 {
		t.Fatalf("no signals yet: %+v", tag)
	}
	var sigs []ledger.SUNSignal
	for i := 0; i < 60; i++ {
		sigs = append(sigs, ledger.SUNSignal{Kind: "counter_jump", Counter: uint32(i), Detail: fmt.Sprintf("d%d", i), At: base.Add(time.Duration(i) * time.Second)})
	}
	if err := s.AddSUNSignals(ctx, uid, sigs); err != nil {
		t.Fatal(err)
	}
	if tag, err = s.SUNTag(ctx, uid); err != nil {
		t.Fatal(err)
	}
	if !tag.CloneFlag || len(tag.Signals) != 50 || tag.Signals[0].Counter != 59 || tag.Signals[0].Detail != "d59" ||
		!tag.Signals[0].At.Equal(base.Add(59*time.Second)) {
		t.Fatalf("signals: flag %v, %d, first %+v", tag.CloneFlag, len(tag.Signals), tag.Signals[0])
	}
}

func testSUNInvalid(t *testing.T, s ledger.SUNStore) {
	ctx := context.Background()
	if _, err := s.RecordSUN(ctx, sunCheck("", 1, "", base)); !errors.Is(err, ledger.ErrInvalid) {
		t.Errorf("empty UID: %v", err)
	}
	if _, err := s.RecordSUN(ctx, sunCheck("04000000000003", 1<<24, "", base)); !errors.Is(err, ledger.ErrInvalid) {
		t.Errorf("counter above 24 bits: %v", err)
	}
	if err := s.RegisterSUNTag(ctx, "", "t1", "acme", base); !errors.Is(err, ledger.ErrInvalid) {
		t.Errorf("register without UID: %v", err)
	}
	if err := s.RegisterSUNTag(ctx, "04000000000009", "t1", "", base); !errors.Is(err, ledger.ErrInvalid) {
		t.Errorf("register without tenant: %v", err)
	}
	if _, err := s.SUNTag(ctx, "04000000000003"); !errors.Is(err, ledger.ErrNotFound) {
		t.Errorf("invalid input stored something: %v", err)
	}
}
