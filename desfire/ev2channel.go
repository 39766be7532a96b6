package desfire

import (
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/desfire-relay/relay/desfire/dfcrypto"
)

// EV2 secure messaging (MF2DLHX0 section 9.1, NT4H2421Gx section 9.1, NXP
// AN12196 section 5 and AN12343 sections 4 and 8 for worked traces):
//
//	IVcmd  = E(SesAuthENCKey, A5 5A ‖ TI ‖ CmdCtr(LE16) ‖ 00×8)
//	IVresp = E(SesAuthENCKey, 5A A5 ‖ TI ‖ (CmdCtr+1)(LE16) ‖ 00×8)
//	MAC    = MACt(SesAuthMACKey, Cmd ‖ CmdCtr ‖ TI ‖ Header ‖ [E]Data)
//	RMAC   = MACt(SesAuthMACKey, RC ‖ (CmdCtr+1) ‖ TI ‖ [E]RespData)
//
// Full mode data is padded with 80 00… (always, a whole block when aligned)
// and AES-CBC encrypted under the IV above. The counter counts
// command/response pairs; it is the only chaining between commands, so a
// command never depends on an earlier response and can always be sealed
// ahead (pipelined).

// ErrEV2ReplyOrder is returned when EV2 replies are opened in another order
// than their commands were sealed, or twice: each reply is bound to its own
// command counter.
var ErrEV2ReplyOrder = errors.New("desfire: secure messaging replies opened out of order")

// errEV2KeyChanged closes a channel after ChangeKey of the key that
// authenticated it: the card ends the session.
var errEV2KeyChanged = fmt.Errorf("session ended by ChangeKey of the authenticated key: %w", ErrChannelClosed)

// ev2MACSize is the size of MACt.
const ev2MACSize = 8

// EV2Channel is the secure channel created by AuthenticateEV2First or
// AuthenticateEV2NonFirst. It implements Channel; TI and the command counter
// are readable for tests and for the Transaction MAC. It is not safe for
// concurrent use: one session runner owns it.
type EV2Channel struct {
	enc, mac []byte
	// encBlock and macer are the session keys' ciphers, set up once.
	encBlock cipher.Block
	macer    *dfcrypto.MAC
	ti       [ev2TISize]byte
	keyNo    byte
	// next is the CmdCtr of the next command to seal; opened is the CmdCtr
	// of the next reply to open (opened ≤ next).
	next, opened uint16
	// ending is set when a ChangeKey of the authenticated key was sealed:
	// nothing may follow it.
	ending  bool
	err     error
	pdCap2  []byte
	pcdCap2 []byte
}

var _ Channel = (*EV2Channel)(nil)

// newEV2Channel builds a channel from session keys; only authentication
// (and tests replaying published traces) call it.
func newEV2Channel(enc, mac, ti []byte, ctr uint16, keyNo byte) (*EV2Channel, error) {
	if len(enc) != dfcrypto.KeySize || len(mac) != dfcrypto.KeySize {
		return nil, fmt.Errorf("EV2 session keys: %w", dfcrypto.ErrKeySize)
	}
	if len(ti) != ev2TISize {
		return nil, fmt.Errorf("EV2 TI of %d bytes: %w", len(ti), ErrLength)
	}
	c := &EV2Channel{
		enc:    append([]byte(nil), enc...),
		mac:    append([]byte(nil), mac...),
		keyNo:  keyNo,
		next:   ctr,
		opened: ctr,
	}
	copy(c.ti[:], ti)
	var err error
	if c.encBlock, err = dfcrypto.NewCipher(c.enc); err != nil {
		return nil, fmt.Errorf("EV2 session keys: %w", err)
	}
	if c.macer, err = dfcrypto.NewMAC(c.mac); err != nil {
		return nil, fmt.Errorf("EV2 session keys: %w", err)
	}
	return c, nil
}

// iv returns E(SesAuthENCKey, l0 l1 ‖ TI ‖ ctr(LE16) ‖ 00×8), as ev2IV.
func (c *EV2Channel) iv(l0, l1 byte, ctr uint16) []byte {
	in := make([]byte, dfcrypto.BlockSize)
	in[0], in[1] = l0, l1
	copy(in[2:6], c.ti[:])
	binary.LittleEndian.PutUint16(in[6:8], ctr)
	c.encBlock.Encrypt(in, in)
	return in
}

// Generation returns "ev2".
func (c *EV2Channel) Generation() string { return "ev2" }

// TI returns the 4-byte transaction identifier chosen by the card.
func (c *EV2Channel) TI() []byte { return append([]byte(nil), c.ti[:]...) }

// CmdCtr returns the command counter the next sealed command will use.
func (c *EV2Channel) CmdCtr() uint16 { return c.next }

