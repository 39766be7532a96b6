package desfire

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"
	"testing"

	"github.com/desfire-relay/relay/desfire/dfcrypto"
	"github.com/desfire-relay/relay/desfire/internal/vectors"
)

// ev1TestCard is a second, deliberately plain implementation of the card's
// side of EV1 secure messaging, written from the trace facts directly on
// dfcrypto, so the channel is checked against something it does not share
// code with.
type ev1TestCard struct {
	t       testing.TB
	key, iv []byte
}

func newEV1TestCard(t testing.TB, key []byte) *ev1TestCard {
	return &ev1TestCard{t: t, key: append([]byte(nil), key...), iv: make([]byte, 16)}
}

// receive checks a command as the card would and returns its data. hdr is
// the header length, dataLen the plaintext data length (Full mode).
func (k *ev1TestCard) receive(code byte, payload []byte, mode CommMode, hdr, dataLen int) []byte {
	k.t.Helper()
	return k.receiveTrailer(code, payload, mode, hdr, dataLen, 0)
}

// receiveTrailer is receive for a Full-mode command with trailer bytes
// after the command CRC (ChangeKey of another key).
func (k *ev1TestCard) receiveTrailer(code byte, payload []byte, mode CommMode, hdr, dataLen, trailer int) []byte {
	t := k.t
	t.Helper()
	switch {
	case mode == CommFull && dataLen > 0:
		header, ct := payload[:hdr], payload[hdr:]
		pt, err := dfcrypto.DecryptCBC(k.key, k.iv, ct)
		if err != nil {
			t.Fatalf("card: %v", err)
		}
		k.iv = append([]byte(nil), ct[len(ct)-16:]...)
		data := pt[:dataLen]
		msg := append(append([]byte{code}, header...), data...)
		if crc := dfcrypto.CRC32LE(msg); !bytes.Equal(pt[dataLen:dataLen+4], crc) {
			t.Fatalf("card: command CRC %X, want %X", pt[dataLen:dataLen+4], crc)
		}
		end := dataLen + 4 + trailer
		if len(pt) != (end+15)/16*16 || !bytes.Equal(pt[end:], make([]byte, len(pt)-end)) {
			t.Fatalf("card: padding %X", pt[end:])
		}
		return data
	case mode == CommMAC && dataLen > 0:
		// Sent with a MAC only when there is data (EV1 card rule).
		if len(payload) != hdr+dataLen+8 {
			t.Fatalf("card: MAC-mode command %X: want %d header, %d data and 8 MAC bytes", payload, hdr, dataLen)
		}
		body, mac := payload[:len(payload)-8], payload[len(payload)-8:]
		full, err := dfcrypto.CMACWithIV(k.key, k.iv, append([]byte{code}, body...))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(mac, full[:8]) {
			t.Fatalf("card: command MAC %X, want %X", mac, full[:8])
		}
		k.iv = full
		return body[hdr:]
	default:
		full, err := dfcrypto.CMACWithIV(k.key, k.iv, append([]byte{code}, payload...))
		if err != nil {
			t.Fatal(err)
		}
		k.iv = full
		return payload[hdr:]
	}
}

// answer returns the card's answer (without status) with status 00.
func (k *ev1TestCard) answer(data []byte, mode CommMode) []byte {
	k.t.Helper()
	withStatus := append(append([]byte(nil), data...), 0x00)
	if mode == CommFull && len(data) > 0 { // an empty answer is only MACed
		plain := append(append([]byte(nil), data...), dfcrypto.CRC32LE(withStatus)...)
		ct, err := dfcrypto.EncryptCBC(k.key, k.iv, dfcrypto.PadZero(plain))
		if err != nil {
			k.t.Fatal(err)
		}
		k.iv = append([]byte(nil), ct[len(ct)-16:]...)
		return ct
	}
	full, err := dfcrypto.CMACWithIV(k.key, k.iv, withStatus)
	if err != nil {
		k.t.Fatal(err)
	}
	k.iv = full
	return append(append([]byte(nil), data...), full[:8]...)
}

var ev1TestKey = []byte{0x10, 0x32, 0x54, 0x76, 0x98, 0xBA, 0xDC, 0xFE, 0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF}

