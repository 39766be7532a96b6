package desfire

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/desfire-relay/relay/desfire/dfcrypto"
	"github.com/desfire-relay/relay/desfire/internal/vectors"
)

type ev1AuthVector struct {
	ID            string `json:"id"`
	Source        string `json:"source"`
	Key           string `json:"key"`
	KeyNo         byte   `json:"key_no"`
	EncRndB       string `json:"enc_rnd_b"`
	RndB          string `json:"rnd_b"`
	RndA          string `json:"rnd_a"`
	PCDCryptogram string `json:"pcd_cryptogram"`
	EncRndARot    string `json:"enc_rnd_a_rot"`
	SessionKey    string `json:"session_key"`
	Frames        struct {
		PCD  []string `json:"pcd"`
		PICC []string `json:"picc"`
	} `json:"frames"`
}

// ev1Auth runs Start and Respond of a vector and returns the authenticator.
func ev1Auth(t *testing.T, v ev1AuthVector) *AuthAES {
	t.Helper()
	a, err := NewAuthAES(v.KeyNo, vectors.Hex(t, v.Key), bytes.NewReader(vectors.Hex(t, v.RndA)))
	if err != nil {
		t.Fatal(err)
	}
	a.Start()
	if _, err := a.Respond(StatusAdditionalFrame, vectors.Hex(t, v.EncRndB)); err != nil {
		t.Fatal(err)
	}
	return a
}

func TestEV1AuthVectors(t *testing.T) {
	for _, v := range vectors.Load[ev1AuthVector](t, "ev1_aes_auth.json") {
		t.Run(v.ID, func(t *testing.T) {
			t.Logf("source: %s", v.Source)
			key, rndA, rndB := vectors.Hex(t, v.Key), vectors.Hex(t, v.RndA), vectors.Hex(t, v.RndB)
			a, err := NewAuthAES(v.KeyNo, key, bytes.NewReader(rndA))
			if err != nil {
				t.Fatal(err)
			}
			code, payload := a.Start()
			pcd1 := append([]byte{code}, payload...)
			// The vector's own numbers agree: RndB is what the card enciphered.
			if got, _ := dfcrypto.DecryptCBC(key, make([]byte, 16), vectors.Hex(t, v.EncRndB)); !bytes.Equal(got, rndB) {
				t.Fatalf("vector: E(K, RndB) decrypts to %X", got)
			}
			second, err := a.Respond(StatusAdditionalFrame, vectors.Hex(t, v.EncRndB))
			if err != nil {
				t.Fatal(err)
			}
			if want := vectors.Hex(t, v.PCDCryptogram); !bytes.Equal(second, want) {
				t.Fatalf("PCD cryptogram %X, want %X", second, want)
			}
			early, err := a.EarlyChannel()
			if err != nil {
				t.Fatal(err)
			}
			proof := vectors.Hex(t, v.EncRndARot)
			if len(v.Frames.PCD) > 0 {
				pcd2 := append([]byte{StatusAdditionalFrame}, second...)
				for i, got := range [][]byte{pcd1, pcd2} {
					if want := vectors.Hex(t, v.Frames.PCD[i]); !bytes.Equal(got, want) {
						t.Fatalf("PCD frame %d: %X, want %X", i, got, want)
					}
				}
				picc := [][]byte{append([]byte{StatusAdditionalFrame}, vectors.Hex(t, v.EncRndB)...), append([]byte{StatusOK}, proof...)}
				for i, want := range picc {
					if got := vectors.Hex(t, v.Frames.PICC[i]); !bytes.Equal(got, want) {
						t.Fatalf("PICC frame %d: %X, want %X", i, got, want)
					}
				}
			}
			ch, err := a.Finish(StatusOK, proof)
			if err != nil {
				t.Fatal(err)
			}
			if ch != early {
				t.Fatal("Finish returned another channel than EarlyChannel")
			}
			ev1 := ch.(*EV1Channel)
			want := vectors.Hex(t, v.SessionKey)
			if !bytes.Equal(ev1.key, want) {
				t.Fatalf("session key %X, want %X", ev1.key, want)
			}
			if sk, err := EV1SessionKey(rndA, rndB); err != nil || !bytes.Equal(sk, want) {
				t.Fatalf("EV1SessionKey %X %v", sk, err)
			}
			if !bytes.Equal(ev1.iv, make([]byte, 16)) || ev1.KeyNo() != v.KeyNo || ch.Generation() != "ev1" || ch.Err() != nil {
				t.Fatalf("fresh channel: IV %X key %d %q %v", ev1.iv, ev1.KeyNo(), ch.Generation(), ch.Err())
			}
		})
	}
}

