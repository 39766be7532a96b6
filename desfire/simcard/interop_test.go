package simcard

import (
	"context"
	"testing"

	"github.com/desfire-relay/relay/desfire"
)

// TestHostInterop runs package desfire's host code (its own secure
// messaging, written independently) against the card: a top-up with the
// Transaction MAC verified by the host, over EV1 and EV2.
func TestHostInterop(t *testing.T) {
	gens(t, func(t *testing.T, ev2 bool) {
		ctx := context.Background()
		sc := newCard(t, Options{})
		personalise(t, sc, ev2)
		host := desfire.NewCard(sc)
		if err := host.SelectApplication(ctx, testAID); err != nil {
			t.Fatal(err)
		}
		var a desfire.Authenticator = desfire.NewAuthEV2First(2, testKey(2), nil)
		if !ev2 {
			var err error
			if a, err = desfire.NewAuthAES(2, testKey(2), nil); err != nil {
				t.Fatal(err)
			}
		}
		if err := host.Authenticate(ctx, a); err != nil {
			t.Fatalf("authenticate: %v", err)
		}
		steps := []struct {
			name string
			run  func() error
		}{
			{"get value", func() error {
				v, err := host.GetValue(ctx, fValue, desfire.CommFull)
				if err == nil && v != 100 {
					t.Errorf("value %d", v)
				}
				return err
			}},
			{"credit", func() error { return host.Credit(ctx, fValue, 25, desfire.CommFull) }},
			{"get card UID", func() error {
				uid, err := host.GetCardUID(ctx)
				if err == nil && string(uid) != string(sc.UID()) {
					t.Errorf("UID %X", uid)
				}
				return err
			}},
			{"write record", func() error {
				return host.WriteRecord(ctx, fCyclic, 0, []byte{1, 2, 3}, desfire.CommFull)
			}},
			{"get key version", func() error {
				v, err := host.GetKeyVersion(ctx, 3)
				if err == nil && v != 1 {
					t.Errorf("key version %d", v)
				}
				return err
			}},
			{"get version", func() error { _, err := host.GetVersion(ctx); return err }},
			{"get file settings", func() error { _, err := host.GetFileSettings(ctx, fValue); return err }},
			{"commit with TMAC", func() error {
				tmc, _, err := host.CommitTransaction(ctx, true)
				if err == nil && tmc != 1 {
					t.Errorf("TMC %d", tmc)
				}
				return err
			}},
			{"read records", func() error {
				r, err := host.ReadRecords(ctx, fCyclic, 0, 0, 16, desfire.CommFull)
				if err == nil && (len(r) != 1 || r[0][2] != 3) {
					t.Errorf("records %X", r)
				}
				return err
			}},
		}
		for _, s := range steps {
			if err := s.run(); err != nil {
				t.Fatalf("%s: %v", s.name, err)
			}
		}
		if v, _ := sc.Value(testAID, fValue); v != 125 {
			t.Fatalf("value on card %d", v)
		}
	})
}
