package bridge

import (
	"context"
	"errors"
	"fmt"

	"github.com/desfire-relay/relay/desfire/ntag424/simtag"
)

// NTAG424ATS is the ATS of an NTAG 424 DNA (NT4H2421Gx section 8.1: TL
// 06, T0 77, TA 77, TB 71, TC 02, one historical byte 80).
var NTAG424ATS = []byte{0x06, 0x77, 0x77, 0x71, 0x02, 0x80}

// SimTag presents a simulated NTAG 424 DNA as a bridge's card: removal
// from the field is the bridge's tag-lost.
type SimTag struct{ Tag *simtag.Tag }

// Transmit implements desfire.Transport.
func (s SimTag) Transmit(ctx context.Context, capdu []byte) ([]byte, error) {
	r, err := s.Tag.Transmit(ctx, capdu)
	if errors.Is(err, simtag.ErrRemoved) {
		return nil, fmt.Errorf("%w: %v", ErrTagLost, err)
	}
	return r, err
}

// Info is what the simulated tag shows at anticollision.
func (s SimTag) Info() CardInfo { return CardInfo{UID: s.Tag.AnticollisionUID(), ATS: NTAG424ATS} }
