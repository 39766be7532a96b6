package simcard

// Card side of the secure messaging, written from the public descriptions
// (DESFire EV1: libfreefare mifare_desfire_crypto.c behaviour and the Elmue
// EV1 traces; EV2: MF2DLHX0 section 9, NXP AN12196 and AN12343), in the
// reverse direction of the host: the card verifies command MACs, deciphers
// command data, and MACs or enciphers its answers.
//
// EV1 (AuthenticateAES): one running 16-byte IV, zero after
// authentication. Every command while authenticated is CMACed with the
// IV (the CMAC becomes the IV); in MAC mode the first 8 bytes are sent
// after the data of commands that carry data. Full-mode command data is
// data ‖ CRC32(Cmd ‖ Header ‖ Data) ‖ zero padding, AES-CBC with the IV
// (the last cipher block becomes the IV). Answers with status 00 carry
// CMAC(IV, Data ‖ 00)[0:8] in Plain and MAC modes, or are enciphered as
// Data ‖ CRC32(Data ‖ 00) ‖ zero padding in Full mode.
//
// EV2 (AuthenticateEV2First/NonFirst): TI and a 16-bit command counter.
// Command MAC = MACt(SesMAC, Cmd ‖ CmdCtr ‖ TI ‖ Header ‖ [E]Data), answer
// MAC = MACt(SesMAC, 00 ‖ CmdCtr+1 ‖ TI ‖ [E]Data); Full data is padded
// with 80 00.. and enciphered with IV = E(SesENC, A5 5A ‖ TI ‖ CmdCtr ‖ 0⁸)
// (commands) or E(SesENC, 5A A5 ‖ TI ‖ CmdCtr+1 ‖ 0⁸) (answers). The
// counter advances after every successful command, Plain ones included.

import (
	"bytes"
	"encoding/binary"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/desfire/dfcrypto"
)

const (
	kindEV1 = 1
	kindEV2 = 2
)

// session is the card's authentication state.
type session struct {
	kind  int
	keyNo byte
	// EV1
	key []byte
	iv  []byte
	// EV2
	enc, mac []byte
	ti       []byte
	ctr      uint16
}

// authStep is an authentication waiting for its second frame.
type authStep struct {
	code   byte
	keyNo  byte
	key    []byte
	rndB   []byte
	encB   []byte
	pcdCap []byte
}

const (
	blk    = dfcrypto.BlockSize
	macLen = 8
)

// cmdAuthenticate answers the first frame of AA, 71 and 77.
func (c *Card) cmdAuthenticate(code byte, p []byte) result {
	prev := c.sess
	c.sess = nil
	c.discardTxn()
	if len(p) < 1 {
		return fail(desfire.StatusLengthError)
	}
	keyNo := p[0]
	var pcdCap []byte
	switch code {
	case cmdAuthEV2First:
		if len(p) < 2 || int(p[1]) > 6 || len(p) != 2+int(p[1]) {
			return fail(desfire.StatusLengthError)
		}
		pcdCap = append([]byte(nil), p[2:]...)
	default:
		if len(p) != 1 {
			return fail(desfire.StatusLengthError)
		}
	}
	if code == cmdAuthEV2NonFirst && (prev == nil || prev.kind != kindEV2) {
		return fail(desfire.StatusAuthenticationError)
	}
	k := int(keyNo)
	if c.sel.isPICC() {
		k = int(keyNo & 0x3F)
	}
	if k >= len(c.sel.keys) {
		return fail(desfire.StatusNoSuchKey)
	}
	rndB, err := c.random(blk)
	if err != nil {
		return fail(desfire.StatusMemoryError)
	}
	kv := c.sel.keys[k].value[:]
	encB, err := dfcrypto.EncryptCBC(kv, make([]byte, blk), rndB)
	if err != nil {
		return fail(desfire.StatusMemoryError)
	}
	c.sess = prev // NonFirst keeps TI and counter until it completes
	if code != cmdAuthEV2NonFirst {
		c.sess = nil
	}
	c.pend = pending{kind: pendAuth, auth: &authStep{code: code, keyNo: byte(k), key: append([]byte(nil), kv...), rndB: rndB, encB: encB, pcdCap: pcdCap}}
	return result{status: desfire.StatusAdditionalFrame, data: encB}
}

