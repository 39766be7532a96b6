package desfire

import (
	"bytes"
	"errors"
	"testing"

	"github.com/desfire-relay/relay/desfire/dfcrypto"
	"github.com/desfire-relay/relay/desfire/internal/vectors"
)

type ev1AuthVector struct {
	ID, Source, Key string
	KeyNo           byte   `json:"key_no"`
	EncRndB         string `json:"enc_rnd_b"`
	RndB            string `json:"rnd_b"`
	RndA            string `json:"rnd_a"`
	PCDCryptogram   string `json:"pcd_cryptogram"`
	EncRndARot      string `json:"enc_rnd_a_rot"`
	SessionKey      string `json:"session_key"`
	Frames          struct {
		PCD  []string `json:"pcd"`
		PICC []string `json:"picc"`
	} `json:"frames"`
}

func TestEV1AuthVectors(t *testing.T) {
	for _, v := range vectors.Load[ev1AuthVector](t, "ev1_aes_auth.json") {
		t.Run(v.ID, func(t *testing.T) {
			t.Logf("source: %s", v.Source)
			a, err := NewAuthAES(v.KeyNo, vectors.Hex(t, v.Key), bytes.NewReader(vectors.Hex(t, v.RndA)))
			if err != nil {
				t.Fatal(err)
			}
			code, payload := a.Start()
			if first := append([]byte{code}, payload...); len(v.Frames.PCD) > 0 && !bytes.Equal(first, vectors.Hex(t, v.Frames.PCD[0])) {
				t.Fatalf("first frame %X", first)
			}
			second, err := a.Respond(StatusAdditionalFrame, vectors.Hex(t, v.EncRndB))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(second, vectors.Hex(t, v.PCDCryptogram)) {
				t.Fatalf("PCD cryptogram %X", second)
			}
			if !bytes.Equal(a.rndB, vectors.Hex(t, v.RndB)) {
				t.Fatalf("RndB %X", a.rndB)
			}
			if len(v.Frames.PICC) == 2 && !bytes.Equal(vectors.Hex(t, v.Frames.PICC[1])[1:], vectors.Hex(t, v.EncRndARot)) {
				t.Fatal("vector frames disagree with enc_rnd_a_rot")
			}
			ch, err := a.Finish(StatusOK, vectors.Hex(t, v.EncRndARot))
			if err != nil {
				t.Fatal(err)
			}
			if k := ch.(*EV1Channel).key; !bytes.Equal(k, vectors.Hex(t, v.SessionKey)) {
				t.Fatalf("session key %X", k)
			}
			// A wrong proof is refused and closes the early channel.
			b, _ := NewAuthAES(v.KeyNo, vectors.Hex(t, v.Key), bytes.NewReader(vectors.Hex(t, v.RndA)))
			b.Start()
			b.Respond(StatusAdditionalFrame, vectors.Hex(t, v.EncRndB))
			early, _ := b.EarlyChannel()
			bad := vectors.Hex(t, v.EncRndARot)
			bad[3] ^= 1
			if _, err := b.Finish(StatusOK, bad); !errors.Is(err, ErrRndA) {
				t.Fatalf("wrong proof: %v", err)
			}
			if early.Err() == nil {
				t.Fatal("early channel usable after a failed proof")
			}
		})
	}
}

type ev1Step struct {
	Op            string
	Title         string
	Data          string
	Status        string
	Mac8          string `json:"mac8"`
	CMAC          string
	IVIn          string `json:"iv_in"`
	KeyNo         byte   `json:"key_no"`
	NewKey        string `json:"new_key"`
	OldKey        string `json:"old_key"`
	KeyVersion    string `json:"key_version"`
	Cryptogram    string
	CryptogramEnc string `json:"cryptogram_enc"`
}