func newTestEV1(t *testing.T) (*EV1Channel, *ev1TestCard) {
	t.Helper()
	ch, err := newEV1Channel(ev1TestKey, 2)
	if err != nil {
		t.Fatal(err)
	}
	return ch, newEV1TestCard(t, ev1TestKey)
}

func ev1Seq(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(0xA0 + i)
	}
	return b
}

// TestEV1ChainWithCard runs a long session mixing every mode and data
// length; card and channel must stay in step.
func TestEV1ChainWithCard(t *testing.T) {
	ch, card := newTestEV1(t)
	n := 0
	for _, mode := range []CommMode{CommPlain, CommMAC, CommFull} {
		for _, respMode := range []CommMode{CommPlain, CommMAC, CommFull} {
			for _, l := range []int{0, 1, 11, 12, 13, 28, 60} {
				for _, predictable := range []bool{false, true} {
					name := fmt.Sprintf("%v/%v/%d/predictable=%v", mode, respMode, l, predictable)
					data, resp := ev1Seq(l), ev1Seq(l/2+1)
					if l == 12 {
						resp = nil // an empty Full-mode answer is only MACed
					}
					respLen := len(resp)
					if l%2 == 1 && !predictable {
						respLen = -1
					}
					cmd := &Command{Code: 0x3D, Header: []byte{1, 2, 3}, Data: data, Mode: mode, RespMode: respMode,
						RespLen: respLen, Predictable: predictable, Predicted: resp, Name: name}
					payload, r, err := ch.Seal(cmd)
					if err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					if got := card.receive(cmd.Code, payload, mode, 3, l); !bytes.Equal(got, data) {
						t.Fatalf("%s: card got %X", name, got)
					}
					out, err := r.Open(StatusOK, card.answer(resp, respMode))
					if err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					if !bytes.Equal(out, resp) || !bytes.Equal(ch.iv, card.iv) {
						t.Fatalf("%s: data %X IV %X, card IV %X", name, out, ch.iv, card.iv)
					}
					n++
				}
			}
		}
	}
	t.Logf("%d commands in one session", n)
}

func ev1TypedFault(err error) bool {
	for _, s := range []error{ErrResponseMAC, ErrResponseCRC, ErrPadding, ErrShortResponse, ErrLongResponse} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// TestEV1TamperEveryByte changes every byte of good answers, truncates and
// extends them: each must fail with a typed error and close the channel.
func TestEV1TamperEveryByte(t *testing.T) {
	cases := []struct {
		mode        CommMode
		data        []byte
		respLen     int
		predictable bool
	}{
		{CommMAC, ev1Seq(4), 4, false},
		{CommMAC, nil, 0, true},
		{CommMAC, ev1Seq(20), -1, false},
		{CommPlain, ev1Seq(7), 7, false},
		{CommFull, ev1Seq(4), 4, false},
		{CommFull, ev1Seq(4), -1, false},
		{CommFull, ev1Seq(12), 12, true},
		{CommFull, ev1Seq(13), -1, false},
		{CommFull, ev1Seq(0), 0, true},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%v/len=%d/respLen=%d/predictable=%v", c.mode, len(c.data), c.respLen, c.predictable), func(t *testing.T) {
			good := func() (*EV1Channel, Reply, []byte) {
				ch, card := newTestEV1(t)
				cmd := &Command{Code: 0xBD, Header: []byte{3, 0, 0, 0, 4, 0, 0}, RespMode: c.mode, RespLen: c.respLen,
					Predictable: c.predictable, Predicted: c.data}
				payload, r, err := ch.Seal(cmd)
				if err != nil {
					t.Fatal(err)
				}
				card.receive(cmd.Code, payload, CommPlain, 7, 0)
				return ch, r, card.answer(c.data, c.mode)
			}
			ch, r, ans := good()
			if out, err := r.Open(StatusOK, ans); err != nil || !bytes.Equal(out, c.data) || ch.Err() != nil {
				t.Fatalf("good answer: %X %v %v", out, err, ch.Err())
			}
			check := func(what string, status byte, bad []byte) {
				t.Helper()
				ch, r, _ := good()
				_, err := r.Open(status, bad)
				if err == nil {
					t.Fatalf("%s accepted", what)
				}
				if status == StatusOK && !ev1TypedFault(err) {
					t.Fatalf("%s: untyped error %v", what, err)
				}
				if !errors.Is(ch.Err(), ErrChannelClosed) {
					t.Fatalf("%s: channel still open", what)
				}
				if _, _, err := ch.Seal(GetKeyVersionCmd(0)); !errors.Is(err, ErrChannelClosed) {
					t.Fatalf("%s: seal afterwards: %v", what, err)
				}
			}
			for i := range ans {
				for _, flip := range []byte{0x01, 0x80, 0xFF} {
					bad := append([]byte(nil), ans...)
					bad[i] ^= flip
					check(fmt.Sprintf("byte %d ^ %02X", i, flip), StatusOK, bad)
				}
			}
			for n := range len(ans) {
				check(fmt.Sprintf("truncated to %d", n), StatusOK, ans[:n])
			}
			for _, extra := range [][]byte{{0}, {0xFF}, make([]byte, 8), make([]byte, 16), ev1Seq(16)} {
				check(fmt.Sprintf("extended by %X", extra), StatusOK, append(append([]byte(nil), ans...), extra...))
			}
			for _, st := range []byte{StatusBoundaryError, StatusIntegrityError, StatusAdditionalFrame, StatusPermissionDenied} {
				check(fmt.Sprintf("status %02X", st), st, ans)
				ch, r, _ := good()
				_, err := r.Open(st, ans)
				var se *StatusError
				if !errors.As(err, &se) || se.Status() != st || ch.Err() == nil {
					t.Fatalf("status %02X: %v", st, err)
				}
			}
		})
	}
}

