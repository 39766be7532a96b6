package desfire

import (
	"errors"
	"fmt"

	"github.com/desfire-relay/relay/desfire/dfcrypto"
)

// errEV1KeyChanged closes a channel after ChangeKey of the key that
// authenticated it: the card ends the session.
var errEV1KeyChanged = fmt.Errorf("session ended by ChangeKey of the authenticated key: %w", ErrChannelClosed)

// EV1Channel is DESFire EV1 AES secure messaging, created by AuthAES. Every
// command and every answer after authentication moves one running IV (see
// the functions in ev1.go), so a command's MAC or cryptogram depends on the
// answer before it. When that answer is predictable (Command.Predictable)
// the channel computes it, and the IV after it, at Seal time, so the next
// command can be sealed before the card has answered; otherwise Seal
// refuses with ErrNotPipelinable until the reply is opened.
//
// It is not safe for concurrent use: one session runner owns it.
type EV1Channel struct {
	key   []byte
	keyNo byte
	// iv is the IV after everything sealed so far, predicted answers
	// included.
	iv []byte
	// sealed counts sealed commands; opened counts opened replies.
	sealed, opened uint64
	// awaitProof: created early by AuthAES; replies wait for Finish.
	awaitProof bool
	// pending: a reply whose answer is not predictable is not opened yet.
	pending bool
	// ending: ChangeKey of the authenticated key was sealed.
	ending bool
	err    error
}

var _ Channel = (*EV1Channel)(nil)

// newEV1Channel returns a channel with the session key (copied) of an
// authentication with key keyNo, IV zero.
func newEV1Channel(sessionKey []byte, keyNo byte) (*EV1Channel, error) {
	if len(sessionKey) != dfcrypto.KeySize {
		return nil, fmt.Errorf("EV1 session key: %w", dfcrypto.ErrKeySize)
	}
	return &EV1Channel{
		key:   append([]byte(nil), sessionKey...),
		keyNo: keyNo,
		iv:    make([]byte, dfcrypto.BlockSize),
	}, nil
}

// Generation returns "ev1".
func (c *EV1Channel) Generation() string { return "ev1" }

// KeyNo returns the key number the session is authenticated with; ChangeKey
// of that key ends the session.
func (c *EV1Channel) KeyNo() byte { return c.keyNo }

// Err is nil while the channel is usable.
func (c *EV1Channel) Err() error { return c.err }

// Close makes the channel unusable.
func (c *EV1Channel) Close() { c.closeWith(ErrChannelClosed) }

func (c *EV1Channel) closeWith(reason error) {
	if c.err == nil {
		c.err = reason
	}
	// Nothing may use the session key after a failure.
	clear(c.key)
	clear(c.iv)
}

// fail closes the channel and returns err. Later calls report
// ErrChannelClosed with err's text, not err itself, so a MAC failure is
// counted once.
func (c *EV1Channel) fail(err error) error {
	c.closeWith(fmt.Errorf("%w (after: %v)", ErrChannelClosed, err))
	return err
}

func (c *EV1Channel) closedErr(op, name string) error {
	if c.err == nil {
		return nil
	}
	if errors.Is(c.err, ErrChannelClosed) {
		return fmt.Errorf("%s %s: %w", op, name, c.err)
	}
	return fmt.Errorf("%s %s: %w: %w", op, name, ErrChannelClosed, c.err)
}

// Seal protects cmd with the running IV and returns its payload (header ‖
// data ‖ CMAC[0:8] in MAC mode, header ‖ cryptogram in Full mode) and the
// Reply that verifies the answer. As on the card, a command without data
// has nothing to protect: in MAC and Full mode its CMAC only moves the IV
// and is not sent, exactly as in Plain mode (proxmark3
// DesfireSecureChannelEncodeEV1; a read from a MAC or Full file is such a
// command).
func (c *EV1Channel) Seal(cmd *Command) ([]byte, Reply, error) {
	name := cmd.name()
	if err := c.closedErr("seal", name); err != nil {
		return nil, nil, err
	}
	switch {
	case c.ending:
		return nil, nil, fmt.Errorf("seal %s: behind ChangeKey of the authenticated key: %w", name, ErrNotPipelinable)
	case c.pending:
		return nil, nil, fmt.Errorf("seal %s: behind a reply not yet verified: %w", name, ErrNotPipelinable)
	case !ev1ValidMode(cmd.Mode) || !ev1ValidMode(cmd.RespMode):
		return nil, nil, fmt.Errorf("seal %s: communication mode %v/%v: %w", name, cmd.Mode, cmd.RespMode, ErrParameter)
	case cmd.Predictable && cmd.RespLen >= 0 && len(cmd.Predicted) != cmd.RespLen:
		return nil, nil, fmt.Errorf("seal %s: predicted %d bytes, response length %d: %w", name, len(cmd.Predicted), cmd.RespLen, ErrParameter)
	}
	var payload, iv []byte
	var err error
	if cmd.Mode == CommFull && len(cmd.Data)+len(cmd.ev1Trailer) > 0 {
		var ct []byte
		ct, iv, err = EV1Encipher(c.key, c.iv, EV1CommandPlaintext(cmd.Code, cmd.Header, cmd.Data, cmd.ev1Trailer))
		if err != nil {
			return nil, nil, c.fail(fmt.Errorf("seal %s: %w", name, err))
		}
		payload = ev1Concat(cmd.Header, ct)
	} else {
		if iv, err = EV1CommandCMAC(c.key, c.iv, cmd.Code, cmd.Header, cmd.Data); err != nil {
			return nil, nil, c.fail(fmt.Errorf("seal %s: %w", name, err))
		}
		var mac []byte
		if cmd.Mode == CommMAC && len(cmd.Data) > 0 {
			mac = iv[:ev1MACSize]
		}
		payload = ev1Concat(cmd.Header, cmd.Data, mac)
	}
	respMode := cmd.RespMode
	if respMode == CommFull && cmd.RespLen == 0 {
		// Nothing to encipher: the card MACs the empty answer, as it does
		// after every enciphered write.
		respMode = CommMAC
	}
	r := &ev1Reply{ch: c, seq: c.sealed, name: name, respMode: respMode, respLen: cmd.RespLen, iv: append([]byte(nil), iv...)}
	switch {
	case c.endsSession(cmd):
		// The card answers 9100 without a MAC and forgets the session.
		r.ends, r.respLen, r.predicted = true, 0, []byte{}
		c.ending = true
	case cmd.Predictable:
		raw, next, err := ev1Predict(c.key, iv, respMode, cmd.Predicted)
		if err != nil {
			return nil, nil, c.fail(fmt.Errorf("seal %s: predict answer: %w", name, err))
		}
		r.predicted = raw
		iv = next
	default:
		c.pending = true
	}
	c.iv = iv
	c.sealed++
	return payload, r, nil
}