func TestEV1SecureMessagingVectors(t *testing.T) {
	type vec struct {
		ID, Source string
		SessionKey string `json:"session_key"`
		Steps      []ev1Step
	}
	for _, v := range vectors.Load[vec](t, "ev1_secure_messaging.json") {
		t.Run(v.ID, func(t *testing.T) {
			t.Logf("source: %s", v.Source)
			key := vectors.Hex(t, v.SessionKey)
			ch := newEV1Channel(append([]byte(nil), key...))
			var pending Reply
			for i, s := range v.Steps {
				switch s.Op {
				case "tx_cmac":
					d := vectors.Hex(t, s.Data)
					cmd := &Command{Code: d[0], Header: d[1:], RespLen: -1}
					if _, r, err := ch.Seal(cmd); err != nil {
						t.Fatalf("step %d: %v", i, err)
					} else {
						pending = r
					}
					if !bytes.Equal(ch.iv, vectors.Hex(t, s.CMAC)) {
						t.Fatalf("step %d (%s): IV %X", i, s.Title, ch.iv)
					}
				case "rx_cmac":
					body := append(vectors.Hex(t, s.Data), vectors.Hex(t, s.Mac8)...)
					if pending == nil {
						t.Fatalf("step %d: answer without a command", i)
					}
					if _, err := pending.Open(vectors.Hex(t, s.Status)[0], body); err != nil {
						t.Fatalf("step %d (%s): %v", i, s.Title, err)
					}
					if !bytes.Equal(ch.iv, vectors.Hex(t, s.CMAC)) {
						t.Fatalf("step %d: IV %X after answer", i, ch.iv)
					}
					pending = nil
				case "change_key":
					if !bytes.Equal(ch.iv, vectors.Hex(t, s.IVIn)) {
						t.Fatalf("step %d: IV in %X", i, ch.iv)
					}
					authKey := s.KeyNo
					old := []byte(nil)
					if s.OldKey != "" {
						authKey, old = 0x0E, vectors.Hex(t, s.OldKey) // any other key number
					}
					cmd, err := EV1ChangeKey(s.KeyNo, authKey, vectors.Hex(t, s.NewKey), old, vectors.Hex(t, s.KeyVersion)[0])
					if err != nil {
						t.Fatal(err)
					}
					plain := append(append([]byte(nil), cmd.Data...), dfcrypto.CRC32LE(append(append([]byte{cmd.Code}, cmd.Header...), cmd.Data...))...)
					plain = dfcrypto.PadZero(append(plain, cmd.ev1Trailer...))
					if !bytes.Equal(plain, vectors.Hex(t, s.Cryptogram)) {
						t.Fatalf("step %d: cryptogram %X", i, plain)
					}
					payload, r, err := ch.Seal(cmd)
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(payload[1:], vectors.Hex(t, s.CryptogramEnc)) || payload[0] != s.KeyNo {
						t.Fatalf("step %d: enciphered %X", i, payload)
					}
					if old == nil {
						pending = r
						continue
					}
					// The answer of another key's change is MACed with the
					// IV after the cryptogram; the vector's next step holds it.
					pending = r
				case "end_session":
					if pending == nil {
						t.Fatal("end of session without a command")
					}
					if _, err := pending.Open(StatusOK, nil); err != nil {
						t.Fatal(err)
					}
					if ch.Err() == nil {
						t.Fatal("channel still open after changing the authenticated key")
					}
				default:
					t.Fatalf("unknown step %q", s.Op)
				}
			}
		})
	}
}

// sealed returns a fresh channel with a known key for behaviour tests.
func testEV1() *EV1Channel { return newEV1Channel(bytes.Repeat([]byte{0x42}, 16)) }

// cardAnswer computes what a card would answer with data in mode, given
// the IV after the command (a second implementation of the card side).
func cardAnswer(t *testing.T, key, iv, data []byte, mode CommMode) []byte {
	t.Helper()
	switch mode {
	case CommFull:
		plain := append(append([]byte(nil), data...), dfcrypto.CRC32LE(append(append([]byte(nil), data...), 0))...)
		ct, err := dfcrypto.EncryptCBC(key, iv, dfcrypto.PadZero(plain))
		if err != nil {
			t.Fatal(err)
		}
		return ct
	default:
		mac, _ := dfcrypto.CMACWithIV(key, iv, append(append([]byte(nil), data...), 0))
		return append(append([]byte(nil), data...), mac[:8]...)
	}
}

