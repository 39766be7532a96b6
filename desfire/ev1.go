package desfire

import (
	"crypto/rand"
	"fmt"
	"io"

	"github.com/desfire-relay/relay/desfire/dfcrypto"
)

// AuthAES runs DESFire EV1 AuthenticateAES (0xAA): the card sends
// E(K, RndB) under a zero IV; the reader answers E(K, RndA ‖ RotL(RndB))
// continuing the CBC chain from the card's cryptogram; the card proves
// itself with E(K, RotL(RndA)) continuing from the reader's last block.
// Session key: RndA[0:4] ‖ RndB[0:4] ‖ RndA[12:16] ‖ RndB[12:16]; the
// running IV starts at zero (vectors: ev1_aes_auth.json).
type AuthAES struct {
	keyNo byte
	key   []byte
	rnd   io.Reader

	rndA, rndB []byte
	lastBlock  []byte // IV for the card's proof
	ch         *EV1Channel
	finished   bool
}

// NewAuthAES prepares AuthenticateAES with key number keyNo; rnd supplies
// RndA (nil: crypto/rand).
func NewAuthAES(keyNo byte, key []byte, rnd io.Reader) (*AuthAES, error) {
	if len(key) != dfcrypto.KeySize {
		return nil, dfcrypto.ErrKeySize
	}
	if rnd == nil {
		rnd = rand.Reader
	}
	return &AuthAES{keyNo: keyNo, key: append([]byte(nil), key...), rnd: rnd}, nil
}

// Start implements Authenticator.
func (a *AuthAES) Start() (byte, []byte) { return 0xAA, []byte{a.keyNo} }

// Respond implements Authenticator.
func (a *AuthAES) Respond(status byte, data []byte) ([]byte, error) {
	if status != StatusAdditionalFrame {
		return nil, NewStatusError(status)
	}
	if err := exactLen(data, 16); err != nil {
		return nil, fmt.Errorf("AuthenticateAES challenge: %w", err)
	}
	rndB, err := dfcrypto.DecryptCBC(a.key, make([]byte, 16), data)
	if err != nil {
		return nil, err
	}
	rndA := make([]byte, 16)
	if _, err := io.ReadFull(a.rnd, rndA); err != nil {
		return nil, fmt.Errorf("RndA: %w", err)
	}
	plain := append(append([]byte(nil), rndA...), dfcrypto.RotL(rndB)...)
	ct, err := dfcrypto.EncryptCBC(a.key, data, plain)
	if err != nil {
		return nil, err
	}
	a.rndA, a.rndB, a.lastBlock = rndA, rndB, ct[16:]
	sk := make([]byte, 0, 16)
	sk = append(sk, rndA[0:4]...)
	sk = append(sk, rndB[0:4]...)
	sk = append(sk, rndA[12:16]...)
	sk = append(sk, rndB[12:16]...)
	a.ch = newEV1Channel(sk)
	a.ch.awaitAuth = true
	return ct, nil
}

// EarlyChannel implements EarlyChanneler: the card's proof is predictable,
// so commands may be sealed before Finish; their replies wait for it.
func (a *AuthAES) EarlyChannel() (Channel, error) {
	if a.ch == nil {
		return nil, fmt.Errorf("AuthenticateAES: early channel before Respond: %w", ErrParameter)
	}
	return a.ch, nil
}

// Finish implements Authenticator.
func (a *AuthAES) Finish(status byte, data []byte) (Channel, error) {
	if a.ch == nil || a.finished {
		return nil, fmt.Errorf("AuthenticateAES: Finish out of order: %w", ErrParameter)
	}
	a.finished = true
	fail := func(err error) (Channel, error) {
		a.ch.Close()
		return nil, err
	}
	if status != StatusOK {
		return fail(NewStatusError(status))
	}
	if err := exactLen(data, 16); err != nil {
		return fail(fmt.Errorf("AuthenticateAES proof: %w", err))
	}
	want, err := dfcrypto.EncryptCBC(a.key, a.lastBlock, dfcrypto.RotL(a.rndA))
	if err != nil {
		return fail(err)
	}
	if !dfcrypto.Equal(want, data) {
		return fail(ErrRndA)
	}
	a.ch.awaitAuth = false
	return a.ch, nil
}

func exactLen(b []byte, n int) error {
	switch {
	case len(b) < n:
		return ErrShortResponse
	case len(b) > n:
		return ErrLongResponse
	}
	return nil
}

// EV1Channel is DESFire EV1 AES secure messaging: one running IV chained
// through every command and answer after authentication, CMAC (8 bytes
// sent) for MAC mode, CRC32 + zero padding + AES-CBC for Full mode. Plain
// commands are CMACed but the MAC is not sent; answers with status 00
// carry an 8-byte CMAC over data ‖ status in Plain and MAC modes.
type EV1Channel struct {
	key       []byte
	iv        []byte
	err       error
	awaitAuth bool
	blocked   bool // a sealed reply is not predictable and not yet opened
	sealed    int  // replies sealed
	opened    int  // replies opened
}

