package bridge

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/desfire-relay/relay/desfire/simcard"
	"github.com/desfire-relay/relay/transaction/issue"
	"github.com/desfire-relay/relay/transaction/keys"
	"github.com/desfire-relay/relay/transaction/profile"
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

// IssueSim personalises a blank simulated card with the key file's keys
// for the named card profile, through the real issuance commands, and
// presents it to the reader, so a bridge can run the whole flow without
// hardware. initial is the value file's starting balance.
func IssueSim(ctx context.Context, keyFile, profName string, uid []byte, initial int32) (*simcard.Card, error) {
	kp, err := keys.LoadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("keys for the simulated card: %w", err)
	}
	p, err := profile.DefaultSet().Get(profName)
	if err != nil {
		return nil, fmt.Errorf("card profile: %w", err)
	}
	card, err := simcard.New(simcard.Options{UID: uid, Rand: rand.Reader})
	if err != nil {
		return nil, fmt.Errorf("simulated card: %w", err)
	}
	if err := issue.Issue(ctx, card, p, kp, uid, initial, nil); err != nil {
		return nil, fmt.Errorf("issue simulated card: %w", err)
	}
	if err := card.Tap(); err != nil {
		return nil, fmt.Errorf("present simulated card: %w", err)
	}
	return card, nil
}
