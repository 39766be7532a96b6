package personalize

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/desfire-relay/relay/desfire"
)

// TestIssueSimulatedBuiltins issues a simulated card for each built-in
// layout from a written and re-read development key file, then proves the
// card holds the diversified read key and the initial value.
func TestIssueSimulatedBuiltins(t *testing.T) {
	f, err := DevKeyFile(nil, AN12113().AID)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "keys.json")
	if err := WriteKeyFile(path, f); err != nil {
		t.Fatal(err)
	}
	ks, err := LoadKeySet(path)
	if err != nil {
		t.Fatal(err)
	}
	uid := []byte{0x04, 1, 2, 3, 4, 5, 6}
	for _, name := range []string{"an12113-ev2", "an12113-ev1"} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			l, err := Builtin(name)
			if err != nil {
				t.Fatal(err)
			}
			sim, err := IssueSimulated(ctx, l, CardKeys(l, uid, ks.Source()), uid, 42)
			if err != nil {
				t.Fatal(err)
			}
			if v, err := sim.Value(l.AIDBytes(), l.ValueFile); err != nil || v != 42 {
				t.Fatalf("value %d, %v; want 42", v, err)
			}
			rk, err := CardKeys(l, uid, ks.Source())(ctx, l.ReadKeyNo, false)
			if err != nil {
				t.Fatal(err)
			}
			card := desfire.NewCard(sim)
			if err := card.SelectApplication(ctx, l.AIDBytes()); err != nil {
				t.Fatal(err)
			}
			var a desfire.Authenticator = desfire.NewAuthEV2First(l.ReadKeyNo, rk, nil)
			if l.EV1 {
				if a, err = desfire.NewAuthAES(l.ReadKeyNo, rk, nil); err != nil {
					t.Fatal(err)
				}
			}
			if err := card.Authenticate(ctx, a); err != nil {
				t.Fatalf("authenticate with the diversified read key: %v", err)
			}
		})
	}
	if _, err := Builtin("nope"); err == nil {
		t.Error("unknown layout accepted")
	}
}

// TestReadKeyFileRefusesOpenModes checks that a key file others can read
// is refused.
func TestReadKeyFileRefusesOpenModes(t *testing.T) {
	f, err := DevKeyFile(nil)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "keys.json")
	if err := WriteKeyFile(path, f); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadKeyFile(path); !errors.Is(err, ErrPermissions) {
		t.Fatalf("mode 0644: %v, want ErrPermissions", err)
	}
}
