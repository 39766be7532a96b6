package bridge

import (
	"context"
	"errors"
	"fmt"

	"github.com/desfire-relay/relay/desfire/simcard"
)

// Sim is the simulated card as a bridge backend: a card that leaves the
// field is reported to the server as tag_lost, as a phone would.
type Sim struct{ Card *simcard.Card }

// Transmit implements desfire.Transport.
func (s Sim) Transmit(ctx context.Context, capdu []byte) ([]byte, error) {
	r, err := s.Card.Transmit(ctx, capdu)
	if errors.Is(err, simcard.ErrCardRemoved) {
		return nil, fmt.Errorf("%w: %v", ErrTagLost, err)
	}
	return r, err
}

// Info is what the simulated card shows at anticollision.
func (s Sim) Info() CardInfo { return CardInfo{UID: s.Card.UID()} }