func TestEV1TamperEveryByte(t *testing.T) {
	for _, mode := range []CommMode{CommMAC, CommFull, CommPlain} {
		t.Run(mode.String(), func(t *testing.T) {
			data := []byte{1, 2, 3, 4}
			good := func() (*EV1Channel, Reply, []byte) {
				ch := testEV1()
				key := append([]byte(nil), ch.key...)
				_, r, err := ch.Seal(&Command{Code: 0x6C, Header: []byte{3}, RespMode: mode, RespLen: 4})
				if err != nil {
					t.Fatal(err)
				}
				return ch, r, cardAnswer(t, key, ch.iv, data, mode)
			}
			ch, r, ans := good()
			if out, err := r.Open(StatusOK, ans); err != nil || !bytes.Equal(out, data) {
				t.Fatalf("good answer: %X %v", out, err)
			}
			if ch.Err() != nil {
				t.Fatal("channel closed after a good answer")
			}
			for i := range ans {
				for _, flip := range []byte{0x01, 0x80} {
					ch, r, ans := good()
					ans[i] ^= flip
					if _, err := r.Open(StatusOK, ans); err == nil {
						t.Fatalf("byte %d ^%02X accepted", i, flip)
					}
					if ch.Err() == nil {
						t.Fatalf("byte %d: channel still open", i)
					}
				}
			}
			for _, bad := range [][]byte{ans[:len(ans)-1], append(append([]byte(nil), ans...), 0), nil} {
				ch, r, _ := good()
				if _, err := r.Open(StatusOK, bad); err == nil || ch.Err() == nil {
					t.Fatalf("length %d accepted", len(bad))
				}
			}
			ch, r, _ = good()
			if _, err := r.Open(StatusBoundaryError, nil); !errors.Is(err, ErrBoundary) || ch.Err() == nil {
				t.Fatalf("error status: %v", err)
			}
		})
	}
}

func TestEV1Pipelining(t *testing.T) {
	ch := testEV1()
	key := append([]byte(nil), ch.key...)
	credit := CreditCmd(3, 100, CommFull)
	commit := CommitTransactionCmd(false, true)
	getv := GetValueCmd(3, CommFull)
	var ivs [][]byte
	var replies []Reply
	for _, c := range []*Command{credit, commit, getv} {
		_, r, err := ch.Seal(c)
		if err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		}
		ivs = append(ivs, append([]byte(nil), r.(*ev1Reply).iv...))
		replies = append(replies, r)
	}
	// GetValue's answer is not predictable: nothing more can be sealed.
	if _, _, err := ch.Seal(getv); !errors.Is(err, ErrNotPipelinable) {
		t.Fatalf("sealed behind an unpredictable answer: %v", err)
	}
	answers := [][]byte{
		cardAnswer(t, key, ivs[0], nil, CommMAC),
		cardAnswer(t, key, ivs[1], nil, CommMAC),
		cardAnswer(t, key, ivs[2], []byte{0x10, 0, 0, 0}, CommFull),
	}
	for i, r := range replies {
		if _, err := r.Open(StatusOK, answers[i]); err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
	}
	if _, _, err := ch.Seal(getv); err != nil {
		t.Fatalf("seal after the answer was verified: %v", err)
	}

	// Out of order opening closes the channel.
	ch = testEV1()
	_, r1, _ := ch.Seal(credit)
	_, r2, _ := ch.Seal(commit)
	_ = r1
	if _, err := r2.Open(StatusOK, make([]byte, 8)); err == nil || ch.Err() == nil {
		t.Fatal("out-of-order reply accepted")
	}
}

func FuzzEV1ReplyOpen(f *testing.F) {
	f.Add(byte(0), []byte{1, 2, 3, 4, 5, 6, 7, 8, 9}, byte(1), int8(4))
	f.Add(byte(0), make([]byte, 32), byte(3), int8(-1))
	f.Fuzz(func(t *testing.T, status byte, data []byte, mode byte, respLen int8) {
		ch := testEV1()
		_, r, err := ch.Seal(&Command{Code: 0xBD, Header: []byte{1}, RespMode: CommMode(mode & 3), RespLen: int(respLen)})
		if err != nil {
			return
		}
		out, err := r.Open(status, data)
		if err == nil && len(out) > len(data) {
			t.Fatal("more output than input")
		}
	})
}