func TestEV1Pipelining(t *testing.T) {
	t.Run("predictable then unpredictable", func(t *testing.T) {
		ch, card := newTestEV1(t)
		cmds := []*Command{
			CreditCmd(3, 100, CommMAC),
			WriteRecordCmd(4, 0, ev1Seq(16), CommFull),
			CommitTransactionCmd(false, true),
			GetValueCmd(3, CommFull),
		}
		var payloads [][]byte
		var replies []Reply
		for _, c := range cmds {
			p, r, err := ch.Seal(c)
			if err != nil {
				t.Fatalf("%s: %v", c.Name, err)
			}
			payloads, replies = append(payloads, p), append(replies, r)
		}
		// GetValue's answer is not predictable: nothing more can be sealed
		// yet, and that refusal does not close the channel.
		if _, _, err := ch.Seal(GetKeyVersionCmd(0)); !errors.Is(err, ErrNotPipelinable) || ch.Err() != nil {
			t.Fatalf("sealed behind an unpredictable answer: %v / %v", err, ch.Err())
		}
		value := []byte{0x10, 0x27, 0, 0}
		answers := make([][]byte, len(cmds))
		for i, c := range cmds {
			dataLen := len(c.Data)
			card.receive(c.Code, payloads[i], c.Mode, len(c.Header), dataLen)
			var resp []byte
			if c.Code == CmdGetValue {
				resp = value
			}
			answers[i] = card.answer(resp, c.RespMode)
		}
		for i, r := range replies {
			out, err := r.Open(StatusOK, answers[i])
			if err != nil {
				t.Fatalf("reply %d: %v", i, err)
			}
			if i == 3 && !bytes.Equal(out, value) {
				t.Fatalf("value %X", out)
			}
		}
		if !bytes.Equal(ch.iv, card.iv) {
			t.Fatal("channel and card IVs differ")
		}
		p, _, err := ch.Seal(GetKeyVersionCmd(0))
		if err != nil {
			t.Fatalf("seal after the answer was verified: %v", err)
		}
		card.receive(CmdGetKeyVersion, p, CommPlain, 1, 0)
		if !bytes.Equal(ch.iv, card.iv) {
			t.Fatal("channel and card IVs differ after the next command")
		}
	})

	t.Run("answer differs from prediction", func(t *testing.T) {
		for _, c := range []struct {
			mode            CommMode
			predicted, sent []byte
		}{
			{CommMAC, []byte{}, []byte{0x00}},
			{CommPlain, []byte{1, 2}, []byte{1, 3}},
			{CommFull, []byte{1, 2, 3, 4}, []byte{1, 2, 3, 5}},
		} {
			ch, card := newTestEV1(t)
			cmd := &Command{Code: 0x6C, Header: []byte{1}, RespMode: c.mode, RespLen: -1, Predictable: true, Predicted: c.predicted}
			p, r, err := ch.Seal(cmd)
			if err != nil {
				t.Fatal(err)
			}
			_, r2, err := ch.Seal(GetKeyVersionCmd(0))
			if err != nil {
				t.Fatal(err)
			}
			card.receive(cmd.Code, p, CommPlain, 1, 0)
			// A correctly protected answer, but not the predicted one.
			if _, err := r.Open(StatusOK, card.answer(c.sent, c.mode)); !errors.Is(err, ErrEV1Mispredicted) || !errors.Is(err, ErrResponseMAC) {
				t.Fatalf("%v: %v", c.mode, err)
			}
			if _, err := r2.Open(StatusOK, make([]byte, 9)); !errors.Is(err, ErrChannelClosed) {
				t.Fatalf("%v: reply behind a misprediction: %v", c.mode, err)
			}
		}
	})

	t.Run("card error on a predicted answer", func(t *testing.T) {
		ch, _ := newTestEV1(t)
		_, r, _ := ch.Seal(CreditCmd(3, 1, CommMAC))
		_, r2, _ := ch.Seal(CommitTransactionCmd(false, true))
		if _, err := r.Open(StatusBoundaryError, nil); !errors.Is(err, ErrBoundary) {
			t.Fatal(err)
		}
		if _, err := r2.Open(StatusOK, make([]byte, 8)); !errors.Is(err, ErrChannelClosed) {
			t.Fatal(err)
		}
	})

	t.Run("out of order", func(t *testing.T) {
		ch, card := newTestEV1(t)
		p1, r1, _ := ch.Seal(CreditCmd(3, 1, CommMAC))
		p2, r2, _ := ch.Seal(CommitTransactionCmd(false, true))
		card.receive(CmdCredit, p1, CommMAC, 1, 4)
		a1 := card.answer(nil, CommMAC)
		card.receive(CmdCommitTransaction, p2, CommPlain, 0, 0)
		a2 := card.answer(nil, CommMAC)
		if _, err := r2.Open(StatusOK, a2); !errors.Is(err, ErrEV1ReplyOrder) {
			t.Fatalf("second before first: %v", err)
		}
		if _, err := r1.Open(StatusOK, a1); !errors.Is(err, ErrChannelClosed) {
			t.Fatalf("after an out-of-order open: %v", err)
		}
	})

	t.Run("opened twice", func(t *testing.T) {
		ch, card := newTestEV1(t)
		p, r, _ := ch.Seal(GetKeyVersionCmd(1))
		card.receive(CmdGetKeyVersion, p, CommPlain, 1, 0)
		a := card.answer([]byte{7}, CommPlain)
		if _, err := r.Open(StatusOK, a); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Open(StatusOK, a); !errors.Is(err, ErrEV1ReplyOrder) || ch.Err() == nil {
			t.Fatalf("twice: %v", err)
		}
	})

	t.Run("bad commands", func(t *testing.T) {
		for _, c := range []*Command{
			{Code: 0x6C, Mode: CommMode(2), RespLen: 0},
			{Code: 0x6C, RespMode: CommMode(7), RespLen: 0},
			{Code: 0x6C, RespLen: 4, Predictable: true, Predicted: []byte{1}},
		} {
			ch, _ := newTestEV1(t)
			if _, _, err := ch.Seal(c); !errors.Is(err, ErrParameter) {
				t.Fatalf("%+v: %v", c, err)
			}
		}
	})
}