// endsSession reports whether cmd is a ChangeKey of the key the session is
// authenticated with.
func (c *EV1Channel) endsSession(cmd *Command) bool {
	return cmd.endsSession || cmd.Code == CmdChangeKey && len(cmd.Header) >= 1 && sameKey(cmd.Header[0], c.keyNo)
}

// ev1Predict returns the exact answer (without status) a card gives with
// status 00 and plaintext data in mode, and the IV after it.
func ev1Predict(key, iv []byte, mode CommMode, data []byte) (raw, next []byte, err error) {
	if mode == CommFull {
		return EV1Encipher(key, iv, EV1ResponsePlaintext(data, StatusOK))
	}
	if next, err = EV1ResponseCMAC(key, iv, data, StatusOK); err != nil {
		return nil, nil, err
	}
	return ev1Concat(data, next[:ev1MACSize]), next, nil
}

func ev1ValidMode(m CommMode) bool {
	return m == CommPlain || m == CommMAC || m == CommFull
}

// ev1Reply verifies the answer to one sealed command.
type ev1Reply struct {
	ch       *EV1Channel
	seq      uint64
	name     string
	respMode CommMode
	respLen  int
	// iv is the IV after the command: the answer is verified with it.
	iv []byte
	// predicted is the exact answer expected (data ‖ MAC, or cryptogram),
	// or nil when the answer was not predictable.
	predicted []byte
	// ends: ChangeKey of the authenticated key; the answer has no MAC.
	ends bool
}

// Open checks the status and the answer and returns the plaintext data.
// Any failure closes the channel.
func (r *ev1Reply) Open(status byte, data []byte) ([]byte, error) {
	c := r.ch
	if err := c.closedErr("open", r.name); err != nil {
		return nil, err
	}
	if c.awaitProof {
		return nil, c.fail(fmt.Errorf("open %s: the card's authentication proof is not verified: %w", r.name, ErrNotAuthenticated))
	}
	if r.seq != c.opened {
		return nil, c.fail(fmt.Errorf("open %s: reply %d, next expected %d: %w", r.name, r.seq, c.opened, ErrEV1ReplyOrder))
	}
	c.opened++
	if status != StatusOK {
		return nil, c.fail(fmt.Errorf("%s: %w", r.name, ev1StatusErr(status)))
	}
	if r.ends {
		if len(data) != 0 {
			return nil, c.fail(fmt.Errorf("%s: %w", r.name, checkLen(len(data), 0)))
		}
		c.closeWith(errEV1KeyChanged)
		return []byte{}, nil
	}
	plain, next, err := ev1Verify(c.key, r.iv, status, data, r.respMode, r.respLen)
	if err != nil {
		return nil, c.fail(fmt.Errorf("%s: %w", r.name, err))
	}
	if r.predicted != nil {
		// The IV already moved past this answer; it must be the one the
		// commands sealed behind it were chained to.
		if !dfcrypto.Equal(data, r.predicted) {
			return nil, c.fail(fmt.Errorf("%s: %w", r.name, ErrEV1Mispredicted))
		}
		return plain, nil
	}
	c.iv = next
	c.pending = false
	return plain, nil
}

// ev1Verify checks an answer with status 00 against the IV after its
// command and returns its data and the next IV.
func ev1Verify(key, iv []byte, status byte, data []byte, mode CommMode, respLen int) (plain, next []byte, err error) {
	if mode == CommFull {
		return EV1DecipherResponse(key, iv, data, status, respLen)
	}
	if len(data) < ev1MACSize {
		return nil, nil, fmt.Errorf("answer of %d bytes has no MAC: %w", len(data), ErrShortResponse)
	}
	body, mac := data[:len(data)-ev1MACSize], data[len(data)-ev1MACSize:]
	if next, err = EV1ResponseCMAC(key, iv, body, status); err != nil {
		return nil, nil, err
	}
	if !dfcrypto.Equal(mac, next[:ev1MACSize]) {
		return nil, nil, ErrResponseMAC
	}
	if respLen >= 0 {
		if err := checkLen(len(body), respLen); err != nil {
			return nil, nil, fmt.Errorf("answer data: %w", err)
		}
	}
	return append([]byte(nil), body...), next, nil
}