// authPart2 checks the PCD's proof and answers with the card's.
func (c *Card) authPart2(a *authStep, p []byte) result {
	prev := c.sess
	c.sess = nil
	if len(p) != 2*blk {
		return fail(desfire.StatusLengthError)
	}
	iv := make([]byte, blk)
	if a.code == cmdAuthAES {
		iv = a.encB
	}
	pt, err := dfcrypto.DecryptCBC(a.key, iv, p)
	if err != nil {
		return fail(desfire.StatusAuthenticationError)
	}
	rndA, rndB2 := pt[:blk], pt[blk:]
	if !dfcrypto.Equal(rndB2, dfcrypto.RotL(a.rndB)) {
		return fail(desfire.StatusAuthenticationError)
	}
	rotA := dfcrypto.RotL(rndA)
	switch a.code {
	case cmdAuthAES:
		out, err := dfcrypto.EncryptCBC(a.key, p[blk:], rotA)
		if err != nil {
			return fail(desfire.StatusAuthenticationError)
		}
		sk := make([]byte, 0, blk)
		sk = append(sk, rndA[0:4]...)
		sk = append(sk, a.rndB[0:4]...)
		sk = append(sk, rndA[12:16]...)
		sk = append(sk, a.rndB[12:16]...)
		c.sess = &session{kind: kindEV1, keyNo: a.keyNo, key: sk, iv: make([]byte, blk)}
		return result{status: desfire.StatusOK, data: out}
	case cmdAuthEV2First, cmdAuthEV2NonFirst:
		enc, mac := ev2SessionKeys(a.key, rndA, a.rndB)
		s := &session{kind: kindEV2, keyNo: a.keyNo, enc: enc, mac: mac}
		var plain []byte
		if a.code == cmdAuthEV2First {
			ti, err := c.random(4)
			if err != nil {
				return fail(desfire.StatusMemoryError)
			}
			s.ti = ti
			pcd := make([]byte, 6)
			copy(pcd, a.pcdCap)
			plain = append(append(append(append([]byte(nil), ti...), rotA...), make([]byte, 6)...), pcd...)
		} else {
			if prev == nil || prev.kind != kindEV2 {
				return fail(desfire.StatusAuthenticationError)
			}
			s.ti, s.ctr = prev.ti, prev.ctr
			plain = rotA
		}
		out, err := dfcrypto.EncryptCBC(a.key, make([]byte, blk), plain)
		if err != nil || enc == nil {
			return fail(desfire.StatusAuthenticationError)
		}
		c.sess = s
		return result{status: desfire.StatusOK, data: out}
	}
	return fail(desfire.StatusIllegalCommand)
}

// ev2SessionKeys derives SesAuthENCKey and SesAuthMACKey (MF2DLHX0 9.2.7):
// SV = A5 5A / 5A A5 ‖ 00 01 00 80 ‖ RndA[0:2] ‖ (RndA[2:8] ⊕ RndB[0:6]) ‖
// RndB[6:16] ‖ RndA[8:16] (bytes in transmission order).
func ev2SessionKeys(k, rndA, rndB []byte) (enc, mac []byte) {
	sv := make([]byte, 0, 2*blk)
	sv = append(sv, 0xA5, 0x5A, 0x00, 0x01, 0x00, 0x80)
	sv = append(sv, rndA[0:2]...)
	for i := 0; i < 6; i++ {
		sv = append(sv, rndA[2+i]^rndB[i])
	}
	sv = append(sv, rndB[6:16]...)
	sv = append(sv, rndA[8:16]...)
	enc, err := dfcrypto.CMAC(k, sv)
	if err != nil {
		return nil, nil
	}
	sv[0], sv[1] = 0x5A, 0xA5
	mac, err = dfcrypto.CMAC(k, sv)
	if err != nil {
		return nil, nil
	}
	return enc, mac
}

// ev2IV is E(SesENC, l0 l1 ‖ TI ‖ ctr ‖ 0⁸).
func ev2IV(s *session, l0, l1 byte, ctr uint16) []byte {
	in := make([]byte, blk)
	in[0], in[1] = l0, l1
	copy(in[2:6], s.ti)
	binary.LittleEndian.PutUint16(in[6:8], ctr)
	out, err := dfcrypto.EncryptBlock(s.enc, in)
	if err != nil {
		return make([]byte, blk)
	}
	return out
}

