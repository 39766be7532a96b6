package cardsim

import (
	"bytes"
	"io"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/desfire/dfcrypto"
)

const (
	genEV1 = 1
	genEV2 = 2
)

// authState is an established session, seen from the card.
type authState struct {
	gen   int
	keyNo byte
	// EV1
	key []byte
	iv  []byte
	// EV2
	ti     []byte
	ctr    uint16
	enc    []byte
	macKey []byte
}

type pendingAuth struct {
	gen      int
	nonFirst bool
	keyNo    byte
	key      []byte
	rndB     []byte
	encRndB  []byte
	pcdCaps  []byte
}

func (c *Card) keyOf(no byte) (*key, byte) {
	a := c.picc
	if c.cur != nil {
		a = c.cur
	}
	if int(no) >= len(a.keys) {
		return nil, desfire.StatusNoSuchKey
	}
	return &a.keys[no], desfire.StatusOK
}

// authFirst handles the first frame of AuthenticateAES (AA),
// AuthenticateEV2First (71) and AuthenticateEV2NonFirst (77).
func (c *Card) authFirst(code byte, data []byte) (byte, []byte) {
	if len(data) < 1 {
		return desfire.StatusLengthError, nil
	}
	keyNo := data[0]
	p := &pendingAuth{keyNo: keyNo}
	switch code {
	case 0xAA:
		if len(data) != 1 {
			return desfire.StatusLengthError, nil
		}
		p.gen = genEV1
	case 0x71:
		if len(data) < 2 || int(data[1]) != len(data)-2 || data[1] > 6 {
			return desfire.StatusLengthError, nil
		}
		p.gen, p.pcdCaps = genEV2, append([]byte(nil), data[2:]...)
	case 0x77:
		if len(data) != 1 {
			return desfire.StatusLengthError, nil
		}
		if c.auth == nil || c.auth.gen != genEV2 {
			return desfire.StatusPermissionDenied, nil
		}
		p.gen, p.nonFirst = genEV2, true
	}
	k, st := c.keyOf(keyNo)
	if st != desfire.StatusOK {
		return st, nil
	}
	prev := c.auth
	c.auth = nil
	if c.cur != nil {
		c.cur.abort() // a new authentication ends the open transaction
	}
	p.key = append([]byte(nil), k.value[:]...)
	p.rndB = make([]byte, 16)
	if _, err := io.ReadFull(c.rnd, p.rndB); err != nil {
		return desfire.StatusPICCIntegrityError, nil
	}
	enc, _ := dfcrypto.EncryptCBC(p.key, make([]byte, 16), p.rndB)
	p.encRndB = enc
	if p.nonFirst {
		c.auth = prev // kept until the second frame replaces it
	}
	c.pending = p
	return desfire.StatusAdditionalFrame, enc
}

// authSecond checks the reader's cryptogram and proves the card.
func (c *Card) authSecond(data []byte) (byte, []byte) {
	p := c.pending
	c.pending = nil
	prev := c.auth
	c.auth = nil
	if len(data) != 32 {
		return desfire.StatusLengthError, nil
	}
	iv := make([]byte, 16)
	if p.gen == genEV1 {
		iv = p.encRndB
	}
	plain, _ := dfcrypto.DecryptCBC(p.key, iv, data)
	rndA, rotB := plain[:16], plain[16:]
	if !bytes.Equal(rotB, dfcrypto.RotL(p.rndB)) {
		return desfire.StatusAuthenticationError, nil
	}
	switch {
	case p.gen == genEV1:
		proof, _ := dfcrypto.EncryptCBC(p.key, data[16:], dfcrypto.RotL(rndA))
		sk := make([]byte, 0, 16)
		sk = append(append(append(append(sk, rndA[:4]...), p.rndB[:4]...), rndA[12:]...), p.rndB[12:]...)
		c.auth = &authState{gen: genEV1, keyNo: p.keyNo, key: sk, iv: make([]byte, 16)}
		return desfire.StatusOK, proof
	case p.nonFirst:
		enc, mac, err := desfire.EV2SessionKeys(p.key, rndA, p.rndB)
		if err != nil {
			return desfire.StatusPICCIntegrityError, nil
		}
		proof, _ := dfcrypto.EncryptCBC(p.key, make([]byte, 16), dfcrypto.RotL(rndA))
		c.auth = &authState{gen: genEV2, keyNo: p.keyNo, ti: prev.ti, ctr: prev.ctr, enc: enc, macKey: mac}
		return desfire.StatusOK, proof
	default:
		ti := make([]byte, 4)
		if _, err := io.ReadFull(c.rnd, ti); err != nil {
			return desfire.StatusPICCIntegrityError, nil
		}
		enc, mac, err := desfire.EV2SessionKeys(p.key, rndA, p.rndB)
		if err != nil {
			return desfire.StatusPICCIntegrityError, nil
		}
		resp := append(append([]byte(nil), ti...), dfcrypto.RotL(rndA)...)
		resp = append(resp, make([]byte, 12)...) // PDcap2, PCDcap2
		proof, _ := dfcrypto.EncryptCBC(p.key, make([]byte, 16), resp)
		c.auth = &authState{gen: genEV2, keyNo: p.keyNo, ti: ti, enc: enc, macKey: mac}
		return desfire.StatusOK, proof
	}
}
