package cardsim

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/desfire/dfcrypto"
	"github.com/desfire-relay/relay/desfire/internal/vectors"
)

var ctx = context.Background()

func send(t *testing.T, c *Card, apdu []byte) (byte, []byte) {
	t.Helper()
	r, err := c.Transmit(ctx, apdu)
	if err != nil {
		t.Fatal(err)
	}
	st, data, err := desfire.SplitResponse(r)
	if err != nil {
		t.Fatal(err)
	}
	return st, data
}

func wrap(t *testing.T, code byte, data ...byte) []byte {
	a, err := desfire.WrapNative(code, data)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// withKey returns a card with an application selected whose key keyNo is
// key.
func withKey(keyNo byte, key []byte) *Card {
	c := New(Options{UID: []byte{4, 1, 2, 3, 4, 5, 6}})
	c.apps[0x010203] = newApp(0x010203, 0x0F, 0x8E)
	c.cur = c.apps[0x010203]
	copy(c.cur.keys[keyNo].value[:], key)
	return c
}

// The card side reproduces the published AuthenticateAES traces byte for
// byte when its RndB comes from the trace.
func TestReproducesEV1AuthTraces(t *testing.T) {
	type vec struct {
		ID, Source, Key string
		KeyNo           byte   `json:"key_no"`
		RndB            string `json:"rnd_b"`
		EncRndB         string `json:"enc_rnd_b"`
		PCDCryptogram   string `json:"pcd_cryptogram"`
		EncRndARot      string `json:"enc_rnd_a_rot"`
	}
	for _, v := range vectors.Load[vec](t, "ev1_aes_auth.json") {
		t.Run(v.ID, func(t *testing.T) {
			t.Logf("source: %s", v.Source)
			c := withKey(v.KeyNo, vectors.Hex(t, v.Key))
			c.SetRand(bytes.NewReader(vectors.Hex(t, v.RndB)))
			st, data := send(t, c, wrap(t, 0xAA, v.KeyNo))
			if st != desfire.StatusAdditionalFrame || !bytes.Equal(data, vectors.Hex(t, v.EncRndB)) {
				t.Fatalf("challenge %02X %X", st, data)
			}
			st, data = send(t, c, wrap(t, 0xAF, vectors.Hex(t, v.PCDCryptogram)...))
			if st != desfire.StatusOK || !bytes.Equal(data, vectors.Hex(t, v.EncRndARot)) {
				t.Fatalf("proof %02X %X", st, data)
			}
		})
	}
}

func TestReproducesEV2AuthTraces(t *testing.T) {
	type vec struct {
		ID, Source, Type, Key string
		KeyNo                 byte   `json:"key_no"`
		EncRndB               string `json:"enc_rnd_b"`
		PCDCryptogram         string `json:"pcd_cryptogram"`
		PICCCryptogram        string `json:"picc_cryptogram"`
		TI                    string `json:"ti"`
		APDUs                 map[string]string
	}
	n := 0
	for _, v := range vectors.Load[vec](t, "ev2_auth.json") {
		if v.Type != "ev2first" || v.PCDCryptogram == "" {
			continue
		}
		n++
		t.Run(v.ID, func(t *testing.T) {
			t.Logf("source: %s", v.Source)
			key := vectors.Hex(t, v.Key)
			rndB, _ := dfcrypto.DecryptCBC(key, make([]byte, 16), vectors.Hex(t, v.EncRndB))
			c := New(Options{UID: []byte{4, 1, 2, 3, 4, 5, 6}})
			c.apps[0x010203] = newApp(0x010203, 0x0F, 0x85)
			c.cur = c.apps[0x010203]
			copy(c.cur.keys[v.KeyNo].value[:], key)
			c.SetRand(bytes.NewReader(append(rndB, vectors.Hex(t, v.TI)...)))
			first := wrap(t, 0x71, v.KeyNo, 0x00)
			if a := v.APDUs["c1"]; a != "" && !bytes.Equal(first, vectors.Hex(t, a)) {
				t.Fatalf("vector c1 %s differs from %X", a, first)
			}
			st, data := send(t, c, first)
			if st != desfire.StatusAdditionalFrame || !bytes.Equal(data, vectors.Hex(t, v.EncRndB)) {
				t.Fatalf("challenge %02X %X", st, data)
			}
			st, data = send(t, c, wrap(t, 0xAF, vectors.Hex(t, v.PCDCryptogram)...))
			if st != desfire.StatusOK || !bytes.Equal(data, vectors.Hex(t, v.PICCCryptogram)) {
				t.Fatalf("proof %02X %X, want %s", st, data, v.PICCCryptogram)
			}
			if r := v.APDUs["r2"]; r != "" {
				if !bytes.Equal(desfire.NativeResponse(st, data)[:len(data)], vectors.Hex(t, r)[:len(data)]) {
					t.Fatal("r2 mismatch")
				}
			}
		})
	}
	if n == 0 {
		t.Fatal("no EV2First trace with a PCD cryptogram")
	}
}

func TestErrorsAndFaults(t *testing.T) {
	c := New(Options{})
	cases := []struct {
		name string
		apdu []byte
		want byte
	}{
		{"unknown app", wrap(t, desfire.CmdSelectApplication, 1, 2, 3), desfire.StatusApplicationNotFound},
		{"illegal command", wrap(t, 0x99), desfire.StatusIllegalCommand},
		{"short select", wrap(t, desfire.CmdSelectApplication, 1), desfire.StatusLengthError},
		{"no such key", wrap(t, 0xAA, 9), desfire.StatusNoSuchKey},
		{"create app unauthenticated, DES keys", wrap(t, desfire.CmdCreateApplication, 1, 2, 3, 0x0F, 0x02), desfire.StatusParameterError},
		{"bad CLA", []byte{0x00, 0xA4, 0x04, 0x00, 0x00}, desfire.StatusLengthError},
	}
	for _, cs := range cases {
		t.Run(cs.name, func(t *testing.T) {
			if st, _ := send(t, c, cs.apdu); st != cs.want {
				t.Fatalf("status %02X, want %02X", st, cs.want)
			}
		})
	}
	// Removal after N APDUs.
	c.RemoveAfter(1)
	send(t, c, wrap(t, desfire.CmdGetVersion))
	if _, err := c.Transmit(ctx, wrap(t, desfire.CmdGetVersion)); !errors.Is(err, ErrCardRemoved) {
		t.Fatalf("after removal: %v", err)
	}
	c.Tap()
	// Corrupting card.
	c.SetCorrupt(func(b []byte) []byte { b[0] ^= 0xFF; return b })
	r, _ := c.Transmit(ctx, wrap(t, desfire.CmdGetVersion))
	if r[0] == 0x04 {
		t.Fatal("corrupt hook not applied")
	}
}

func FuzzTransmit(f *testing.F) {
	f.Add([]byte{0x90, 0x60, 0, 0, 0}, []byte{0x90, 0xAF, 0, 0, 0})
	f.Add([]byte{0x90, 0xAA, 0, 0, 1, 0, 0}, []byte{0x90, 0xAF, 0, 0, 32, 1, 2, 3, 0})
	f.Add([]byte{0x90, 0xCA, 0, 0, 5, 1, 2, 3, 0x0F, 0x85, 0}, []byte{0x90, 0x5A, 0, 0, 3, 1, 2, 3, 0})
	f.Fuzz(func(t *testing.T, a, b []byte) {
		c := New(Options{UID: []byte{4, 1, 2, 3, 4, 5, 6}})
		for _, apdu := range [][]byte{a, b, a} {
			r, err := c.Transmit(ctx, apdu)
			if err != nil {
				t.Fatal(err)
			}
			if len(r) < 2 || len(r) > FrameSize+2+16 {
				t.Fatalf("response of %d bytes", len(r))
			}
		}
	})
}