func TestEV1AuthFailures(t *testing.T) {
	v := vectors.Load[ev1AuthVector](t, "ev1_aes_auth.json")[0]
	proof := vectors.Hex(t, v.EncRndARot)
	type tc struct {
		name   string
		status byte
		data   []byte
		want   error
	}
	cases := []tc{
		{"card error", StatusAuthenticationError, nil, ErrAuthentication},
		{"additional frame", StatusAdditionalFrame, proof, ErrUnexpectedStatus},
		{"short", StatusOK, proof[:15], ErrShortResponse},
		{"long", StatusOK, append(append([]byte(nil), proof...), 0), ErrLongResponse},
		{"empty", StatusOK, nil, ErrShortResponse},
	}
	for i := range proof {
		bad := append([]byte(nil), proof...)
		bad[i] ^= 0x01
		cases = append(cases, tc{fmt.Sprintf("flip byte %d", i), StatusOK, bad, ErrRndA})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Logf("source: %s", v.Source)
			a := ev1Auth(t, v)
			early, err := a.EarlyChannel()
			if err != nil {
				t.Fatal(err)
			}
			_, r, err := early.Seal(GetKeyVersionCmd(0))
			if err != nil {
				t.Fatal(err)
			}
			ch, err := a.Finish(c.status, c.data)
			if !errors.Is(err, c.want) || ch != nil {
				t.Fatalf("Finish: %v, want %v", err, c.want)
			}
			if c.status != StatusOK {
				var se *StatusError
				if !errors.As(err, &se) || se.Status() != c.status {
					t.Fatalf("not a *StatusError for %02X: %v", c.status, err)
				}
			}
			if !errors.Is(early.Err(), ErrChannelClosed) {
				t.Fatalf("early channel after a failed proof: %v", early.Err())
			}
			if _, err := r.Open(StatusOK, make([]byte, 9)); !errors.Is(err, ErrChannelClosed) {
				t.Fatalf("reply after a failed proof: %v", err)
			}
			if _, _, err := early.Seal(GetKeyVersionCmd(0)); !errors.Is(err, ErrChannelClosed) {
				t.Fatalf("seal after a failed proof: %v", err)
			}
			if _, err := a.EarlyChannel(); err == nil {
				t.Fatal("EarlyChannel after a failed proof")
			}
		})
	}
}

func TestEV1AuthSteps(t *testing.T) {
	v := vectors.Load[ev1AuthVector](t, "ev1_aes_auth.json")[0]
	t.Logf("source: %s", v.Source)
	key := vectors.Hex(t, v.Key)
	t.Run("bad key", func(t *testing.T) {
		if _, err := NewAuthAES(0, key[:15], nil); !errors.Is(err, dfcrypto.ErrKeySize) {
			t.Fatal(err)
		}
	})
	t.Run("start frame", func(t *testing.T) {
		a, _ := NewAuthAES(5, key, nil)
		if code, p := a.Start(); code != 0xAA || !bytes.Equal(p, []byte{5}) {
			t.Fatalf("%02X %X", code, p)
		}
	})
	t.Run("challenge errors", func(t *testing.T) {
		for _, c := range []struct {
			status byte
			data   []byte
			want   error
		}{
			{StatusNoSuchKey, nil, ErrNoSuchKey},
			{StatusOK, vectors.Hex(t, v.EncRndB), ErrUnexpectedStatus},
			{StatusAdditionalFrame, vectors.Hex(t, v.EncRndB)[:8], ErrShortResponse},
			{StatusAdditionalFrame, make([]byte, 17), ErrLongResponse},
		} {
			a, _ := NewAuthAES(0, key, nil)
			if _, err := a.Respond(c.status, c.data); !errors.Is(err, c.want) {
				t.Fatalf("%02X %X: %v, want %v", c.status, c.data, err, c.want)
			}
			if _, err := a.EarlyChannel(); !errors.Is(err, ErrEV1AuthState) {
				t.Fatalf("early channel after a failed challenge: %v", err)
			}
			if _, err := a.Finish(StatusOK, make([]byte, 16)); !errors.Is(err, ErrEV1AuthState) {
				t.Fatalf("finish after a failed challenge: %v", err)
			}
		}
	})
	t.Run("out of order", func(t *testing.T) {
		a, _ := NewAuthAES(0, key, bytes.NewReader(vectors.Hex(t, v.RndA)))
		if _, err := a.Finish(StatusOK, vectors.Hex(t, v.EncRndARot)); !errors.Is(err, ErrEV1AuthState) {
			t.Fatalf("finish before respond: %v", err)
		}
		if _, err := a.EarlyChannel(); !errors.Is(err, ErrEV1AuthState) {
			t.Fatalf("early channel before respond: %v", err)
		}
		if _, err := a.Respond(StatusAdditionalFrame, vectors.Hex(t, v.EncRndB)); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Respond(StatusAdditionalFrame, vectors.Hex(t, v.EncRndB)); !errors.Is(err, ErrEV1AuthState) {
			t.Fatalf("respond twice: %v", err)
		}
		if _, err := a.Finish(StatusOK, vectors.Hex(t, v.EncRndARot)); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Finish(StatusOK, vectors.Hex(t, v.EncRndARot)); !errors.Is(err, ErrEV1AuthState) {
			t.Fatalf("finish twice: %v", err)
		}
	})
	t.Run("short random source", func(t *testing.T) {
		a, _ := NewAuthAES(0, key, bytes.NewReader(make([]byte, 5)))
		if _, err := a.Respond(StatusAdditionalFrame, vectors.Hex(t, v.EncRndB)); err == nil {
			t.Fatal("RndA from a short reader")
		}
	})
	t.Run("crypto/rand default", func(t *testing.T) {
		a, _ := NewAuthAES(0, key, nil)
		p1, err := a.Respond(StatusAdditionalFrame, vectors.Hex(t, v.EncRndB))
		if err != nil || len(p1) != 32 {
			t.Fatalf("%X %v", p1, err)
		}
		// The second half is RotL(RndB) chained after a random RndA: it
		// cannot equal the vector's, whose RndA is fixed.
		if bytes.Equal(p1, vectors.Hex(t, v.PCDCryptogram)) {
			t.Fatal("crypto/rand gave the vector's RndA")
		}
	})
}

