package vpcd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Control codes: the 1-byte messages vpcd sends. Only CtrlATR expects an
// answer.
const (
	CtrlPowerOff byte = 0x00
	CtrlPowerOn  byte = 0x01
	CtrlReset    byte = 0x02
	CtrlATR      byte = 0x04
)

// MaxMessage is the largest message the 2-byte length prefix can carry.
const MaxMessage = 0xFFFF

// ErrFrame marks a message that breaks the framing (empty, or longer
// than the length prefix can say), so callers can tell a peer speaking
// the wrong protocol from a dropped connection.
var ErrFrame = errors.New("vpcd: malformed frame")

// ReadFrame reads one length-prefixed message. It returns io.EOF when the
// peer closed the connection between messages, an error wrapping
// io.ErrUnexpectedEOF when it closed inside one, and ErrFrame for an
// empty message (vpcd never sends one).
func ReadFrame(r io.Reader) ([]byte, error) {
	var hdr [2]byte
	if n, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) && n == 0 {
			return nil, io.EOF
		}
		return nil, fmt.Errorf("vpcd: length prefix: %w", err)
	}
	size := int(binary.BigEndian.Uint16(hdr[:]))
	if size == 0 {
		return nil, fmt.Errorf("vpcd: message of length 0: %w", ErrFrame)
	}
	msg := make([]byte, size)
	if n, err := io.ReadFull(r, msg); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("vpcd: message of %d bytes truncated after %d: %w", size, n, err)
	}
	return msg, nil
}

// WriteFrame writes msg with its length prefix in one write, so a
// message is never interleaved with another.
func WriteFrame(w io.Writer, msg []byte) error {
	if len(msg) > MaxMessage {
		return fmt.Errorf("vpcd: message of %d bytes exceeds %d: %w", len(msg), MaxMessage, ErrFrame)
	}
	buf := make([]byte, 2+len(msg))
	binary.BigEndian.PutUint16(buf, uint16(len(msg)))
	copy(buf[2:], msg)
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("vpcd: write message: %w", err)
	}
	return nil
}
