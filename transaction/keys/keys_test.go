package keys

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/desfire-relay/relay/desfire/dfcrypto"
)

func TestSecretRedacted(t *testing.T) {
	s := Secret{0xAB, 0xCD}
	for _, verb := range []string{"%v", "%s", "%x", "%X", "%#v", "%+v", "%q"} {
		if got := fmt.Sprintf(verb, s); got != "[REDACTED]" {
			t.Errorf("%s printed %q", verb, got)
		}
	}
	if got := fmt.Sprintf("%v", struct{ K Secret }{s}); got != "{[REDACTED]}" {
		t.Errorf("in struct: %q", got)
	}
}

func writeKeys(t *testing.T, f File, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "keys.json")
	if err := WriteFile(p, f); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadAndDiversify(t *testing.T) {
	// The AN10922 section 2.2.1 example through the provider: master key,
	// UID, AID 3042F5 (sent F5 42 30) and system identifier "NXP Abu".
	f := File{SystemID: "NXP Abu", Keys: []Entry{
		{AID: "F54230", KeyNo: 1, Version: 0, Key: "00112233445566778899AABBCCDDEEFF", Diversify: true},
		{AID: "F54230", KeyNo: 0, Version: 0, Key: "000102030405060708090A0B0C0D0E0F"},
	}}
	p, err := LoadFile(writeKeys(t, f, 0o600))
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := hex.DecodeString("04782E21801D80")
	k, err := p.CardKey(context.Background(), Ref{AID: 0xF54230, KeyNo: 1}, uid)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := hex.DecodeString("A8DD63A3B89D54B37CA802473FDA9175")
	if !bytes.Equal(k, want) {
		t.Fatalf("diversified key mismatch")
	}
	m, _ := p.CardKey(context.Background(), Ref{AID: 0xF54230, KeyNo: 0}, uid)
	if m[0] != 0 || m[15] != 0x0F {
		t.Fatal("undiversified key changed")
	}
	if _, err := p.CardKey(context.Background(), Ref{AID: 0xF54230, KeyNo: 1, Version: 2}, uid); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing version: %v", err)
	}
}

func TestLoadRefuses(t *testing.T) {
	good := Entry{AID: "014499", KeyNo: 3, Version: 1, Key: "00112233445566778899AABBCCDDEEFF"}
	cases := []struct {
		name string
		f    File
		mode os.FileMode
		want error
	}{
		{"world readable", File{Keys: []Entry{good}}, 0o644, ErrPermissions},
		{"group readable", File{Keys: []Entry{good}}, 0o640, ErrPermissions},
		{"short key", File{Keys: []Entry{{AID: "014499", KeyNo: 3, Key: "0011"}}}, 0o600, ErrMalformed},
		{"bad hex", File{Keys: []Entry{{AID: "014499", KeyNo: 3, Key: "zz112233445566778899AABBCCDDEEFF"}}}, 0o600, ErrMalformed},
		{"bad aid", File{Keys: []Entry{{AID: "0144", KeyNo: 3, Key: good.Key}}}, 0o600, ErrMalformed},
		{"key no", File{Keys: []Entry{{AID: "014499", KeyNo: 14, Key: good.Key}}}, 0o600, ErrMalformed},
		{"duplicate", File{Keys: []Entry{good, good}}, 0o600, ErrMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := LoadFile(writeKeys(t, c.f, c.mode))
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
	t.Run("unknown field", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "k.json")
		os.WriteFile(p, []byte(`{"keys":[],"extra":1}`), 0o600)
		if _, err := LoadFile(p); !errors.Is(err, ErrMalformed) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("missing", func(t *testing.T) {
		if _, err := LoadFile(filepath.Join(t.TempDir(), "none")); err == nil {
			t.Fatal("no error for a missing file")
		}
	})
}

func TestDevFile(t *testing.T) {
	f, err := DevFile(nil, 0x014499, 0x014499)
	if err != nil {
		t.Fatal(err)
	}
	if !f.Dev || len(f.Keys) != 1+5+NTAG424Keys {
		t.Fatalf("dev file: dev=%v keys=%d", f.Dev, len(f.Keys))
	}
	path := filepath.Join(t.TempDir(), "dev.json")
	if err := WriteFile(path, f); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode().Perm())
	}
	p, err := LoadFile(path)
	if err != nil || !p.Dev() {
		t.Fatalf("load dev: %v", err)
	}
	uid := []byte{4, 1, 2, 3, 4, 5, 6}
	k3, err := p.CardKey(context.Background(), Ref{AID: 0x014499, KeyNo: 3, Version: 1}, uid)
	if err != nil || len(k3) != dfcrypto.KeySize {
		t.Fatalf("key 3: %v", err)
	}
	tm, err := p.CardKey(context.Background(), Ref{AID: 0x014499, Name: TMACName, Version: 1}, uid)
	if err != nil || bytes.Equal(tm, k3) {
		t.Fatalf("tmac key: %v", err)
	}
	other, _ := p.CardKey(context.Background(), Ref{AID: 0x014499, KeyNo: 3, Version: 1}, []byte{4, 1, 2, 3, 4, 5, 7})
	if bytes.Equal(other, k3) {
		t.Fatal("two UIDs share a diversified key")
	}
}