// ev1ScriptTransport answers the frames of a published exchange and checks
// the command APDUs against it.
type ev1ScriptTransport struct {
	t    *testing.T
	pcd  [][]byte // native frames expected: code ‖ payload
	picc [][]byte // native answers: status ‖ data
	n    int
}

func (s *ev1ScriptTransport) Transmit(_ context.Context, capdu []byte) ([]byte, error) {
	code, data, err := UnwrapNative(capdu)
	if err != nil {
		return nil, err
	}
	if s.n >= len(s.pcd) {
		return nil, fmt.Errorf("unexpected frame %X", capdu)
	}
	if got := append([]byte{code}, data...); !bytes.Equal(got, s.pcd[s.n]) {
		s.t.Errorf("frame %d: %X, want %X", s.n, got, s.pcd[s.n])
	}
	a := s.picc[s.n]
	s.n++
	return NativeResponse(a[0], a[1:]), nil
}

// TestEV1AuthenticateOverCard replays the published frames through
// Card.Authenticate.
func TestEV1AuthenticateOverCard(t *testing.T) {
	for _, v := range vectors.Load[ev1AuthVector](t, "ev1_aes_auth.json") {
		if len(v.Frames.PCD) != 2 || len(v.Frames.PICC) != 2 {
			continue
		}
		t.Run(v.ID, func(t *testing.T) {
			t.Logf("source: %s", v.Source)
			tr := &ev1ScriptTransport{t: t}
			for i := range v.Frames.PCD {
				tr.pcd = append(tr.pcd, vectors.Hex(t, v.Frames.PCD[i]))
				tr.picc = append(tr.picc, vectors.Hex(t, v.Frames.PICC[i]))
			}
			a, err := NewAuthAES(v.KeyNo, vectors.Hex(t, v.Key), bytes.NewReader(vectors.Hex(t, v.RndA)))
			if err != nil {
				t.Fatal(err)
			}
			card := NewCard(tr)
			if err := card.Authenticate(context.Background(), a); err != nil {
				t.Fatal(err)
			}
			if tr.n != 2 || card.Channel() == nil || card.Channel().Generation() != "ev1" {
				t.Fatalf("%d frames, channel %v", tr.n, card.Channel())
			}
		})
	}
}

