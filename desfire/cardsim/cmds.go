package cardsim

import (
	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/desfire/dfcrypto"
)

const (
	ok       = desfire.StatusOK
	accFree  = 0x0E
	accNever = 0x0F
)

func u24(b []byte) int { return int(b[0]) | int(b[1])<<8 | int(b[2])<<16 }

// authMode is the protection of commands that are MACed when a session
// exists (admin commands, commit, abort).
func (c *Card) authMode() desfire.CommMode {
	if c.auth != nil {
		return desfire.CommMAC
	}
	return desfire.CommPlain
}

// dispatch runs one complete native command.
func (c *Card) dispatch(code byte, body []byte) (byte, []byte) {
	switch code {
	case 0xAA, 0x71, 0x77:
		return c.authFirst(code, body)
	case desfire.CmdSelectApplication:
		return c.selectApp(body)
	case desfire.CmdGetVersion:
		if len(body) != 0 {
			return desfire.StatusLengthError, nil
		}
		v := []byte{0x04, 0x01, 0x01, 0x33, 0x00, 0x1A, 0x05, 0x04, 0x01, 0x01, 0x03, 0x00, 0x1A, 0x05}
		v = append(append(v, c.uid...), 0, 0, 0, 0, 0, 0x26, 0x25)
		return ok, v
	}
	if code == desfire.CmdGetKeyVersion {
		x, st := c.unwrap(code, body, 1, c.authMode(), 0, 0)
		if st != ok || len(x.data) != 0 {
			return orLen(st), nil
		}
		k, st := c.keyOf(x.header[0])
		if st != ok {
			return st, nil
		}
		return ok, c.wrap([]byte{k.version}, c.authMode())
	}
	if code == desfire.CmdGetCardUID {
		if c.auth == nil {
			return desfire.StatusAuthenticationError, nil
		}
		if _, st := c.unwrap(code, body, 0, desfire.CommMAC, 0, 0); st != ok {
			return st, nil
		}
		return ok, c.wrap(c.uid, desfire.CommFull)
	}
	if c.cur == nil {
		return c.piccCommand(code, body)
	}
	return c.appCommand(code, body)
}

func orLen(st byte) byte {
	if st == ok {
		return desfire.StatusLengthError
	}
	return st
}

func (c *Card) selectApp(body []byte) (byte, []byte) {
	if len(body) != 3 {
		return desfire.StatusLengthError, nil
	}
	aid := uint32(body[0]) | uint32(body[1])<<8 | uint32(body[2])<<16
	if c.cur != nil {
		c.cur.abort()
	}
	c.auth, c.pending = nil, nil
	if aid == 0 {
		c.cur = nil
		return ok, nil
	}
	a, found := c.apps[aid]
	if !found {
		c.cur = nil
		return desfire.StatusApplicationNotFound, nil
	}
	c.cur = a
	return ok, nil
}

func (c *Card) needMaster() byte {
	if c.auth == nil {
		return desfire.StatusAuthenticationError
	}
	if c.auth.keyNo != 0 {
		return desfire.StatusPermissionDenied
	}
	return ok
}