// KeyNo returns the key number the session is authenticated with.
func (c *EV2Channel) KeyNo() byte { return c.keyNo }

// PDcap2 returns the card's 6 capability bytes from AuthenticateEV2First.
func (c *EV2Channel) PDcap2() []byte { return append([]byte(nil), c.pdCap2...) }

// PCDcap2 returns the PCD capability bytes echoed by the card.
func (c *EV2Channel) PCDcap2() []byte { return append([]byte(nil), c.pcdCap2...) }

// Err is nil while the channel is usable.
func (c *EV2Channel) Err() error { return c.err }

// Close makes the channel unusable.
func (c *EV2Channel) Close() { c.closeWith(ErrChannelClosed) }

func (c *EV2Channel) closeWith(reason error) {
	if c.err == nil {
		c.err = reason
	}
	// Forget the keys: nothing may use them after a failure.
	clear(c.enc)
	clear(c.mac)
}

// fail closes the channel and returns err.
func (c *EV2Channel) fail(err error) error {
	c.closeWith(fmt.Errorf("%w (after: %w)", ErrChannelClosed, err))
	return err
}

func (c *EV2Channel) closedErr(op string, cmd string) error {
	if c.err == nil {
		return nil
	}
	if errors.Is(c.err, ErrChannelClosed) {
		return fmt.Errorf("%s %s: %w", op, cmd, c.err)
	}
	return fmt.Errorf("%s %s: %w: %w", op, cmd, ErrChannelClosed, c.err)
}

// Seal protects cmd under the current command counter and advances the
// counter. It never returns ErrNotPipelinable on its own account: an EV2
// command depends only on the counter, never on an earlier response. It
// does refuse to seal anything behind a ChangeKey of the authenticated key,
// which ends the session.
func (c *EV2Channel) Seal(cmd *Command) ([]byte, Reply, error) {
	name := ev2Name(cmd)
	if err := c.closedErr("seal", name); err != nil {
		return nil, nil, err
	}
	if c.ending {
		return nil, nil, fmt.Errorf("seal %s: behind ChangeKey of the authenticated key: %w", name, ErrNotPipelinable)
	}
	if !ev2ValidMode(cmd.Mode) || !ev2ValidMode(cmd.RespMode) {
		return nil, nil, fmt.Errorf("seal %s: communication mode %v/%v: %w", name, cmd.Mode, cmd.RespMode, ErrParameter)
	}
	if c.next == 0xFFFF {
		// The response would need CmdCtr+1 = 10000h: the session is spent.
		return nil, nil, c.fail(fmt.Errorf("seal %s: command counter exhausted: %w", name, ErrCount))
	}
	ctr := c.next
	payload := make([]byte, 0, len(cmd.Header)+len(cmd.Data)+dfcrypto.BlockSize+ev2MACSize)
	payload = append(payload, cmd.Header...)
	switch cmd.Mode {
	case CommPlain:
		payload = append(payload, cmd.Data...)
	case CommMAC, CommFull:
		body := cmd.Data
		if cmd.Mode == CommFull && len(cmd.Data) > 0 {
			body = dfcrypto.Pad80(cmd.Data) // a fresh slice, enciphered in place
			cipher.NewCBCEncrypter(c.encBlock, c.iv(0xA5, 0x5A, ctr)).CryptBlocks(body, body)
		}
		payload = append(payload, body...)
		payload = append(payload, c.macer.MACt(EV2CommandMACInput(cmd.Code, ctr, c.ti[:], cmd.Header, body))...)
	}
	r := &ev2Reply{
		ch:       c,
		ctr:      ctr,
		name:     name,
		respMode: cmd.RespMode,
		respLen:  cmd.RespLen,
	}
	if ev2EndsSession(cmd, c.keyNo) {
		// The card answers ChangeKey of its own session key in plain and
		// drops the session (AN12343 section 9.2.2, Table 40).
		r.respMode = CommPlain
		r.respLen = 0
		r.ends = true
		c.ending = true
	}
	c.next++
	return payload, r, nil
}

// ev2Reply verifies the answer to one sealed command.
type ev2Reply struct {
	ch       *EV2Channel
	ctr      uint16
	name     string
	respMode CommMode
	respLen  int
	ends     bool
}

