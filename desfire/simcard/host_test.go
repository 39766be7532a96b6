package simcard

// A minimal host written for these tests only (command sealing, answer
// verification, additional frames), so the card's behaviour tables do not
// depend on package desfire's host code, which is developed in parallel.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/desfire/dfcrypto"
)

type testHost struct {
	t    testing.TB
	c    *Card
	kind int
	// EV1
	key, iv []byte
	// EV2
	enc, mac, ti []byte
	ctr          uint16
	keyNo        byte
	ev2          bool // generation authAny uses
	last         byte // status of the last command
}

// authAny authenticates with the generation chosen for the test.
func (h *testHost) authAny(keyNo byte, key []byte) error {
	if h.ev2 {
		return h.authEV2(keyNo, key, true)
	}
	return h.authEV1(keyNo, key)
}

// zeroRand is an endless reader of a repeating byte (deterministic RndA).
type zeroRand byte

func (z zeroRand) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(z) + byte(i)
	}
	return len(p), nil
}

var errStatus = errors.New("card status")

type statusErr byte

func (s statusErr) Error() string { return fmt.Sprintf("card status %02X", byte(s)) }
func (s statusErr) Unwrap() error { return errStatus }

func newHost(t testing.TB, c *Card) *testHost { return &testHost{t: t, c: c} }

// frame sends one native frame and returns status and data.
func (h *testHost) frame(code byte, data []byte) (byte, []byte, error) {
	apdu, err := desfire.WrapNative(code, data)
	if err != nil {
		return 0, nil, err
	}
	r, err := h.c.Transmit(context.Background(), apdu)
	if err != nil {
		return 0, nil, err
	}
	st, d, err := desfire.SplitResponse(r)
	return st, d, err
}

// exchange sends a whole payload with additional frames both ways.
func (h *testHost) exchange(code byte, payload []byte) (byte, []byte, error) {
	const mf = DefaultMaxFrame
	first := payload
	if len(first) > mf {
		first = payload[:mf]
	}
	st, d, err := h.frame(code, first)
	if err != nil {
		return 0, nil, err
	}
	rest := payload[len(first):]
	for len(rest) > 0 {
		if st != desfire.StatusAdditionalFrame {
			return st, d, nil
		}
		n := min(len(rest), mf)
		if st, d, err = h.frame(0xAF, rest[:n]); err != nil {
			return 0, nil, err
		}
		rest = rest[n:]
	}
	all := append([]byte(nil), d...)
	for st == desfire.StatusAdditionalFrame {
		if st, d, err = h.frame(0xAF, nil); err != nil {
			return 0, nil, err
		}
		all = append(all, d...)
	}
	return st, all, nil
}

func (h *testHost) authEV1(keyNo byte, key []byte) error {
	h.kind = 0
	st, encB, err := h.frame(0xAA, []byte{keyNo})
	if err != nil || st != 0xAF {
		return fmt.Errorf("auth EV1 part 1: %v %w", err, statusErr(st))
	}
	rndB, _ := dfcrypto.DecryptCBC(key, make([]byte, 16), encB)
	rndA := bytes.Repeat([]byte{0x5A}, 16)
	ct, _ := dfcrypto.EncryptCBC(key, encB, append(append([]byte(nil), rndA...), dfcrypto.RotL(rndB)...))
	st, encA, err := h.frame(0xAF, ct)
	if err != nil || st != 0 {
		return fmt.Errorf("auth EV1 part 2: %v %w", err, statusErr(st))
	}
	got, _ := dfcrypto.DecryptCBC(key, ct[16:], encA)
	if !bytes.Equal(got, dfcrypto.RotL(rndA)) {
		return errors.New("auth EV1: wrong RndA'")
	}
	h.kind, h.keyNo = kindEV1, keyNo
	h.key = append(append(append(append([]byte(nil), rndA[:4]...), rndB[:4]...), rndA[12:]...), rndB[12:]...)
	h.iv = make([]byte, 16)
	return nil
}

func (h *testHost) authEV2(keyNo byte, key []byte, first bool) error {
	code, p := byte(0x71), []byte{keyNo, 0x00}
	if !first {
		code, p = 0x77, []byte{keyNo}
	}
	st, encB, err := h.frame(code, p)
	if err != nil || st != 0xAF {
		h.kind = 0
		return fmt.Errorf("auth EV2 part 1: %v %w", err, statusErr(st))
	}
	rndB, _ := dfcrypto.DecryptCBC(key, make([]byte, 16), encB)
	rndA := bytes.Repeat([]byte{0xA5}, 16)
	ct, _ := dfcrypto.EncryptCBC(key, make([]byte, 16), append(append([]byte(nil), rndA...), dfcrypto.RotL(rndB)...))
	st, resp, err := h.frame(0xAF, ct)
	if err != nil || st != 0 {
		h.kind = 0
		return fmt.Errorf("auth EV2 part 2: %v %w", err, statusErr(st))
	}
	pt, _ := dfcrypto.DecryptCBC(key, make([]byte, 16), resp)
	if first {
		h.ti, h.ctr = pt[:4], 0
		pt = pt[4:]
	}
	if !bytes.Equal(pt[:16], dfcrypto.RotL(rndA)) {
		return errors.New("auth EV2: wrong RndA'")
	}
	h.enc, h.mac = ev2SessionKeys(key, rndA, rndB)
	h.kind, h.keyNo = kindEV2, keyNo
	return nil
}