// ev2CmdMAC is MACt(SesMAC, code ‖ ctr ‖ TI ‖ body).
func ev2MAC(s *session, first byte, ctr uint16, body []byte) []byte {
	in := make([]byte, 0, 7+len(body))
	in = append(in, first)
	in = binary.LittleEndian.AppendUint16(in, ctr)
	in = append(in, s.ti...)
	in = append(in, body...)
	m, err := dfcrypto.MACt(s.mac, in)
	if err != nil {
		return nil
	}
	return m
}

// cmdIn describes how a command's payload is protected.
type cmdIn struct {
	hdr  int              // plain header bytes
	mode desfire.CommMode // protection of the data part
	// ev1DataLen is the plaintext data length of an EV1 Full command (the
	// card knows it from the header or the command); -1 searches for the
	// length whose CRC verifies.
	ev1DataLen int
	// ev1MAC: in EV1 MAC mode a MAC trails the data (commands with data).
	ev1MAC bool
	// rawEV1 returns the deciphered EV1 Full plaintext unchecked (ChangeKey
	// checks its own CRCs).
	rawEV1 bool
}

// open removes the secure messaging from a command payload and returns
// header and plaintext data, or a status. Without a session, p is plain.
func (c *Card) open(code byte, p []byte, in cmdIn) (header, data []byte, st byte) {
	if len(p) < in.hdr {
		return nil, nil, desfire.StatusLengthError
	}
	header, body := p[:in.hdr], p[in.hdr:]
	s := c.sess
	if s == nil {
		return header, body, desfire.StatusOK
	}
	msgHead := append([]byte{code}, header...)
	switch s.kind {
	case kindEV1:
		switch in.mode {
		case desfire.CommPlain, desfire.CommMAC:
			var mac []byte
			if in.mode == desfire.CommMAC && in.ev1MAC {
				if len(body) < macLen {
					return nil, nil, desfire.StatusLengthError
				}
				body, mac = body[:len(body)-macLen], body[len(body)-macLen:]
			}
			full, err := dfcrypto.CMACWithIV(s.key, s.iv, append(msgHead, body...))
			if err != nil {
				return nil, nil, desfire.StatusIntegrityError
			}
			if mac != nil && !dfcrypto.Equal(full[:macLen], mac) {
				return nil, nil, desfire.StatusIntegrityError
			}
			s.iv = full
			return header, body, desfire.StatusOK
		case desfire.CommFull:
			if len(body) == 0 || len(body)%blk != 0 {
				return nil, nil, desfire.StatusLengthError
			}
			pt, err := dfcrypto.DecryptCBC(s.key, s.iv, body)
			if err != nil {
				return nil, nil, desfire.StatusIntegrityError
			}
			s.iv = append([]byte(nil), body[len(body)-blk:]...)
			if in.rawEV1 {
				return header, pt, desfire.StatusOK
			}
			n, ok := ev1CRCLength(pt, msgHead, in.ev1DataLen)
			if !ok {
				return nil, nil, desfire.StatusIntegrityError
			}
			return header, pt[:n], desfire.StatusOK
		}
	case kindEV2:
		switch in.mode {
		case desfire.CommPlain:
			return header, body, desfire.StatusOK
		case desfire.CommMAC, desfire.CommFull:
			if len(body) < macLen {
				return nil, nil, desfire.StatusLengthError
			}
			body, mac := body[:len(body)-macLen], body[len(body)-macLen:]
			want := ev2MAC(s, code, s.ctr, append(append([]byte(nil), header...), body...))
			if want == nil || !dfcrypto.Equal(want, mac) {
				return nil, nil, desfire.StatusIntegrityError
			}
			if in.mode == desfire.CommMAC || len(body) == 0 {
				return header, body, desfire.StatusOK
			}
			if len(body)%blk != 0 {
				return nil, nil, desfire.StatusLengthError
			}
			pt, err := dfcrypto.DecryptCBC(s.enc, ev2IV(s, 0xA5, 0x5A, s.ctr), body)
			if err != nil {
				return nil, nil, desfire.StatusIntegrityError
			}
			d, err := dfcrypto.Unpad80(pt)
			if err != nil {
				return nil, nil, desfire.StatusIntegrityError
			}
			return header, d, desfire.StatusOK
		}
	}
	return nil, nil, desfire.StatusParameterError
}