func TestEV1EarlyChannel(t *testing.T) {
	v := vectors.Load[ev1AuthVector](t, "ev1_aes_auth.json")[0]
	t.Logf("source: %s", v.Source)
	sk := vectors.Hex(t, v.SessionKey)

	t.Run("sealed before the proof, opened after", func(t *testing.T) {
		a := ev1Auth(t, v)
		early, err := a.EarlyChannel()
		if err != nil {
			t.Fatal(err)
		}
		card := newEV1TestCard(t, sk)
		p1, r1, err := early.Seal(CreditCmd(1, 5, CommFull))
		if err != nil {
			t.Fatal(err)
		}
		p2, r2, err := early.Seal(GetValueCmd(1, CommMAC))
		if err != nil {
			t.Fatal(err)
		}
		card.receive(CmdCredit, p1, CommFull, 1, 4)
		a1 := card.answer(nil, CommMAC)
		card.receive(CmdGetValue, p2, CommPlain, 1, 0)
		a2 := card.answer([]byte{5, 0, 0, 0}, CommMAC)
		if _, err := a.Finish(StatusOK, vectors.Hex(t, v.EncRndARot)); err != nil {
			t.Fatal(err)
		}
		if _, err := r1.Open(StatusOK, a1); err != nil {
			t.Fatal(err)
		}
		if out, err := r2.Open(StatusOK, a2); err != nil || !bytes.Equal(out, []byte{5, 0, 0, 0}) {
			t.Fatalf("%X %v", out, err)
		}
	})

	t.Run("opened before the proof", func(t *testing.T) {
		a := ev1Auth(t, v)
		early, _ := a.EarlyChannel()
		card := newEV1TestCard(t, sk)
		p, r, _ := early.Seal(CommitTransactionCmd(false, true))
		card.receive(CmdCommitTransaction, p, CommPlain, 0, 0)
		if _, err := r.Open(StatusOK, card.answer(nil, CommMAC)); !errors.Is(err, ErrNotAuthenticated) {
			t.Fatalf("opened before Finish: %v", err)
		}
		if !errors.Is(early.Err(), ErrChannelClosed) {
			t.Fatal("channel open after a premature reply")
		}
		if _, err := a.Finish(StatusOK, vectors.Hex(t, v.EncRndARot)); !errors.Is(err, ErrChannelClosed) {
			t.Fatalf("Finish on a closed early channel: %v", err)
		}
	})
}