// Open checks status and response data and returns the plaintext. Any
// failure closes the channel.
func (r *ev2Reply) Open(status byte, data []byte) ([]byte, error) {
	c := r.ch
	if err := c.closedErr("open", r.name); err != nil {
		return nil, err
	}
	if r.ctr != c.opened {
		return nil, c.fail(fmt.Errorf("open %s: counter %d, next expected %d: %w", r.name, r.ctr, c.opened, ErrEV2ReplyOrder))
	}
	c.opened++
	if status != StatusOK {
		return nil, c.fail(fmt.Errorf("%s: %w", r.name, ev2StatusErr(status)))
	}
	var plain []byte
	switch r.respMode {
	case CommPlain:
		plain = append([]byte(nil), data...)
	case CommMAC, CommFull:
		if len(data) < ev2MACSize {
			return nil, c.fail(fmt.Errorf("%s: response of %d bytes has no MAC: %w", r.name, len(data), ErrShortResponse))
		}
		body, got := data[:len(data)-ev2MACSize], data[len(data)-ev2MACSize:]
		want := c.macer.MACt(EV2CommandMACInput(status, r.ctr+1, c.ti[:], nil, body))
		if !dfcrypto.Equal(got, want) {
			return nil, c.fail(fmt.Errorf("%s: %w", r.name, ErrResponseMAC))
		}
		if r.respMode == CommMAC || len(body) == 0 {
			plain = append([]byte(nil), body...)
			break
		}
		if len(body)%dfcrypto.BlockSize != 0 {
			return nil, c.fail(fmt.Errorf("%s: enciphered response of %d bytes: %w", r.name, len(body), ErrPadding))
		}
		dec := make([]byte, len(body))
		cipher.NewCBCDecrypter(c.encBlock, c.iv(0x5A, 0xA5, r.ctr+1)).CryptBlocks(dec, body)
		var err error
		if plain, err = dfcrypto.Unpad80(dec); err != nil {
			return nil, c.fail(fmt.Errorf("%s: %w: %w", r.name, ErrPadding, err))
		}
	}
	if err := checkRespLen(len(plain), r.respLen); err != nil {
		return nil, c.fail(fmt.Errorf("%s: %w", r.name, err))
	}
	if r.ends {
		c.closeWith(errEV2KeyChanged)
	}
	return plain, nil
}

// EV2CommandIV returns IVcmd = E(SesAuthENCKey, A5 5A ‖ TI ‖ CmdCtr(LE16) ‖ 00×8).
func EV2CommandIV(encKey, ti []byte, ctr uint16) ([]byte, error) {
	return ev2IV(encKey, 0xA5, 0x5A, ti, ctr)
}

// EV2ResponseIV returns IVresp = E(SesAuthENCKey, 5A A5 ‖ TI ‖ (CmdCtr+1)(LE16)
// ‖ 00×8), where ctr is the counter of the command being answered.
func EV2ResponseIV(encKey, ti []byte, ctr uint16) ([]byte, error) {
	return ev2IV(encKey, 0x5A, 0xA5, ti, ctr+1)
}

func ev2IV(key []byte, l0, l1 byte, ti []byte, ctr uint16) ([]byte, error) {
	if len(ti) != ev2TISize {
		return nil, fmt.Errorf("EV2 IV: TI of %d bytes: %w", len(ti), ErrLength)
	}
	in := make([]byte, dfcrypto.BlockSize)
	in[0], in[1] = l0, l1
	copy(in[2:6], ti)
	binary.LittleEndian.PutUint16(in[6:8], ctr)
	return dfcrypto.EncryptBlock(key, in)
}

// EV2CommandMAC returns MACt(SesAuthMACKey, Cmd ‖ CmdCtr(LE16) ‖ TI ‖ Header
// ‖ Data), Data being the enciphered data in Full mode.
func EV2CommandMAC(macKey []byte, code byte, ctr uint16, ti, header, data []byte) ([]byte, error) {
	return dfcrypto.MACt(macKey, EV2CommandMACInput(code, ctr, ti, header, data))
}

// EV2CommandMACInput returns the bytes EV2CommandMAC covers, so traces that
// print the MAC input can be checked.
func EV2CommandMACInput(code byte, ctr uint16, ti, header, data []byte) []byte {
	in := make([]byte, 0, 7+len(header)+len(data))
	in = append(in, code)
	in = binary.LittleEndian.AppendUint16(in, ctr)
	in = append(in, ti...)
	in = append(in, header...)
	return append(in, data...)
}

// EV2ResponseMAC returns MACt(SesAuthMACKey, RC ‖ (CmdCtr+1)(LE16) ‖ TI ‖
// RespData), where ctr is the counter of the command being answered.
func EV2ResponseMAC(macKey []byte, rc byte, ctr uint16, ti, data []byte) ([]byte, error) {
	return dfcrypto.MACt(macKey, EV2CommandMACInput(rc, ctr+1, ti, nil, data))
}

func ev2ValidMode(m CommMode) bool {
	return m == CommPlain || m == CommMAC || m == CommFull
}

func ev2Name(cmd *Command) string {
	if cmd.Name != "" {
		return cmd.Name
	}
	return fmt.Sprintf("command %02X", cmd.Code)
}
