package desfire

import (
	"context"
	"fmt"
)

// Framing of one native command over ISO 7816-4 wrapped APDUs.
//
// A payload longer than one frame goes out as the command code with the
// first part, then 0xAF frames with the rest; the card answers every frame
// but the last with 91AF and no data. An answer that does not fit one
// frame comes as 91AF ‖ part, and the reader asks for the next part with
// an empty 0xAF frame until a final status arrives (DESFire EV1/EV2 data
// sheets, "additional frame"; MF2DLHX0 section 8.5; libfreefare
// mifare_desfire.c and the NXP reader library phalMfdfEVx_Int.c implement
// the same loop).

// DefaultMaxFrame is the largest payload (the bytes after the command
// code) put into one wrapped APDU before the rest goes into 0xAF frames.
//
// DESFire cards announce a frame size (FSC) of 64 bytes. A native frame
// then carries the command code and 59 payload bytes (NXP reader library:
// PHAL_MFDF_MAXDFAPDU_SIZE = 60 with the command code); the ISO 7816-4
// wrapping adds CLA, P1, P2, Lc and Le, so the reader library caps a
// wrapped command at 55 bytes with the code (PHAL_MFDF_MAXWRAPPEDAPDU_SIZE),
// i.e. 54 payload bytes, which is what we send. A reader whose link layer
// chains larger APDUs may raise it with WithMaxFrame.
const DefaultMaxFrame = 54

// DefaultMaxResponse bounds the data of one chained answer (all frames
// together, before secure messaging is removed). The largest answer the
// top-up needs is a record file read; 8 KiB covers a full EV2 8K card's
// biggest file while keeping a hostile bridge from growing memory without
// limit.
const DefaultMaxResponse = 8 << 10

// MaxResponse is DefaultMaxResponse under the name the first session code
// used; tests of the channels size their hostile answers with it.
const MaxResponse = DefaultMaxResponse

// minMaxFrame is the smallest frame payload accepted by WithMaxFrame: an
// authentication frame (32 bytes) must fit in one frame.
const minMaxFrame = 32

// CmdAdditionalFrame is the code of a continuation frame in both
// directions (sent as a command, returned as status 91AF).
const CmdAdditionalFrame = 0xAF

// transmit sends one APDU, counts the round trip and splits the answer.
func (c *Card) transmit(ctx context.Context, apdu []byte) (byte, []byte, error) {
	c.trips++
	r, err := c.t.Transmit(ctx, apdu)
	if err != nil {
		return 0, nil, err
	}
	return SplitResponse(r)
}

// exchange sends code ‖ payload in as many frames as needed and returns
// the final native status and the data of all answer frames.
//
// An intermediate answer to an outgoing frame must be 91AF with no data;
// an error status there ends the exchange early and is returned for the
// Reply to report, while 9100 or data before the last frame is a protocol
// fault. Answer chaining stops at maxResp bytes, and every continuation
// frame must carry data, so a hostile bridge cannot keep the loop going.
func (c *Card) exchange(ctx context.Context, code byte, payload []byte) (byte, []byte, error) {
	first := payload
	if len(first) > c.maxFrame {
		first = payload[:c.maxFrame]
	}
	apdu, err := WrapNative(code, first)
	if err != nil {
		return 0, nil, err
	}
	status, data, err := c.transmit(ctx, apdu)
	if err != nil {
		return 0, nil, err
	}
	for rest := payload[len(first):]; len(rest) > 0; {
		switch {
		case status == StatusAdditionalFrame && len(data) == 0:
		case status == StatusAdditionalFrame || status == StatusOK:
			return 0, nil, fmt.Errorf("answer %02X with %d bytes while %d command bytes are unsent: %w",
				status, len(data), len(rest), ErrUnexpectedStatus)
		default:
			return status, data, nil // the card refused; the Reply reports it
		}
		n := min(len(rest), c.maxFrame)
		if apdu, err = WrapNative(CmdAdditionalFrame, rest[:n]); err != nil {
			return 0, nil, err
		}
		rest = rest[n:]
		if status, data, err = c.transmit(ctx, apdu); err != nil {
			return 0, nil, err
		}
	}
	if len(data) > c.maxResp {
		return 0, nil, fmt.Errorf("answer of %d bytes, limit %d: %w", len(data), c.maxResp, ErrLongResponse)
	}
	all := append([]byte(nil), data...)
	for status == StatusAdditionalFrame {
		apdu, _ := WrapNative(CmdAdditionalFrame, nil)
		if status, data, err = c.transmit(ctx, apdu); err != nil {
			return 0, nil, err
		}
		if len(data) == 0 && status == StatusAdditionalFrame {
			return 0, nil, fmt.Errorf("empty additional frame in a chained answer: %w", ErrUnexpectedStatus)
		}
		if len(all)+len(data) > c.maxResp {
			return 0, nil, fmt.Errorf("chained answer over %d bytes: %w", c.maxResp, ErrLongResponse)
		}
		all = append(all, data...)
	}
	return status, all, nil
}
