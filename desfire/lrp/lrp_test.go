package lrp

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"testing"
)

type vectors struct {
	Plaintexts []struct {
		Source, Key, P string
		Index          int
	}
	UpdatedKeys []struct {
		Source, Key, UK string
		Index           int
	} `json:"updated_keys"`
	Eval []struct {
		Source, Key, X, Y string
		UK                int
		Final             bool
	}
	LRICB []struct {
		Source, Key, Counter, Plain, Cipher string
		UK                                  int
		Padded                              bool
	}
	CMAC []struct {
		Source, Key, KX, Msg, MAC string
	}
}

func load(t *testing.T) vectors {
	t.Helper()
	raw, err := os.ReadFile("testdata/lrp.json")
	if err != nil {
		t.Fatal(err)
	}
	var v vectors
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Plaintexts) == 0 || len(v.UpdatedKeys) == 0 || len(v.Eval) == 0 || len(v.LRICB) == 0 || len(v.CMAC) == 0 {
		t.Fatal("vector file incomplete")
	}
	return v
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("hex %q: %v", s, err)
	}
	return b
}

func TestTables(t *testing.T) {
	v := load(t)
	for _, c := range v.Plaintexts {
		ps, err := Plaintexts(mustHex(t, c.Key))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(ps[c.Index], mustHex(t, c.P)) {
			t.Errorf("P%d of %s = %X (%s)", c.Index, c.Key, ps[c.Index], c.Source)
		}
	}
	for _, c := range v.UpdatedKeys {
		uks, err := UpdatedKeys(mustHex(t, c.Key))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(uks[c.Index], mustHex(t, c.UK)) {
			t.Errorf("UK%d of %s = %X (%s)", c.Index, c.Key, uks[c.Index], c.Source)
		}
	}
}

func TestEval(t *testing.T) {
	for _, c := range load(t).Eval {
		t.Run(c.X, func(t *testing.T) {
			l, err := New(mustHex(t, c.Key), c.UK)
			if err != nil {
				t.Fatal(err)
			}
			y, err := l.Eval(mustHex(t, c.X), c.Final)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(y, mustHex(t, c.Y)) {
				t.Errorf("EvalLRP = %X, want %s (%s)", y, c.Y, c.Source)
			}
		})
	}
}

func TestLRICB(t *testing.T) {
	for _, c := range load(t).LRICB {
		l, err := New(mustHex(t, c.Key), c.UK)
		if err != nil {
			t.Fatal(err)
		}
		ct, err := l.Encrypt(mustHex(t, c.Counter), mustHex(t, c.Plain))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(ct, mustHex(t, c.Cipher)) {
			t.Errorf("LRICBEnc = %X, want %s (%s)", ct, c.Cipher, c.Source)
		}
		pt, err := l.Decrypt(mustHex(t, c.Counter), mustHex(t, c.Cipher))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(pt, mustHex(t, c.Plain)) {
			t.Errorf("LRICBDec = %X, want %s (%s)", pt, c.Plain, c.Source)
		}
	}
}

func TestCMAC(t *testing.T) {
	for _, c := range load(t).CMAC {
		t.Run(c.Key, func(t *testing.T) {
			l, err := New(mustHex(t, c.Key), 0)
			if err != nil {
				t.Fatal(err)
			}
			k1, k2, err := l.Subkeys()
			if err != nil {
				t.Fatal(err)
			}
			// Kx is the subkey the last block uses: K1 for a complete
			// block, K2 for a padded one.
			kx, msg := k2, mustHex(t, c.Msg)
			if len(msg) > 0 && len(msg)%BlockSize == 0 {
				kx = k1
			}
			if !bytes.Equal(kx, mustHex(t, c.KX)) {
				t.Errorf("Kx = %X, want %s (%s)", kx, c.KX, c.Source)
			}
			mac, err := l.CMAC(mustHex(t, c.Msg))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(mac, mustHex(t, c.MAC)) {
				t.Errorf("CMAC_LRP = %X, want %s (%s)", mac, c.MAC, c.Source)
			}
		})
	}
}

func TestInputErrors(t *testing.T) {
	if _, err := New(make([]byte, 15), 0); !errors.Is(err, ErrInput) {
		t.Errorf("short key: %v", err)
	}
	if _, err := New(make([]byte, 16), 4); !errors.Is(err, ErrInput) {
		t.Errorf("updated key 4: %v", err)
	}
	l, err := New(make([]byte, 16), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.DecryptNoPad([]byte{0}, make([]byte, 15)); !errors.Is(err, ErrInput) {
		t.Errorf("15-byte data: %v", err)
	}
	if _, err := l.DecryptNoPad(nil, make([]byte, 16)); !errors.Is(err, ErrInput) {
		t.Errorf("empty counter: %v", err)
	}
	if _, err := l.Decrypt([]byte{0}, make([]byte, 16)); !errors.Is(err, ErrPadding) {
		t.Errorf("bad padding: %v", err)
	}
}

func TestCounterWraps(t *testing.T) {
	r := []byte{0x00, 0xFF, 0xFF}
	incr(r)
	if !bytes.Equal(r, []byte{0x01, 0x00, 0x00}) {
		t.Errorf("incr = %X", r)
	}
	r = []byte{0xFF, 0xFF}
	incr(r)
	if !bytes.Equal(r, []byte{0, 0}) {
		t.Errorf("wrap = %X", r)
	}
}
