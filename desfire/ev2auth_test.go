package desfire

import (
	"bytes"
	"errors"
	"testing"

	"github.com/desfire-relay/relay/desfire/dfcrypto"
	"github.com/desfire-relay/relay/desfire/internal/vectors"
)

// ev2AuthVector is one entry of ev2_auth.json.
type ev2AuthVector struct {
	ID        string `json:"id"`
	Type      string `json:"type"`
	Source    string `json:"source"`
	Key       string `json:"key"`
	KeyNo     byte   `json:"key_no"`
	RndA      string `json:"rnd_a"`
	RndB      string `json:"rnd_b"`
	EncRndB   string `json:"enc_rnd_b"`
	PCD       string `json:"pcd_cryptogram"`
	PICC      string `json:"picc_cryptogram"`
	PICCPlain string `json:"picc_plain"`
	TI        string `json:"ti"`
	PDcap2    string `json:"pdcap2"`
	PCDcap2   string `json:"pcdcap2"`
	SesENC    string `json:"ses_enc"`
	SesMAC    string `json:"ses_mac"`
	SV1       string `json:"sv1"`
	SV2       string `json:"sv2"`
	APDUs     *struct {
		C1, R1, C2, R2 string
	} `json:"apdus"`
}

func ev2Eq(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Errorf("%s = %X, want %X", what, got, want)
	}
}

func TestEV2AuthVectors(t *testing.T) {
	h := func(s string) []byte { return vectors.Hex(t, s) }
	zero := make([]byte, 16)
	for _, v := range vectors.Load[ev2AuthVector](t, "ev2_auth.json") {
		t.Run(v.ID, func(t *testing.T) {
			t.Logf("source: %s", v.Source)
			key := h(v.Key)
			switch v.Type {
			case "ev2_session_keys":
				enc, mac, err := EV2SessionKeys(key, h(v.RndA), h(v.RndB))
				if err != nil {
					t.Fatal(err)
				}
				ev2Eq(t, "SesAuthENCKey", enc, h(v.SesENC))
				ev2Eq(t, "SesAuthMACKey", mac, h(v.SesMAC))
				return
			case "ev2first", "ev2first_no_rnda":
			default:
				t.Fatalf("unknown vector type %q", v.Type)
			}
			rndB, err := dfcrypto.DecryptCBC(key, zero, h(v.EncRndB))
			if err != nil {
				t.Fatal(err)
			}
			if v.RndB != "" {
				ev2Eq(t, "RndB", rndB, h(v.RndB))
			}
			rndA := h(v.RndA)
			if v.Type == "ev2first_no_rnda" {
				// RndA is not printed: recover it from the PCD cryptogram
				// and check the RndB' half against the card's RndB.
				plain, err := dfcrypto.DecryptCBC(key, zero, h(v.PCD))
				if err != nil {
					t.Fatal(err)
				}
				rndA = plain[:16]
				ev2Eq(t, "RotL(RndB) inside pcd_cryptogram", plain[16:], dfcrypto.RotL(rndB))
			}
			auth := NewAuthEV2First(v.KeyNo, key, bytes.NewReader(rndA))
			code, payload := auth.Start()
			if code != 0x71 || !bytes.Equal(payload, []byte{v.KeyNo, 0x00}) {
				t.Fatalf("Start = %02X %X", code, payload)
			}
			status, r1 := StatusAdditionalFrame, h(v.EncRndB)
			if v.APDUs != nil {
				c1, err := WrapNative(code, payload)
				if err != nil {
					t.Fatal(err)
				}
				ev2Eq(t, "C-APDU 1", c1, h(v.APDUs.C1))
				if status, r1, err = SplitResponse(h(v.APDUs.R1)); err != nil {
					t.Fatal(err)
				}
			}
			pcd, err := auth.Respond(status, r1)
			if err != nil {
				t.Fatal(err)
			}
			ev2Eq(t, "pcd_cryptogram", pcd, h(v.PCD))
			status, r2 := StatusOK, h(v.PICC)
			if v.APDUs != nil {
				c2, err := WrapNative(0xAF, pcd)
				if err != nil {
					t.Fatal(err)
				}
				ev2Eq(t, "C-APDU 2", c2, h(v.APDUs.C2))
				if status, r2, err = SplitResponse(h(v.APDUs.R2)); err != nil {
					t.Fatal(err)
				}
			}
			if v.PICCPlain != "" {
				plain, err := dfcrypto.DecryptCBC(key, zero, r2)
				if err != nil {
					t.Fatal(err)
				}
				ev2Eq(t, "picc_plain", plain, h(v.PICCPlain))
			}
			chI, err := auth.Finish(status, r2)
			if err != nil {
				t.Fatal(err)
			}
			ch := chI.(*EV2Channel)
			if ch.Generation() != "ev2" || ch.Err() != nil || ch.CmdCtr() != 0 || ch.KeyNo() != v.KeyNo {
				t.Errorf("channel: generation %q err %v ctr %d keyNo %d", ch.Generation(), ch.Err(), ch.CmdCtr(), ch.KeyNo())
			}
			ev2Eq(t, "TI", ch.TI(), h(v.TI))
			ev2Eq(t, "PDcap2", ch.PDcap2(), h(v.PDcap2))
			ev2Eq(t, "PCDcap2", ch.PCDcap2(), h(v.PCDcap2))
			ev2Eq(t, "SesAuthENCKey", ch.enc, h(v.SesENC))
			ev2Eq(t, "SesAuthMACKey", ch.mac, h(v.SesMAC))
			if v.SV1 != "" {
				sv1, sv2, err := EV2SessionVectors(rndA, rndB)
				if err != nil {
					t.Fatal(err)
				}
				ev2Eq(t, "SV1", sv1, h(v.SV1))
				ev2Eq(t, "SV2", sv2, h(v.SV2))
			}
		})
	}
}