type ev1Step struct {
	Op            string `json:"op"`
	Title         string `json:"title"`
	Data          string `json:"data"`
	Status        string `json:"status"`
	Mac8          string `json:"mac8"`
	CMAC          string `json:"cmac"`
	IVIn          string `json:"iv_in"`
	KeyNo         byte   `json:"key_no"`
	NewKey        string `json:"new_key"`
	OldKey        string `json:"old_key"`
	KeyVersion    string `json:"key_version"`
	Cryptogram    string `json:"cryptogram"`
	CryptogramEnc string `json:"cryptogram_enc"`
}

type ev1ChainVector struct {
	ID         string    `json:"id"`
	Source     string    `json:"source"`
	SessionKey string    `json:"session_key"`
	Steps      []ev1Step `json:"steps"`
}

// ev1ChainAuthKey returns the key number a chain's session is authenticated
// with, as its ChangeKey steps reveal it: the key changed without an old
// key, or else a key no step changes.
func ev1ChainAuthKey(v ev1ChainVector) byte {
	others := map[byte]bool{}
	for _, s := range v.Steps {
		if s.Op == "change_key" {
			if s.OldKey == "" {
				return s.KeyNo
			}
			others[s.KeyNo] = true
		}
	}
	k := byte(0)
	for others[k] {
		k++
	}
	return k
}

// TestEV1SecureMessagingVectors runs every published chain through the
// channel (Seal and Reply.Open) and through the pure functions, checking
// the IV after each step.
func TestEV1SecureMessagingVectors(t *testing.T) {
	for _, v := range vectors.Load[ev1ChainVector](t, "ev1_secure_messaging.json") {
		t.Run(v.ID, func(t *testing.T) {
			t.Logf("source: %s", v.Source)
			key := vectors.Hex(t, v.SessionKey)
			ch, err := newEV1Channel(key, ev1ChainAuthKey(v))
			if err != nil {
				t.Fatal(err)
			}
			var pending Reply
			// iv follows the trace: the IV before each step.
			iv := make([]byte, 16)
			for i, s := range v.Steps {
				where := fmt.Sprintf("step %d %s %q", i, s.Op, s.Title)
				switch s.Op {
				case "tx_cmac":
					d := vectors.Hex(t, s.Data)
					want := vectors.Hex(t, s.CMAC)
					if !bytes.Equal(ch.iv, iv) {
						t.Fatalf("%s: channel IV %X, trace %X", where, ch.iv, iv)
					}
					if got, err := EV1CommandCMAC(key, iv, d[0], d[1:], nil); err != nil || !bytes.Equal(got, want) {
						t.Fatalf("%s: EV1CommandCMAC %X %v, want %X", where, got, err, want)
					}
					// The traces send these commands in plain: the CMAC
					// moves the IV but is not sent.
					payload, r, err := ch.Seal(&Command{Code: d[0], Header: d[1:], RespLen: -1})
					if err != nil {
						t.Fatalf("%s: %v", where, err)
					}
					if !bytes.Equal(payload, d[1:]) || !bytes.Equal(ch.iv, want) {
						t.Fatalf("%s: plain payload %X IV %X", where, payload, ch.iv)
					}
					// In MAC mode the same chain sends CMAC[0:8] after
					// any data.
					mc, _ := newEV1Channel(key, 0)
					copy(mc.iv, iv)
					h := min(2, len(d))
					macPayload, _, err := mc.Seal(&Command{Code: d[0], Header: d[1:h], Data: d[h:], Mode: CommMAC, RespLen: -1})
					wantPayload := d[1:len(d):len(d)]
					if h < len(d) {
						wantPayload = append(wantPayload, want[:8]...)
					}
					if err != nil || !bytes.Equal(macPayload, wantPayload) || !bytes.Equal(mc.iv, want) {
						t.Fatalf("%s: MAC mode payload %X IV %X %v", where, macPayload, mc.iv, err)
					}
					pending, iv = r, want
				case "rx_cmac":
					data, mac8 := vectors.Hex(t, s.Data), vectors.Hex(t, s.Mac8)
					status := vectors.Hex(t, s.Status)[0]
					want := vectors.Hex(t, s.CMAC)
					if !bytes.Equal(want[:8], mac8) {
						t.Fatalf("%s: vector: mac8 is not the CMAC's first half", where)
					}
					if got, err := EV1ResponseCMAC(key, iv, data, status); err != nil || !bytes.Equal(got, want) {
						t.Fatalf("%s: EV1ResponseCMAC %X %v, want %X", where, got, err, want)
					}
					if pending == nil {
						t.Fatalf("%s: answer without a command", where)
					}
					out, err := pending.Open(status, append(append([]byte(nil), data...), mac8...))
					if err != nil {
						t.Fatalf("%s: %v", where, err)
					}
					// After a predictable command the channel moved past
					// the answer at Seal time; either way it is here now.
					if !bytes.Equal(out, data) || !bytes.Equal(ch.iv, want) {
						t.Fatalf("%s: data %X, IV %X", where, out, ch.iv)
					}
					pending, iv = nil, want
				case "change_key":
					if want := vectors.Hex(t, s.IVIn); !bytes.Equal(iv, want) || !bytes.Equal(ch.iv, want) {
						t.Fatalf("%s: IV in %X (channel %X), want %X", where, iv, ch.iv, want)
					}
					same := s.OldKey == ""
					var old []byte
					if !same {
						old = vectors.Hex(t, s.OldKey)
					}
					newKey, ver := vectors.Hex(t, s.NewKey), vectors.Hex(t, s.KeyVersion)[0]
					plain, err := EV1ChangeKeyCryptogram(s.KeyNo, same, newKey, old, ver)
					if want := vectors.Hex(t, s.Cryptogram); err != nil || !bytes.Equal(plain, want) {
						t.Fatalf("%s: cryptogram %X %v, want %X", where, plain, err, want)
					}
					enc := vectors.Hex(t, s.CryptogramEnc)
					next := enc[len(enc)-16:]
					if ct, n, err := EV1Encipher(key, iv, plain); err != nil || !bytes.Equal(ct, enc) || !bytes.Equal(n, next) {
						t.Fatalf("%s: EV1Encipher %X %v", where, ct, err)
					}
					cmd, err := EV1ChangeKey(s.KeyNo, ch.KeyNo(), newKey, old, ver)
					if err != nil {
						t.Fatal(err)
					}
					payload, r, err := ch.Seal(cmd)
					if err != nil {
						t.Fatalf("%s: %v", where, err)
					}
					if want := append([]byte{s.KeyNo}, enc...); !bytes.Equal(payload, want) {
						t.Fatalf("%s: payload %X, want %X", where, payload, want)
					}
					if got := r.(*ev1Reply).iv; !bytes.Equal(got, next) {
						t.Fatalf("%s: IV after the cryptogram %X, want %X", where, got, next)
					}
					pending, iv = r, next
				case "end_session":
					if pending == nil {
						t.Fatalf("%s: without a command", where)
					}
					if _, _, err := ch.Seal(GetKeyVersionCmd(0)); !errors.Is(err, ErrNotPipelinable) {
						t.Fatalf("%s: sealed behind the session's end: %v", where, err)
					}
					if _, err := pending.Open(StatusOK, nil); err != nil {
						t.Fatalf("%s: %v", where, err)
					}
					if !errors.Is(ch.Err(), ErrChannelClosed) {
						t.Fatalf("%s: channel still open: %v", where, ch.Err())
					}
					if _, _, err := ch.Seal(GetKeyVersionCmd(0)); !errors.Is(err, ErrChannelClosed) {
						t.Fatalf("%s: seal after the end: %v", where, err)
					}
					pending = nil
				default:
					t.Fatalf("%s: unknown step", where)
				}
			}
		})
	}
}