// cmd seals, sends and verifies one command.
func (h *testHost) cmd(code byte, header, data []byte, mode, respMode desfire.CommMode) ([]byte, error) {
	msg := append(append([]byte{code}, header...), data...)
	payload := append([]byte(nil), header...)
	ends := false
	switch h.kind {
	case 0:
		payload = append(payload, data...)
	case kindEV1:
		switch mode {
		case desfire.CommFull:
			plain := append(append([]byte(nil), data...), dfcrypto.CRC32LE(msg)...)
			if code == 0xC4 {
				plain = data // ChangeKey: caller built the cryptogram
			}
			ct, _ := dfcrypto.EncryptCBC(h.key, h.iv, dfcrypto.PadZero(plain))
			h.iv = ct[len(ct)-16:]
			payload = append(payload, ct...)
		default:
			m, _ := dfcrypto.CMACWithIV(h.key, h.iv, msg)
			h.iv = m
			payload = append(payload, data...)
			if mode == desfire.CommMAC && len(data) > 0 {
				payload = append(payload, m[:8]...)
			}
		}
	case kindEV2:
		s := &session{enc: h.enc, mac: h.mac, ti: h.ti}
		body := data
		if mode == desfire.CommFull && len(data) > 0 {
			body, _ = dfcrypto.EncryptCBC(h.enc, ev2IV(s, 0xA5, 0x5A, h.ctr), dfcrypto.Pad80(data))
		}
		payload = append(payload, body...)
		if mode != desfire.CommPlain {
			payload = append(payload, ev2MAC(s, code, h.ctr, append(append([]byte(nil), header...), body...))...)
		}
	}
	if code == 0xC4 && len(header) == 1 && header[0]&0x3F == h.keyNo {
		ends = true
	}
	st, d, err := h.exchange(code, payload)
	if err != nil {
		return nil, err
	}
	h.last = st
	if st != 0 && st != 0x0C {
		h.kind = 0
		return nil, statusErr(st)
	}
	if ends {
		h.kind = 0
		if len(d) != 0 {
			return nil, errors.New("data after ChangeKey of the session key")
		}
		return nil, nil
	}
	switch h.kind {
	case kindEV1:
		if respMode == desfire.CommFull {
			pt, err := dfcrypto.DecryptCBC(h.key, h.iv, d)
			if err != nil {
				return nil, err
			}
			h.iv = d[len(d)-16:]
			n, ok := ev1RespLength(pt) // the CRC covers data ‖ status
			if !ok {
				return nil, errors.New("EV1 response CRC")
			}
			return pt[:n], nil
		}
		if len(d) < 8 {
			return nil, errors.New("EV1 response without CMAC")
		}
		body := d[:len(d)-8]
		m, _ := dfcrypto.CMACWithIV(h.key, h.iv, append(append([]byte(nil), body...), st))
		if !bytes.Equal(m[:8], d[len(d)-8:]) {
			return nil, errors.New("EV1 response CMAC")
		}
		h.iv = m
		return body, nil
	case kindEV2:
		s := &session{enc: h.enc, mac: h.mac, ti: h.ti}
		h.ctr++
		if respMode == desfire.CommPlain {
			return d, nil
		}
		if len(d) < 8 {
			return nil, errors.New("EV2 response without MAC")
		}
		body := d[:len(d)-8]
		if !bytes.Equal(ev2MAC(s, st, h.ctr, body), d[len(d)-8:]) {
			return nil, errors.New("EV2 response MAC")
		}
		if respMode == desfire.CommFull && len(body) > 0 {
			pt, _ := dfcrypto.DecryptCBC(h.enc, ev2IV(s, 0x5A, 0xA5, h.ctr), body)
			return dfcrypto.Unpad80(pt)
		}
		return body, nil
	}
	return d, nil
}

// ev1RespLength finds n with pt = data ‖ CRC32(data ‖ 00) ‖ zeros.
func ev1RespLength(pt []byte) (int, bool) {
	for n := len(pt) - 4; n >= 0 && n >= len(pt)-4-16; n-- {
		pad := pt[n+4:]
		if !bytes.Equal(pad, make([]byte, len(pad))) {
			continue
		}
		if bytes.Equal(dfcrypto.CRC32LE(append(append([]byte(nil), pt[:n]...), 0)), pt[n:n+4]) {
			return n, true
		}
	}
	return 0, false
}

// mgmt is the protection of management commands for the current session.
func (h *testHost) mgmt() desfire.CommMode {
	if h.kind == 0 {
		return desfire.CommPlain
	}
	return desfire.CommMAC
}

func (h *testHost) plain(code byte, header ...byte) ([]byte, error) {
	if code == 0x5A {
		h.kind = 0 // selection ends the session; it is always plain
	}
	return h.cmd(code, header, nil, h.mgmt(), h.mgmt())
}

func (h *testHost) must(b []byte, err error) []byte {
	h.t.Helper()
	if err != nil {
		h.t.Fatal(err)
	}
	return b
}

func le24b(v int) []byte { return []byte{byte(v), byte(v >> 8), byte(v >> 16)} }

func le32b(v int32) []byte { return binary.LittleEndian.AppendUint32(nil, uint32(v)) }

// changeKeyData builds the EV1 or EV2 plaintext of ChangeKey.
func (h *testHost) changeKey(keyNo byte, newKey, oldKey []byte, ver byte) error {
	same := keyNo&0x3F == h.keyNo
	d := append([]byte(nil), newKey...)
	if !same {
		for i := range d {
			d[i] ^= oldKey[i]
		}
	}
	d = append(d, ver)
	if h.kind == kindEV1 {
		d = append(d, dfcrypto.CRC32LE(append([]byte{0xC4, keyNo}, d...))...)
	}
	if !same {
		d = append(d, dfcrypto.CRC32LE(newKey)...)
	}
	_, err := h.cmd(0xC4, []byte{keyNo}, d, desfire.CommFull, desfire.CommMAC)
	return err
}
