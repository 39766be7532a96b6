package simcard

import (
	"bytes"
	"context"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/desfire/dfcrypto"
	"github.com/desfire-relay/relay/desfire/internal/vectors"
)

// cardWithKey returns a card whose selected level has key keyNo = key:
// the PICC level for key 0, an application with 14 keys otherwise.
func cardWithKey(t *testing.T, keyNo int, key []byte, rnd []byte) *Card {
	t.Helper()
	c, err := New(Options{Rand: bytes.NewReader(rnd)})
	if err != nil {
		t.Fatal(err)
	}
	a := c.picc
	if keyNo != 0 {
		a = newApp([3]byte{1, 2, 3}, 0x0F, 0x80|MaxKeys)
		c.apps[a.aid] = a
		c.appOrder = append(c.appOrder, a.aid)
		c.sel = a
	}
	copy(a.keys[keyNo].value[:], key)
	return c
}

func mustTransmit(t *testing.T, c *Card, apdu []byte) []byte {
	t.Helper()
	r, err := c.Transmit(context.Background(), apdu)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func hexs(b []byte) string { return strings.ToUpper(hex.EncodeToString(b)) }

// TestEV1AuthTraces replays the published AuthenticateAES exchanges: given
// the trace's RndB, the card's frames must match byte for byte.
func TestEV1AuthTraces(t *testing.T) {
	type vec struct {
		ID, Source  string
		Key         string
		KeyNo       int    `json:"key_no"`
		RndB        string `json:"rnd_b"`
		SessionKey  string `json:"session_key"`
		Frames      struct{ PCD, PICC []string }
		EncRndARot  string `json:"enc_rnd_a_rot"`
		PCDCrypto   string `json:"pcd_cryptogram"`
		EncRndB     string `json:"enc_rnd_b"`
		RndA        string `json:"rnd_a"`
		Description string
	}
	for _, v := range vectors.Load[vec](t, "ev1_aes_auth.json") {
		t.Run(v.ID, func(t *testing.T) {
			t.Log("source:", v.Source)
			c := cardWithKey(t, v.KeyNo, vectors.Hex(t, v.Key), vectors.Hex(t, v.RndB))
			for i, pcd := range v.Frames.PCD {
				f := vectors.Hex(t, pcd)
				apdu, _ := desfire.WrapNative(f[0], f[1:])
				r := mustTransmit(t, c, apdu)
				want := vectors.Hex(t, v.Frames.PICC[i])
				want = append(append([]byte(nil), want[1:]...), 0x91, want[0])
				if !bytes.Equal(r, want) {
					t.Fatalf("frame %d: card answered %X, trace %X", i, r, want)
				}
			}
			if c.sess == nil || c.sess.kind != kindEV1 || hexs(c.sess.key) != v.SessionKey || c.sess.keyNo != byte(v.KeyNo) {
				t.Fatalf("session %+v, want key %s", c.sess, v.SessionKey)
			}
		})
	}
}

// TestEV2AuthTraces replays AuthenticateEV2First: RndB (recovered from
// E(K, RndB) with the known key) and TI are fed through the card's random
// source; the card's cryptograms and session keys must match.
func TestEV2AuthTraces(t *testing.T) {
	type vec struct {
		ID, Source, Type string
		Key              string
		KeyNo            int    `json:"key_no"`
		RndA             string `json:"rnd_a"`
		RndB             string `json:"rnd_b"`
		EncRndB          string `json:"enc_rnd_b"`
		PCDCrypto        string `json:"pcd_cryptogram"`
		PICCCrypto       string `json:"picc_cryptogram"`
		TI               string
		SesEnc           string `json:"ses_enc"`
		SesMAC           string `json:"ses_mac"`
		APDUs            map[string]string
	}
	n := 0
	for _, v := range vectors.Load[vec](t, "ev2_auth.json") {
		t.Run(v.ID, func(t *testing.T) {
			t.Log("source:", v.Source)
			key := vectors.Hex(t, v.Key)
			if v.Type == "ev2_session_keys" {
				enc, mac := ev2SessionKeys(key, vectors.Hex(t, v.RndA), vectors.Hex(t, v.RndB))
				if hexs(enc) != v.SesEnc || hexs(mac) != v.SesMAC {
					t.Fatalf("session keys %X %X", enc, mac)
				}
				n++
				return
			}
			rndB, err := dfcrypto.DecryptCBC(key, make([]byte, 16), vectors.Hex(t, v.EncRndB))
			if err != nil {
				t.Fatal(err)
			}
			c := cardWithKey(t, v.KeyNo, key, append(rndB, vectors.Hex(t, v.TI)...))
			c1, _ := desfire.WrapNative(0x71, []byte{byte(v.KeyNo), 0x00})
			c2, _ := desfire.WrapNative(0xAF, vectors.Hex(t, v.PCDCrypto))
			if v.APDUs != nil && v.KeyNo == 0 {
				if hexs(c1) != v.APDUs["c1"] || hexs(c2) != v.APDUs["c2"] {
					t.Fatalf("test APDUs %X %X differ from the trace", c1, c2)
				}
			}
			r1 := mustTransmit(t, c, c1)
			if want := v.EncRndB + "91AF"; hexs(r1) != want {
				t.Fatalf("r1 %X, want %s", r1, want)
			}
			r2 := mustTransmit(t, c, c2)
			if want := v.PICCCrypto + "9100"; hexs(r2) != want {
				t.Fatalf("r2 %X, want %s", r2, want)
			}
			if v.APDUs != nil && (hexs(r1) != v.APDUs["r1"] || hexs(r2) != v.APDUs["r2"]) {
				t.Fatalf("responses differ from the trace APDUs")
			}
			s := c.sess
			if s == nil || s.kind != kindEV2 || hexs(s.enc) != v.SesEnc || hexs(s.mac) != v.SesMAC || hexs(s.ti) != v.TI || s.ctr != 0 {
				t.Fatalf("session %+v", s)
			}
			n++
		})
	}
	if n == 0 {
		t.Fatal("no EV2 vector ran")
	}
}

// TestEV2SecureMessagingVectors runs the card side of every EV2 trace: the
// card must accept each published command payload (wrap) and produce each
// published answer payload (unwrap) from the plaintext.
func TestEV2SecureMessagingVectors(t *testing.T) {
	type vec struct {
		ID, Source, Op, Mode string
		SesEnc               *string `json:"ses_enc"`
		SesMAC               *string `json:"ses_mac"`
		TI                   string
		CmdCtr               uint16 `json:"cmd_ctr"`
		Cmd, Header, Data    string
		RC                   string
		Payload              string
		Mact                 string
		IV                   string
	}
	modes := map[string]desfire.CommMode{"plain": desfire.CommPlain, "mac": desfire.CommMAC, "full": desfire.CommFull}
	ran := 0
	for _, v := range vectors.Load[vec](t, "ev2_secure_messaging.json") {
		t.Run(v.ID, func(t *testing.T) {
			t.Log("source:", v.Source)
			s := &session{kind: kindEV2, ti: vectors.Hex(t, v.TI), ctr: v.CmdCtr}
			if v.SesEnc != nil {
				s.enc = vectors.Hex(t, *v.SesEnc)
			}
			if v.SesMAC != nil {
				s.mac = vectors.Hex(t, *v.SesMAC)
			}
			c, _ := New(Options{})
			c.sess = s
			switch v.Op {
			case "wrap":
				code := vectors.Hex(t, v.Cmd)[0]
				hdr := vectors.Hex(t, v.Header)
				h, d, st := c.open(code, vectors.Hex(t, v.Payload), cmdIn{hdr: len(hdr), mode: modes[v.Mode]})
				if st != desfire.StatusOK {
					t.Fatalf("card refused the payload: status %02X", st)
				}
				if !bytes.Equal(h, hdr) || hexs(d) != strings.ToUpper(v.Data) {
					t.Fatalf("card read header %X data %X, want %s %s", h, d, v.Header, v.Data)
				}
				// Tamper: every flipped byte must be refused.
				p := vectors.Hex(t, v.Payload)
				for i := len(hdr); i < len(p); i++ {
					q := append([]byte(nil), p...)
					q[i] ^= 0x01
					c.sess = &session{kind: kindEV2, ti: s.ti, ctr: v.CmdCtr, enc: s.enc, mac: s.mac}
					if _, _, st := c.open(code, q, cmdIn{hdr: len(hdr), mode: modes[v.Mode]}); st == desfire.StatusOK {
						t.Fatalf("flipped byte %d accepted", i)
					}
				}
			case "unwrap":
				if v.RC != "00" {
					t.Skip("only status 00 answers are sealed")
				}
				mode := modes[v.Mode]
				data := vectors.Hex(t, v.Data)
				got := c.seal(data, mode)
				if hexs(got) != strings.ToUpper(v.Payload) {
					t.Fatalf("card sealed %X, trace %s", got, v.Payload)
				}
				if s.ctr != v.CmdCtr+1 {
					t.Fatalf("counter %d after the answer", s.ctr)
				}
			case "mac_cmd":
				in := append(vectors.Hex(t, v.Cmd), vectors.Hex(t, v.Data)...)
				got := ev2MAC(s, in[0], v.CmdCtr, in[1:])
				if hexs(got) != v.Mact {
					t.Fatalf("MACt %X, want %s", got, v.Mact)
				}
			case "mac_resp":
				got := ev2MAC(s, vectors.Hex(t, v.RC)[0], v.CmdCtr+1, vectors.Hex(t, v.Data))
				if hexs(got) != v.Mact {
					t.Fatalf("MACt %X, want %s", got, v.Mact)
				}
			case "iv_cmd":
				if got := ev2IV(s, 0xA5, 0x5A, v.CmdCtr); hexs(got) != v.IV {
					t.Fatalf("IV %X, want %s", got, v.IV)
				}
			default:
				t.Skipf("op %s has no card side", v.Op)
			}
			ran++
		})
	}
	if ran < 20 {
		t.Fatalf("only %d EV2 vectors ran", ran)
	}
}

// TestEV1SecureMessagingVectors replays the EV1 CMAC chains and ChangeKey
// cryptograms on the card side.
func TestEV1SecureMessagingVectors(t *testing.T) {
	type step struct {
		Op, Title    string
		Data, Status string
		CMAC         string `json:"cmac"`
		Mac8         string `json:"mac8"`
		IVIn         string `json:"iv_in"`
		KeyNo        int    `json:"key_no"`
		NewKey       string `json:"new_key"`
		OldKey       string `json:"old_key"`
		KeyVersion   string `json:"key_version"`
		CryptoEnc    string `json:"cryptogram_enc"`
	}
	type vec struct {
		ID, Source string
		SessionKey string `json:"session_key"`
		Steps      []step
	}
	for _, v := range vectors.Load[vec](t, "ev1_secure_messaging.json") {
		t.Run(v.ID, func(t *testing.T) {
			t.Log("source:", v.Source)
			c := cardWithKey(t, 1, make([]byte, 16), nil)
			c.sess = &session{kind: kindEV1, key: vectors.Hex(t, v.SessionKey), iv: make([]byte, 16)}
			var pendingResp []byte
			for i, s := range v.Steps {
				switch s.Op {
				case "tx_cmac":
					d := vectors.Hex(t, s.Data)
					if _, _, st := c.open(d[0], d[1:], cmdIn{mode: desfire.CommPlain}); st != 0 {
						t.Fatalf("step %d: status %02X", i, st)
					}
					if hexs(c.sess.iv) != s.CMAC {
						t.Fatalf("step %d %s: IV %X, want %s", i, s.Title, c.sess.iv, s.CMAC)
					}
				case "rx_cmac":
					want := s.Data + s.Mac8
					got := pendingResp
					if got == nil {
						got = c.seal(vectors.Hex(t, s.Data), desfire.CommPlain)
					}
					pendingResp = nil
					if hexs(got) != want || hexs(c.sess.iv) != s.CMAC {
						t.Fatalf("step %d %s: answer %X IV %X, want %s %s", i, s.Title, got, c.sess.iv, want, s.CMAC)
					}
				case "change_key":
					if hexs(c.sess.iv) != s.IVIn {
						t.Fatalf("step %d: IV %X, want %s", i, c.sess.iv, s.IVIn)
					}
					if s.OldKey != "" {
						copy(c.sel.keys[s.KeyNo].value[:], vectors.Hex(t, s.OldKey))
					}
					res := c.run(0xC4, append([]byte{byte(s.KeyNo)}, vectors.Hex(t, s.CryptoEnc)...))
					if res.status != 0 {
						t.Fatalf("step %d %s: status %02X", i, s.Title, res.status)
					}
					if k := c.sel.keys[s.KeyNo]; hexs(k.value[:]) != s.NewKey || hexs([]byte{k.version}) != s.KeyVersion {
						t.Fatalf("step %d: key %X v%02X, want %s v%s", i, k.value, k.version, s.NewKey, s.KeyVersion)
					}
					pendingResp = res.data
				case "end_session":
					if c.sess != nil {
						t.Fatalf("step %d: session still open", i)
					}
				}
			}
		})
	}
}
