package desfire

import (
	"context"
	"errors"
	"fmt"
)

// Transport failures every transport reports the same way, so card
// scripts and their callers can tell them apart from the card's answers.
var (
	// ErrTagLost: the card left the field (or the reader failed).
	ErrTagLost = errors.New("desfire: card left the field")
	// ErrBridgeTimeout: the transport missed a deadline.
	ErrBridgeTimeout = errors.New("desfire: transport timed out")
	// ErrCancelled: the user cancelled at the transport's end.
	ErrCancelled = errors.New("desfire: cancelled by the user")
)

// Transport moves one ISO 7816-4 command APDU to a card and returns its
// response APDU (data ‖ SW1 ‖ SW2). The WebSocket bridge, a PC/SC reader and
// the simulated card all implement it, so every card script runs unchanged
// against each of them. Implementations must not retain capdu after
// returning.
type Transport interface {
	Transmit(ctx context.Context, capdu []byte) ([]byte, error)
}

// BatchCommand is one command of a batch: the APDU and the status words it
// may return. An empty Expect means 9000 and 9100 only.
type BatchCommand struct {
	APDU   []byte
	Expect []uint16
}

// Batcher is the optional extension of Transport that sends several command
// APDUs in one round trip. The answer holds the responses received in order,
// up to and including the first one whose status word was not expected
// (the transceive rules of the relay protocol). A shorter answer with a nil
// error means the card stopped on an unexpected status; transport failures
// (tag lost, timeout) are returned as errors together with the responses
// received before them.
type Batcher interface {
	Transport
	TransmitBatch(ctx context.Context, cmds []BatchCommand) ([][]byte, error)
}

// Expected reports whether status word sw is allowed by expect under the
// relay rules: an empty list allows 9000 and 9100.
func Expected(expect []uint16, sw uint16) bool {
	if len(expect) == 0 {
		return sw == 0x9000 || sw == 0x9100
	}
	for _, e := range expect {
		if e == sw {
			return true
		}
	}
	return false
}

// SequentialBatch runs cmds one by one over t with the batch rules. It lets
// code written for a Batcher run over a plain Transport, and serves bridges
// as the reference behaviour for transceive.
func SequentialBatch(ctx context.Context, t Transport, cmds []BatchCommand) ([][]byte, error) {
	return sequential(ctx, t, cmds, -1, nil)
}

// sequential is SequentialBatch with an optional hook run right before
// command at leaves; an error from it stops the batch there.
func sequential(ctx context.Context, t Transport, cmds []BatchCommand, at int, before func(context.Context) error) ([][]byte, error) {
	out := make([][]byte, 0, len(cmds))
	for i, c := range cmds {
		if i == at && before != nil {
			if err := before(ctx); err != nil {
				return out, fmt.Errorf("before batch command %d: %w", i, err)
			}
		}
		r, err := t.Transmit(ctx, c.APDU)
		if err != nil {
			return out, fmt.Errorf("batch command %d: %w", i, err)
		}
		out = append(out, r)
		sw, err := StatusWord(r)
		if err != nil {
			return out, fmt.Errorf("batch command %d: %w", i, err)
		}
		if !Expected(c.Expect, sw) {
			return out, nil
		}
	}
	return out, nil
}