// ev2TestCard is the card side of EV2 authentication, written from the
// data sheet independently of AuthEV2, for round trips.
type ev2TestCard struct {
	key, rndB, ti []byte
	rndA          []byte
}

func (c *ev2TestCard) challenge(t *testing.T) []byte {
	t.Helper()
	out, err := dfcrypto.EncryptCBC(c.key, make([]byte, 16), c.rndB)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (c *ev2TestCard) proof(t *testing.T, pcd []byte, first bool) []byte {
	t.Helper()
	plain, err := dfcrypto.DecryptCBC(c.key, make([]byte, 16), pcd)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(plain[16:], dfcrypto.RotL(c.rndB)) {
		t.Fatal("card: PCD sent a wrong RotL(RndB)")
	}
	c.rndA = plain[:16]
	resp := dfcrypto.RotL(c.rndA)
	if first {
		resp = append(append(append([]byte(nil), c.ti...), resp...), make([]byte, 12)...)
	}
	out, err := dfcrypto.EncryptCBC(c.key, make([]byte, 16), resp)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// ev2Authenticate runs AuthEV2First against an ev2TestCard.
func ev2Authenticate(t *testing.T, card *ev2TestCard, keyNo byte) *EV2Channel {
	t.Helper()
	a := NewAuthEV2First(keyNo, card.key, nil)
	a.Start()
	pcd, err := a.Respond(StatusAdditionalFrame, card.challenge(t))
	if err != nil {
		t.Fatal(err)
	}
	ch, err := a.Finish(StatusOK, card.proof(t, pcd, true))
	if err != nil {
		t.Fatal(err)
	}
	return ch.(*EV2Channel)
}

func TestEV2AuthNonFirstKeepsTIAndCounter(t *testing.T) {
	card := &ev2TestCard{key: bytes.Repeat([]byte{0x11}, 16), rndB: bytes.Repeat([]byte{0x22}, 16), ti: []byte{1, 2, 3, 4}}
	first := ev2Authenticate(t, card, 0)
	for i := 0; i < 3; i++ {
		_, r, err := first.Seal(&Command{Code: 0x6C, Header: []byte{1}, Mode: CommPlain, RespMode: CommPlain, RespLen: -1})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Open(StatusOK, nil); err != nil {
			t.Fatal(err)
		}
	}
	card2 := &ev2TestCard{key: bytes.Repeat([]byte{0x33}, 16), rndB: bytes.Repeat([]byte{0x44}, 16)}
	a := NewAuthEV2NonFirst(2, card2.key, bytes.NewReader(bytes.Repeat([]byte{0x55}, 16)), first)
	code, payload := a.Start()
	if code != 0x77 || !bytes.Equal(payload, []byte{2}) {
		t.Fatalf("Start = %02X %X", code, payload)
	}
	pcd, err := a.Respond(StatusAdditionalFrame, card2.challenge(t))
	if err != nil {
		t.Fatal(err)
	}
	proof := card2.proof(t, pcd, false)
	if len(proof) != 16 {
		t.Fatalf("non-first proof of %d bytes", len(proof))
	}
	chI, err := a.Finish(StatusOK, proof)
	if err != nil {
		t.Fatal(err)
	}
	ch := chI.(*EV2Channel)
	ev2Eq(t, "TI", ch.TI(), card.ti)
	if ch.CmdCtr() != 3 || ch.KeyNo() != 2 {
		t.Errorf("CmdCtr %d keyNo %d, want 3 and 2", ch.CmdCtr(), ch.KeyNo())
	}
	enc, mac, err := EV2SessionKeys(card2.key, card2.rndA, card2.rndB)
	if err != nil {
		t.Fatal(err)
	}
	ev2Eq(t, "SesAuthENCKey", ch.enc, enc)
	ev2Eq(t, "SesAuthMACKey", ch.mac, mac)
	if !errors.Is(first.Err(), ErrChannelClosed) {
		t.Errorf("previous channel err = %v, want ErrChannelClosed", first.Err())
	}
	if _, _, err := first.Seal(&Command{Code: 0x6C}); !errors.Is(err, ErrChannelClosed) {
		t.Errorf("seal on replaced channel: %v", err)
	}
}

func TestEV2AuthNonFirstNeedsEV2Session(t *testing.T) {
	a := NewAuthEV2NonFirst(0, make([]byte, 16), nil, nil)
	a.Start()
	if _, err := a.Respond(StatusAdditionalFrame, make([]byte, 16)); !errors.Is(err, ErrNotAuthenticated) {
		t.Errorf("err = %v, want ErrNotAuthenticated", err)
	}
}

func TestEV2AuthErrors(t *testing.T) {
	card := &ev2TestCard{key: bytes.Repeat([]byte{0x11}, 16), rndB: bytes.Repeat([]byte{0x22}, 16), ti: []byte{1, 2, 3, 4}}
	chal := card.challenge(t)
	respond := func(t *testing.T) (*AuthEV2, []byte) {
		a := NewAuthEV2First(0, card.key, nil)
		a.Start()
		pcd, err := a.Respond(StatusAdditionalFrame, chal)
		if err != nil {
			t.Fatal(err)
		}
		return a, pcd
	}
	var se *StatusError
	t.Run("respond status AE", func(t *testing.T) {
		a := NewAuthEV2First(0, card.key, nil)
		_, err := a.Respond(StatusAuthenticationError, nil)
		if !errors.As(err, &se) || !errors.Is(err, ErrAuthentication) {
			t.Errorf("err = %v, want *StatusError 91AE", err)
		}
	})
	t.Run("respond status 00", func(t *testing.T) {
		a := NewAuthEV2First(0, card.key, nil)
		if _, err := a.Respond(StatusOK, chal); !errors.As(err, &se) || !errors.Is(err, ErrUnexpectedStatus) {
			t.Errorf("err = %v", err)
		}
	})
	for _, tc := range []struct {
		name string
		data []byte
		want error
	}{
		{"respond short", chal[:15], ErrShortResponse},
		{"respond long", append(append([]byte(nil), chal...), 0), ErrLongResponse},
		{"respond empty", nil, ErrShortResponse},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := NewAuthEV2First(0, card.key, nil)
			if _, err := a.Respond(StatusAdditionalFrame, tc.data); !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
		})
	}
	t.Run("bad key", func(t *testing.T) {
		a := NewAuthEV2First(0, make([]byte, 15), nil)
		if _, err := a.Respond(StatusAdditionalFrame, chal); !errors.Is(err, dfcrypto.ErrKeySize) {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("order", func(t *testing.T) {
		a := NewAuthEV2First(0, card.key, nil)
		if _, err := a.Finish(StatusOK, make([]byte, 32)); !errors.Is(err, ErrEV2AuthState) {
			t.Errorf("finish first: %v", err)
		}
		a, _ = respond(t)
		if _, err := a.Respond(StatusAdditionalFrame, chal); !errors.Is(err, ErrEV2AuthState) {
			t.Errorf("respond twice: %v", err)
		}
	})
	t.Run("finish status AE", func(t *testing.T) {
		a, _ := respond(t)
		if _, err := a.Finish(StatusAuthenticationError, nil); !errors.As(err, &se) || se.Status() != StatusAuthenticationError {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("finish lengths", func(t *testing.T) {
		a, pcd := respond(t)
		proof := card.proof(t, pcd, true)
		if _, err := a.Finish(StatusOK, proof[:31]); !errors.Is(err, ErrShortResponse) {
			t.Errorf("short: %v", err)
		}
		a, pcd = respond(t)
		proof = card.proof(t, pcd, true)
		if _, err := a.Finish(StatusOK, append(proof, 0)); !errors.Is(err, ErrLongResponse) {
			t.Errorf("long: %v", err)
		}
	})
	t.Run("finish tampered", func(t *testing.T) {
		for i := 0; i < 32; i++ {
			a, pcd := respond(t)
			proof := card.proof(t, pcd, true)
			proof[i] ^= 0x01
			if _, err := a.Finish(StatusOK, proof); !errors.Is(err, ErrRndA) {
				t.Fatalf("byte %d flipped: err = %v, want ErrRndA", i, err)
			}
		}
	})
	t.Run("finish wrong key", func(t *testing.T) {
		a, pcd := respond(t)
		// The right plaintext under another key.
		proof := card.proof(t, pcd, true)
		proof2, _ := dfcrypto.EncryptCBC(bytes.Repeat([]byte{0x99}, 16), make([]byte, 16), ev2MustDecrypt(t, card.key, proof))
		if _, err := a.Finish(StatusOK, proof2); !errors.Is(err, ErrRndA) {
			t.Errorf("err = %v", err)
		}
	})
}

func ev2MustDecrypt(t *testing.T, key, data []byte) []byte {
	t.Helper()
	out, err := dfcrypto.DecryptCBC(key, make([]byte, 16), data)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func FuzzAuthEV2(f *testing.F) {
	key := make([]byte, 16)
	rndA := vectors.Hex(f, "13C5DB8A5930439FC3DEF9A4C675360F")
	f.Add(byte(0xAF), vectors.Hex(f, "A04C124213C186F22399D33AC2A30215"), byte(0x00), vectors.Hex(f, "3FA64DB5446D1F34CD6EA311167F5E4985B89690C04A05F17FA7AB2F08120663"), true)
	f.Add(byte(0xAF), make([]byte, 16), byte(0x00), make([]byte, 16), false)
	f.Add(byte(0xAE), []byte{}, byte(0x00), []byte{}, true)
	f.Fuzz(func(t *testing.T, s1 byte, d1 []byte, s2 byte, d2 []byte, first bool) {
		var a *AuthEV2
		if first {
			a = NewAuthEV2First(0, key, bytes.NewReader(rndA))
		} else {
			prev, err := newEV2Channel(key, key, []byte{1, 2, 3, 4}, 7, 0)
			if err != nil {
				t.Fatal(err)
			}
			a = NewAuthEV2NonFirst(1, key, bytes.NewReader(rndA), prev)
		}
		a.Start()
		pcd, err := a.Respond(s1, d1)
		if err != nil {
			if pcd != nil {
				t.Fatal("payload with error")
			}
			return
		}
		if len(pcd) != 32 || s1 != StatusAdditionalFrame || len(d1) != 16 {
			t.Fatalf("accepted status %02X with %d bytes, payload %d", s1, len(d1), len(pcd))
		}
		ch, err := a.Finish(s2, d2)
		if err != nil {
			if ch != nil {
				t.Fatal("channel with error")
			}
			return
		}
		if s2 != StatusOK || ch.Err() != nil || ch.Generation() != "ev2" {
			t.Fatalf("accepted status %02X", s2)
		}
	})
}
