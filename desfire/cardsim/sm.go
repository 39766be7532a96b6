package cardsim

import (
	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/desfire/dfcrypto"
)

// in is a command after the card's secure messaging: header and plain data.
type in struct {
	code   byte
	header []byte
	data   []byte
}

// unwrap verifies and deciphers a command. hdr is the header length; mode
// the protection the command needs; dataLen the plain data length of a
// Full-mode command (-1: from padding, EV2 only; for EV1 the handler's
// layout gives it). trailer is extra enciphered bytes after the EV1 CRC
// (ChangeKey of another key).
func (c *Card) unwrap(code byte, body []byte, hdr int, mode desfire.CommMode, dataLen, trailer int) (in, byte) {
	if len(body) < hdr {
		return in{}, desfire.StatusLengthError
	}
	x := in{code: code, header: body[:hdr]}
	rest := body[hdr:]
	a := c.auth
	if a == nil {
		if mode != desfire.CommPlain {
			return in{}, desfire.StatusAuthenticationError
		}
		x.data = rest
		return x, desfire.StatusOK
	}
	if a.gen == genEV1 {
		return c.unwrapEV1(x, rest, mode, dataLen, trailer)
	}
	return c.unwrapEV2(x, rest, mode)
}

func (c *Card) unwrapEV1(x in, rest []byte, mode desfire.CommMode, dataLen, trailer int) (in, byte) {
	a := c.auth
	msg := func(data []byte) []byte {
		return append(append([]byte{x.code}, x.header...), data...)
	}
	switch {
	case mode == desfire.CommFull && len(rest) > 0:
		if len(rest)%16 != 0 {
			return in{}, desfire.StatusLengthError
		}
		pt, _ := dfcrypto.DecryptCBC(a.key, a.iv, rest)
		a.iv = append([]byte(nil), rest[len(rest)-16:]...)
		if dataLen < 0 || dataLen+4+trailer > len(pt) {
			return in{}, desfire.StatusLengthError
		}
		data := pt[:dataLen]
		if !dfcrypto.Equal(pt[dataLen:dataLen+4], dfcrypto.CRC32LE(msg(data))) {
			return in{}, desfire.StatusIntegrityError
		}
		for _, b := range pt[dataLen+4+trailer:] {
			if b != 0 {
				return in{}, desfire.StatusIntegrityError
			}
		}
		x.data = append(data[:dataLen:dataLen], pt[dataLen+4:dataLen+4+trailer]...)
		return x, desfire.StatusOK
	case mode == desfire.CommMAC && len(rest) > 0:
		if len(rest) < 8 {
			return in{}, desfire.StatusLengthError
		}
		data, mac := rest[:len(rest)-8], rest[len(rest)-8:]
		full, _ := dfcrypto.CMACWithIV(a.key, a.iv, msg(data))
		if !dfcrypto.Equal(full[:8], mac) {
			return in{}, desfire.StatusIntegrityError
		}
		a.iv, x.data = full, data
		return x, desfire.StatusOK
	default:
		full, _ := dfcrypto.CMACWithIV(a.key, a.iv, msg(rest))
		a.iv, x.data = full, rest
		return x, desfire.StatusOK
	}
}

func (c *Card) unwrapEV2(x in, rest []byte, mode desfire.CommMode) (in, byte) {
	a := c.auth
	if mode == desfire.CommPlain {
		x.data = rest
		return x, desfire.StatusOK
	}
	if len(rest) < 8 {
		return in{}, desfire.StatusLengthError
	}
	body, mac := rest[:len(rest)-8], rest[len(rest)-8:]
	want, err := desfire.EV2CommandMAC(a.macKey, x.code, a.ctr, a.ti, x.header, body)
	if err != nil || !dfcrypto.Equal(want, mac) {
		return in{}, desfire.StatusIntegrityError
	}
	if mode == desfire.CommFull && len(body) > 0 {
		if len(body)%16 != 0 {
			return in{}, desfire.StatusLengthError
		}
		iv, _ := desfire.EV2CommandIV(a.enc, a.ti, a.ctr)
		pt, _ := dfcrypto.DecryptCBC(a.enc, iv, body)
		data, err := dfcrypto.Unpad80(pt)
		if err != nil {
			return in{}, desfire.StatusIntegrityError
		}
		x.data = data
		return x, desfire.StatusOK
	}
	x.data = body
	return x, desfire.StatusOK
}

// wrap protects a successful answer. Full mode without data is MACed only.
func (c *Card) wrap(data []byte, mode desfire.CommMode) []byte {
	a := c.auth
	if a == nil {
		return data
	}
	if a.gen == genEV1 {
		if mode == desfire.CommFull && len(data) > 0 {
			plain := append(append([]byte(nil), data...), dfcrypto.CRC32LE(append(append([]byte(nil), data...), 0))...)
			ct, _ := dfcrypto.EncryptCBC(a.key, a.iv, dfcrypto.PadZero(plain))
			a.iv = append([]byte(nil), ct[len(ct)-16:]...)
			return ct
		}
		full, _ := dfcrypto.CMACWithIV(a.key, a.iv, append(append([]byte(nil), data...), 0))
		a.iv = full
		return append(append([]byte(nil), data...), full[:8]...)
	}
	ctr := a.ctr
	a.ctr++
	switch {
	case mode == desfire.CommPlain:
		return data
	case mode == desfire.CommFull && len(data) > 0:
		iv, _ := desfire.EV2ResponseIV(a.enc, a.ti, ctr)
		ct, _ := dfcrypto.EncryptCBC(a.enc, iv, dfcrypto.Pad80(data))
		mac, _ := desfire.EV2ResponseMAC(a.macKey, 0, ctr, a.ti, ct)
		return append(ct, mac...)
	default:
		mac, _ := desfire.EV2ResponseMAC(a.macKey, 0, ctr, a.ti, data)
		return append(append([]byte(nil), data...), mac...)
	}
}
