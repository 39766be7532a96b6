package protocol

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// ServerMessage is one decoded server frame, as a bridge sees it. Types the
// bridge does not know are returned with only Type set, so bridges can
// ignore them (forward compatibility).
type ServerMessage struct {
	Type       string
	Ready      *Ready
	Transceive *Transceive
	Prompt     *Prompt
	Result     *Result
}

// Limits on a transceive, checked by bridges.
const (
	MaxCAPDUs     = 64
	MaxCAPDUBytes = 261 // CLA INS P1 P2 Lc 255 bytes Le
)

// DecodeServer parses and validates one frame from the server.
func DecodeServer(frame []byte) (*ServerMessage, error) {
	if len(frame) > MaxFrame {
		return nil, fmt.Errorf("frame of %d bytes exceeds %d: %w", len(frame), MaxFrame, ErrProtocol)
	}
	var env envelope
	if err := json.Unmarshal(frame, &env); err != nil {
		return nil, fmt.Errorf("bad JSON: %w: %w", err, ErrProtocol)
	}
	m := &ServerMessage{Type: env.Type}
	var err error
	switch env.Type {
	case TypeReady:
		m.Ready = new(Ready)
		err = strict(frame, m.Ready)
	case TypeTransceive:
		m.Transceive = new(Transceive)
		err = strict(frame, m.Transceive)
		if err == nil {
			err = m.Transceive.validate()
		}
	case TypePrompt:
		m.Prompt = new(Prompt)
		err = strict(frame, m.Prompt)
	case TypeResult:
		m.Result = new(Result)
		err = strict(frame, m.Result)
	case "":
		err = errors.New("missing type")
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", typeName(env.Type), err, ErrProtocol)
	}
	return m, nil
}

func (t *Transceive) validate() error {
	if t.ID == 0 {
		return errors.New("transceive without id")
	}
	if len(t.CAPDUs) == 0 || len(t.CAPDUs) > MaxCAPDUs {
		return fmt.Errorf("%d command APDUs", len(t.CAPDUs))
	}
	for i, c := range t.CAPDUs {
		if len(c.APDU) < 4 || len(c.APDU) > MaxCAPDUBytes {
			return fmt.Errorf("command APDU %d has %d bytes", i, len(c.APDU))
		}
		if _, err := c.ExpectSW(); err != nil {
			return fmt.Errorf("command APDU %d: %w", i, err)
		}
	}
	return nil
}

// ExpectSW parses the expect list into status words.
func (c CAPDU) ExpectSW() ([]uint16, error) {
	if len(c.Expect) > 16 {
		return nil, fmt.Errorf("%d expected status words", len(c.Expect))
	}
	out := make([]uint16, 0, len(c.Expect))
	for _, s := range c.Expect {
		if len(s) != 4 {
			return nil, fmt.Errorf("status word %q is not 4 hex digits", truncate(s))
		}
		v, err := strconv.ParseUint(s, 16, 16)
		if err != nil {
			return nil, fmt.Errorf("status word %q is not 4 hex digits", truncate(s))
		}
		out = append(out, uint16(v))
	}
	return out, nil
}