// TestEV1ResponseCRC checks the copy-free response CRC against the DESFire
// CRC32 and the published CRC vector of an enciphered answer.
func TestEV1ResponseCRC(t *testing.T) {
	type crcVector struct {
		ID     string `json:"id"`
		Source string `json:"source"`
		Data   string `json:"data"`
		CRCLE  string `json:"crc_le"`
	}
	n := 0
	for _, v := range vectors.Load[crcVector](t, "crc32.json") {
		d := vectors.Hex(t, v.Data)
		if v.CRCLE == "" || len(d) == 0 {
			continue
		}
		t.Run(v.ID, func(t *testing.T) {
			t.Logf("source: %s", v.Source)
			got := ev1ResponseCRC(d[:len(d)-1], d[len(d)-1])
			if want := vectors.Hex(t, v.CRCLE); !bytes.Equal(got[:], want) {
				t.Fatalf("%X, want %X", got, want)
			}
		})
		n++
	}
	if n == 0 {
		t.Fatal("no CRC vectors")
	}
	for l := range 40 {
		d := bytes.Repeat([]byte{byte(l)}, l)
		got := ev1ResponseCRC(d, 0x0C)
		if want := dfcrypto.CRC32LE(append(d, 0x0C)); !bytes.Equal(got[:], want) {
			t.Fatalf("length %d: %X, want %X", l, got, want)
		}
	}
}