// ev1CRCLength finds the data length n of an EV1 Full plaintext
// data ‖ CRC32(head ‖ data) ‖ zero padding (want < 0: search).
func ev1CRCLength(pt, head []byte, want int) (int, bool) {
	check := func(n int) bool {
		if n < 0 || n+4 > len(pt) || len(pt)-(n+4) >= blk {
			return false
		}
		for _, b := range pt[n+4:] {
			if b != 0 {
				return false
			}
		}
		crc := dfcrypto.CRC32LE(append(append([]byte(nil), head...), pt[:n]...))
		return bytes.Equal(crc, pt[n:n+4])
	}
	if want >= 0 {
		return want, check(want)
	}
	found := -1
	for n := len(pt) - 4; n >= 0 && n >= len(pt)-4-blk; n-- {
		if check(n) {
			if found >= 0 {
				return 0, false // ambiguous
			}
			found = n
		}
	}
	return found, found >= 0
}

// seal protects a successful answer's data in mode and advances the
// session (EV1 IV, EV2 counter). Without a session the data is plain.
func (c *Card) seal(data []byte, mode desfire.CommMode) []byte {
	return c.sealStatus(desfire.StatusOK, data, mode)
}

// sealStatus is seal for an answer with a success-class status st (00, or
// 0C NO_CHANGES), which the answer MAC covers.
func (c *Card) sealStatus(st byte, data []byte, mode desfire.CommMode) []byte {
	s := c.sess
	if s == nil {
		return data
	}
	switch s.kind {
	case kindEV1:
		switch mode {
		case desfire.CommFull:
			plain := append(append([]byte(nil), data...), dfcrypto.CRC32LE(append(append([]byte(nil), data...), st))...)
			ct, err := dfcrypto.EncryptCBC(s.key, s.iv, dfcrypto.PadZero(plain))
			if err != nil {
				return nil
			}
			s.iv = append([]byte(nil), ct[len(ct)-blk:]...)
			return ct
		default:
			full, err := dfcrypto.CMACWithIV(s.key, s.iv, append(append([]byte(nil), data...), st))
			if err != nil {
				return nil
			}
			s.iv = full
			return append(append([]byte(nil), data...), full[:macLen]...)
		}
	case kindEV2:
		s.ctr++
		switch mode {
		case desfire.CommPlain:
			return data
		case desfire.CommMAC:
			return append(append([]byte(nil), data...), ev2MAC(s, st, s.ctr, data)...)
		case desfire.CommFull:
			body := data
			if len(data) > 0 {
				ct, err := dfcrypto.EncryptCBC(s.enc, ev2IV(s, 0x5A, 0xA5, s.ctr), dfcrypto.Pad80(data))
				if err != nil {
					return nil
				}
				body = ct
			}
			return append(append([]byte(nil), body...), ev2MAC(s, st, s.ctr, body)...)
		}
	}
	return data
}

// ok seals data and returns a successful result.
func (c *Card) ok(data []byte, mode desfire.CommMode) result {
	return result{status: desfire.StatusOK, data: c.seal(data, mode)}
}

// mgmtMode is the protection of a non-file command when authenticated:
// EV1 chains its CMAC without sending it; EV2 sends the MAC (MF2DLHX0
// command table: CommMode.MAC for management commands).
func (c *Card) mgmtMode() desfire.CommMode {
	if c.sess == nil {
		return desfire.CommPlain
	}
	return desfire.CommMAC
}

// fullLen is the payload length of Full data of n plaintext bytes after
// a header, for the current session (used to know when chained frames are
// complete).
func (c *Card) protectedLen(n int, mode desfire.CommMode) int {
	s := c.sess
	if s == nil || mode == desfire.CommPlain {
		return n
	}
	switch {
	case s.kind == kindEV1 && mode == desfire.CommMAC:
		return n + macLen
	case s.kind == kindEV1:
		return (n + 4 + blk - 1) / blk * blk
	case mode == desfire.CommMAC:
		return n + macLen
	}
	return (n/blk+1)*blk + macLen
}