func newEV1Channel(key []byte) *EV1Channel {
	return &EV1Channel{key: key, iv: make([]byte, 16)}
}

// Generation implements Channel.
func (c *EV1Channel) Generation() string { return "ev1" }

// Err implements Channel.
func (c *EV1Channel) Err() error { return c.err }

// Close implements Channel.
func (c *EV1Channel) Close() {
	if c.err == nil {
		c.err = ErrChannelClosed
	}
	for i := range c.key {
		c.key[i] = 0
	}
}

func (c *EV1Channel) fail(err error) error {
	c.Close()
	return err
}

// EV1CMAC is the EV1 CMAC of msg with the running IV iv (full 16 bytes).
func EV1CMAC(key, iv, msg []byte) ([]byte, error) { return dfcrypto.CMACWithIV(key, iv, msg) }

// Seal implements Channel.
func (c *EV1Channel) Seal(cmd *Command) ([]byte, Reply, error) {
	if c.err != nil {
		return nil, nil, c.err
	}
	if c.blocked {
		return nil, nil, ErrNotPipelinable
	}
	msg := append(append([]byte{cmd.Code}, cmd.Header...), cmd.Data...)
	var payload []byte
	switch cmd.Mode {
	case CommPlain, CommMAC:
		mac, err := EV1CMAC(c.key, c.iv, msg)
		if err != nil {
			return nil, nil, c.fail(err)
		}
		c.iv = mac
		payload = append(append([]byte(nil), cmd.Header...), cmd.Data...)
		// EV1 sends the command MAC only with data (libfreefare: reads
		// and header-only commands are CMACed but the MAC is not sent).
		if cmd.Mode == CommMAC && len(cmd.Data) > 0 {
			payload = append(payload, mac[:8]...)
		}
	case CommFull:
		plain := append(append([]byte(nil), cmd.Data...), dfcrypto.CRC32LE(msg)...)
		plain = append(plain, cmd.ev1Trailer...)
		ct, err := dfcrypto.EncryptCBC(c.key, c.iv, dfcrypto.PadZero(plain))
		if err != nil {
			return nil, nil, c.fail(err)
		}
		c.iv = ct[len(ct)-16:]
		payload = append(append([]byte(nil), cmd.Header...), ct...)
	default:
		return nil, nil, fmt.Errorf("comm mode %d: %w", cmd.Mode, ErrParameter)
	}
	r := &ev1Reply{c: c, cmd: cmd, seq: c.sealed, iv: append([]byte(nil), c.iv...)}
	c.sealed++
	switch {
	case cmd.endsSession:
		c.blocked = true
	case cmd.Predictable:
		next, err := r.predictIV()
		if err != nil {
			return nil, nil, c.fail(err)
		}
		r.predictedIV = next
		c.iv = next
	default:
		c.blocked = true
	}
	return payload, r, nil
}

type ev1Reply struct {
	c           *EV1Channel
	cmd         *Command
	seq         int
	iv          []byte // IV after the command
	predictedIV []byte // set when the answer was predicted
}

// predictIV computes the IV after the predicted answer.
func (r *ev1Reply) predictIV() ([]byte, error) {
	data := r.cmd.Predicted
	switch r.cmd.RespMode {
	case CommPlain, CommMAC:
		return EV1CMAC(r.c.key, r.iv, append(append([]byte(nil), data...), StatusOK))
	case CommFull:
		plain := append(append([]byte(nil), data...), dfcrypto.CRC32LE(append(append([]byte(nil), data...), StatusOK))...)
		ct, err := dfcrypto.EncryptCBC(r.c.key, r.iv, dfcrypto.PadZero(plain))
		if err != nil {
			return nil, err
		}
		return ct[len(ct)-16:], nil
	}
	return nil, ErrParameter
}