func TestEV1ChangeKeyReplies(t *testing.T) {
	newKey := ev1Seq(16)
	t.Run("same key", func(t *testing.T) {
		for _, c := range []struct {
			name   string
			status byte
			data   []byte
			ok     bool
		}{
			{"no MAC", StatusOK, nil, true},
			{"unexpected MAC", StatusOK, make([]byte, 8), false},
			{"card error", StatusIntegrityError, nil, false},
		} {
			ch, card := newTestEV1(t)
			cmd, err := EV1ChangeKey(0x82, ch.KeyNo(), newKey, nil, 1) // PICC-level key type bits
			if err != nil {
				t.Fatal(err)
			}
			p, r, err := ch.Seal(cmd)
			if err != nil {
				t.Fatal(err)
			}
			if got := card.receive(CmdChangeKey, p, CommFull, 1, 17); !bytes.Equal(got, append(newKey[:16:16], 1)) {
				t.Fatalf("%s: card got %X", c.name, got)
			}
			_, err = r.Open(c.status, c.data)
			if (err == nil) != c.ok {
				t.Fatalf("%s: %v", c.name, err)
			}
			if !errors.Is(ch.Err(), ErrChannelClosed) {
				t.Fatalf("%s: channel open after changing its key", c.name)
			}
		}
	})
	t.Run("other key", func(t *testing.T) {
		ch, card := newTestEV1(t)
		old := bytes.Repeat([]byte{0x5A}, 16)
		cmd, err := EV1ChangeKey(1, ch.KeyNo(), newKey, old, 7)
		if err != nil {
			t.Fatal(err)
		}
		p, r, err := ch.Seal(cmd)
		if err != nil {
			t.Fatal(err)
		}
		pt, _ := dfcrypto.DecryptCBC(ev1TestKey, card.iv, p[1:])
		card.receiveTrailer(CmdChangeKey, p, CommFull, 1, 17, 4)
		if want := dfcrypto.CRC32LE(newKey); !bytes.Equal(pt[21:25], want) {
			t.Fatalf("CRC32(NewKey) %X, want %X", pt[21:25], want)
		}
		// Predictable: the next command can be sealed before the answer.
		p2, r2, err := ch.Seal(GetKeyVersionCmd(1))
		if err != nil {
			t.Fatal(err)
		}
		a := card.answer(nil, CommMAC)
		card.receive(CmdGetKeyVersion, p2, CommPlain, 1, 0)
		a2 := card.answer([]byte{7}, CommMAC)
		if _, err := r.Open(StatusOK, a); err != nil {
			t.Fatal(err)
		}
		if out, err := r2.Open(StatusOK, a2); err != nil || !bytes.Equal(out, []byte{7}) || ch.Err() != nil {
			t.Fatalf("%X %v %v", out, err, ch.Err())
		}
	})
	t.Run("bad keys", func(t *testing.T) {
		if _, err := EV1ChangeKey(1, 0, newKey[:15], newKey, 0); !errors.Is(err, dfcrypto.ErrKeySize) {
			t.Fatal(err)
		}
		if _, err := EV1ChangeKey(1, 0, newKey, nil, 0); !errors.Is(err, dfcrypto.ErrKeySize) {
			t.Fatal(err)
		}
		if _, err := EV1ChangeKey(0, 0, newKey, nil, 0); err != nil {
			t.Fatalf("same key needs no old key: %v", err)
		}
	})
}