// piccCommand handles PICC-level (AID 000000) commands.
func (c *Card) piccCommand(code byte, body []byte) (byte, []byte) {
	switch code {
	case desfire.CmdGetApplicationIDs:
		if _, st := c.unwrap(code, body, 0, c.authMode(), 0, 0); st != ok {
			return st, nil
		}
		var out []byte
		for aid := range c.apps {
			out = append(out, byte(aid), byte(aid>>8), byte(aid>>16))
		}
		return ok, c.wrap(out, c.authMode())
	case desfire.CmdCreateApplication:
		x, st := c.unwrap(code, body, 5, c.authMode(), 0, 0)
		if st != ok || len(x.data) != 0 {
			return orLen(st), nil
		}
		if st := c.needMaster(); st != ok && c.picc.keySett1&0x04 == 0 {
			return st, nil
		}
		aid := uint32(x.header[0]) | uint32(x.header[1])<<8 | uint32(x.header[2])<<16
		if aid == 0 {
			return desfire.StatusParameterError, nil
		}
		if _, dup := c.apps[aid]; dup {
			return desfire.StatusDuplicateError, nil
		}
		if len(c.apps) >= MaxApps {
			return desfire.StatusOutOfMemory, nil
		}
		ks2 := x.header[4]
		if ks2&0xC0 != 0x80 || ks2&0x0F == 0 || ks2&0x0F > 14 {
			return desfire.StatusParameterError, nil // AES keys only, 1..14
		}
		c.apps[aid] = newApp(aid, x.header[3], ks2)
		return ok, c.wrap(nil, c.authMode())
	case desfire.CmdDeleteApplication:
		x, st := c.unwrap(code, body, 3, c.authMode(), 0, 0)
		if st != ok || len(x.data) != 0 {
			return orLen(st), nil
		}
		if st := c.needMaster(); st != ok {
			return st, nil
		}
		aid := uint32(x.header[0]) | uint32(x.header[1])<<8 | uint32(x.header[2])<<16
		if _, found := c.apps[aid]; !found {
			return desfire.StatusApplicationNotFound, nil
		}
		delete(c.apps, aid)
		return ok, c.wrap(nil, c.authMode())
	case desfire.CmdFormatPICC:
		if _, st := c.unwrap(code, body, 0, c.authMode(), 0, 0); st != ok {
			return st, nil
		}
		if st := c.needMaster(); st != ok {
			return st, nil
		}
		c.apps = map[uint32]*app{}
		return ok, c.wrap(nil, c.authMode())
	case desfire.CmdGetKeySettings:
		return c.getKeySettings(c.picc, code, body)
	case desfire.CmdChangeKey:
		return c.changeKey(c.picc, code, body)
	}
	return desfire.StatusIllegalCommand, nil
}

func (c *Card) getKeySettings(a *app, code byte, body []byte) (byte, []byte) {
	if _, st := c.unwrap(code, body, 0, c.authMode(), 0, 0); st != ok {
		return st, nil
	}
	return ok, c.wrap([]byte{a.keySett1, a.keySett2}, c.authMode())
}

// changeKey handles ChangeKey (Full mode): the authenticated key itself
// (NewKey ‖ KeyVer), or another key ((NewKey ⊕ OldKey) ‖ KeyVer ‖ CRC of
// the new key).
func (c *Card) changeKey(a *app, code byte, body []byte) (byte, []byte) {
	if c.auth == nil {
		return desfire.StatusAuthenticationError, nil
	}
	if len(body) < 1 {
		return desfire.StatusLengthError, nil
	}
	keyNo := body[0] & 0x3F
	if int(keyNo) >= len(a.keys) {
		return desfire.StatusNoSuchKey, nil
	}
	// Only the master key may change keys (key settings change-key access 0).
	if c.auth.keyNo != 0 && c.auth.keyNo != keyNo {
		return desfire.StatusPermissionDenied, nil
	}
	same := keyNo == c.auth.keyNo
	trailer := 4
	if same {
		trailer = 0
	}
	x, st := c.unwrap(code, body, 1, desfire.CommFull, 17, trailer)
	if st != ok {
		return st, nil
	}
	if c.auth.gen == genEV2 && !same {
		if len(x.data) != 21 {
			return desfire.StatusLengthError, nil
		}
	} else if len(x.data) != 17+trailer {
		return desfire.StatusLengthError, nil
	}
	nk := append([]byte(nil), x.data[:16]...)
	if !same {
		old := a.keys[keyNo].value
		for i := range nk {
			nk[i] ^= old[i]
		}
		if !equalCRC(x.data[17:21], nk) {
			return desfire.StatusIntegrityError, nil
		}
	}
	var resp []byte
	if same {
		resp = nil // the session ends; the answer carries no MAC
		if c.auth.gen == genEV2 {
			c.auth.ctr++
		}
	} else {
		resp = c.wrap(nil, desfire.CommMAC)
	}
	copy(a.keys[keyNo].value[:], nk)
	a.keys[keyNo].version = x.data[16]
	if same {
		c.auth = nil
	}
	return ok, resp
}

func equalCRC(crc, key []byte) bool {
	return dfcrypto.Equal(crc, dfcrypto.CRC32LE(key))
}