// Open implements Reply.
func (r *ev1Reply) Open(status byte, data []byte) ([]byte, error) {
	c := r.c
	if c.err != nil {
		return nil, c.err
	}
	if c.awaitAuth {
		return nil, c.fail(fmt.Errorf("reply before the card's authentication proof: %w", ErrRndA))
	}
	if r.seq != c.opened {
		return nil, c.fail(fmt.Errorf("EV1 reply %d opened out of order (next %d): %w", r.seq, c.opened, ErrParameter))
	}
	c.opened++
	if status != StatusOK {
		return nil, c.fail(NewStatusError(status))
	}
	if r.cmd.endsSession {
		// Changing the authenticated key ends the session: no MAC.
		c.Close()
		if len(data) != 0 {
			return nil, ErrLongResponse
		}
		return data, nil
	}
	var out, next []byte
	switch r.cmd.RespMode {
	case CommPlain, CommMAC:
		if len(data) < 8 {
			return nil, c.fail(ErrShortResponse)
		}
		body, mac := data[:len(data)-8], data[len(data)-8:]
		full, err := EV1CMAC(c.key, r.iv, append(append([]byte(nil), body...), StatusOK))
		if err != nil {
			return nil, c.fail(err)
		}
		if !dfcrypto.Equal(full[:8], mac) {
			return nil, c.fail(ErrResponseMAC)
		}
		out, next = body, full
	case CommFull:
		if len(data) == 0 || len(data)%16 != 0 {
			return nil, c.fail(fmt.Errorf("enciphered answer of %d bytes: %w", len(data), ErrPadding))
		}
		pt, err := dfcrypto.DecryptCBC(c.key, r.iv, data)
		if err != nil {
			return nil, c.fail(err)
		}
		n, err := ev1FindLength(pt, r.cmd.RespLen)
		if err != nil {
			return nil, c.fail(err)
		}
		out, next = pt[:n], append([]byte(nil), data[len(data)-16:]...)
	default:
		return nil, c.fail(ErrParameter)
	}
	if r.cmd.RespLen >= 0 && len(out) != r.cmd.RespLen {
		if len(out) < r.cmd.RespLen {
			return nil, c.fail(ErrShortResponse)
		}
		return nil, c.fail(ErrLongResponse)
	}
	if r.predictedIV != nil {
		if !dfcrypto.Equal(next, r.predictedIV) {
			return nil, c.fail(fmt.Errorf("answer differs from the predicted one: %w", ErrResponseMAC))
		}
	} else {
		c.iv = next
		c.blocked = false
	}
	return out, nil
}

// ev1FindLength returns the data length of a decrypted Full-mode answer:
// data ‖ CRC32(data ‖ 00) ‖ zero padding. With want < 0 it searches for
// the one length whose CRC and padding verify.
func ev1FindLength(pt []byte, want int) (int, error) {
	check := func(n int) bool {
		if n < 0 || n+4 > len(pt) || len(pt)-(n+4) >= 16 {
			return false
		}
		for _, b := range pt[n+4:] {
			if b != 0 {
				return false
			}
		}
		crc := dfcrypto.CRC32LE(append(append([]byte(nil), pt[:n]...), StatusOK))
		return dfcrypto.Equal(crc, pt[n:n+4])
	}
	if want >= 0 {
		if check(want) {
			return want, nil
		}
		return 0, ErrResponseCRC
	}
	found := -1
	for n := len(pt) - 4; n >= 0 && n >= len(pt)-4-15; n-- {
		if check(n) {
			if found >= 0 {
				return 0, fmt.Errorf("ambiguous enciphered answer length: %w", ErrResponseCRC)
			}
			found = n
		}
	}
	if found < 0 {
		return 0, ErrResponseCRC
	}
	return found, nil
}

// EV1ChangeKeyCryptogram returns the plaintext of an EV1 AES ChangeKey
// cryptogram before the CRC that Full mode adds: for the authenticated key
// NewKey ‖ KeyVer; for another key (NewKey ⊕ OldKey) ‖ KeyVer, and the
// trailer CRC32(NewKey) that follows the command CRC.
func EV1ChangeKeyCryptogram(sameKey bool, newKey, oldKey []byte, keyVer byte) (data, trailer []byte, err error) {
	if len(newKey) != 16 || (!sameKey && len(oldKey) != 16) {
		return nil, nil, dfcrypto.ErrKeySize
	}
	if sameKey {
		return append(append([]byte(nil), newKey...), keyVer), nil, nil
	}
	x := make([]byte, 16)
	for i := range x {
		x[i] = newKey[i] ^ oldKey[i]
	}
	return append(x, keyVer), dfcrypto.CRC32LE(newKey), nil
}

// EV1ChangeKey builds ChangeKey (0xC4) for an EV1 AES channel.
func EV1ChangeKey(keyNo, authKeyNo byte, newKey, oldKey []byte, keyVer byte) (*Command, error) {
	same := keyNo&0x3F == authKeyNo&0x3F
	data, trailer, err := EV1ChangeKeyCryptogram(same, newKey, oldKey, keyVer)
	if err != nil {
		return nil, err
	}
	return &Command{Code: CmdChangeKey, Header: []byte{keyNo}, Data: data, Mode: CommFull, RespMode: CommMAC,
		RespLen: 0, Predictable: !same, Predicted: []byte{}, Name: fmt.Sprintf("change key %d", keyNo),
		ev1Trailer: trailer, endsSession: same}, nil
}