// TestEV1DecipherLengths checks length recovery and RespLen enforcement of
// enciphered answers for every data length around block boundaries.
func TestEV1DecipherLengths(t *testing.T) {
	iv := ev1Seq(16)
	for n := range 45 {
		data := ev1Seq(n)
		plain := append(append([]byte(nil), data...), dfcrypto.CRC32LE(append(append([]byte(nil), data...), 0))...)
		ct, err := dfcrypto.EncryptCBC(ev1TestKey, iv, dfcrypto.PadZero(plain))
		if err != nil {
			t.Fatal(err)
		}
		for _, respLen := range []int{n, -1} {
			got, next, err := EV1DecipherResponse(ev1TestKey, iv, ct, StatusOK, respLen)
			if err != nil || !bytes.Equal(got, data) || !bytes.Equal(next, ct[len(ct)-16:]) {
				t.Fatalf("len %d respLen %d: %X %v", n, respLen, got, err)
			}
		}
		for _, respLen := range []int{n - 1, n + 1, n + 16} {
			if respLen < 0 {
				continue
			}
			_, _, err := EV1DecipherResponse(ev1TestKey, iv, ct, StatusOK, respLen)
			want := (respLen + 4 + 15) / 16 * 16
			switch {
			case want > len(ct) && !errors.Is(err, ErrShortResponse),
				want < len(ct) && !errors.Is(err, ErrLongResponse),
				want == len(ct) && !errors.Is(err, ErrResponseCRC) && !errors.Is(err, ErrPadding):
				t.Fatalf("len %d read as %d: %v", n, respLen, err)
			}
		}
		// The CRC covers the status: another status does not verify.
		if _, _, err := EV1DecipherResponse(ev1TestKey, iv, ct, StatusNoChanges, -1); !errors.Is(err, ErrResponseCRC) {
			t.Fatalf("len %d with status 0C: %v", n, err)
		}
	}
}

// TestEV1OpenAllocationBounded opens a maximal garbage answer and bounds the
// memory it allocates to a small multiple of its size.
func TestEV1OpenAllocationBounded(t *testing.T) {
	garbage := bytes.Repeat([]byte{0x5C}, MaxResponse)
	for _, mode := range []CommMode{CommMAC, CommFull} {
		ch, _ := newTestEV1(t)
		_, r, err := ch.Seal(&Command{Code: 0xBB, Header: []byte{1, 0, 0, 0, 0, 0, 0}, RespMode: mode, RespLen: -1})
		if err != nil {
			t.Fatal(err)
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, err = r.Open(StatusOK, garbage)
		runtime.ReadMemStats(&after)
		if err == nil {
			t.Fatalf("%v: garbage accepted", mode)
		}
		if got := after.TotalAlloc - before.TotalAlloc; got > 8*MaxResponse {
			t.Fatalf("%v: %d bytes allocated for a %d-byte answer", mode, got, MaxResponse)
		}
	}
}
