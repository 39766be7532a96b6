package bridge

import (
	"context"
	"errors"
	"fmt"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/desfire/personalize"
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

// Info is what the simulated card shows at anticollision (a new random
// ID at every tap for a card with a random ID).
func (s Sim) Info() CardInfo { return CardInfo{UID: s.Card.AnticollisionUID()} }

// IssueSim personalises a blank simulated card with the key file's keys
// for the named built-in card layout (personalize.Builtin, the server's
// built-in profile of that name), through the real issuance commands, and
// presents it to the reader, so a bridge can run the whole flow without
// hardware. initial is the value file's starting balance.
func IssueSim(ctx context.Context, keyFile, layout string, uid []byte, initial int32) (*simcard.Card, error) {
	ks, err := personalize.LoadKeySet(keyFile)
	if err != nil {
		return nil, fmt.Errorf("keys for the simulated card: %w", err)
	}
	l, err := personalize.Builtin(layout)
	if err != nil {
		return nil, fmt.Errorf("card layout: %w", err)
	}
	return personalize.IssueSimulated(ctx, l, personalize.CardKeys(l, uid, ks.Source()), uid, initial)
}

// SimCards is an agent's card source for a desk reader with one simulated
// card lying on it: each session finds the card presented afresh.
func SimCards(card *simcard.Card) CardSource {
	return func(context.Context) (desfire.Transport, CardInfo, error) {
		if err := card.Tap(); err != nil {
			return nil, CardInfo{}, fmt.Errorf("present the simulated card: %w", err)
		}
		return Sim{Card: card}, CardInfo{UID: card.UID()}, nil
	}
}
