package personalize

import (
	"context"
	"fmt"

	"github.com/desfire-relay/relay/desfire/simcard"
)

// IssueSimulated personalises a blank simulated card with UID uid for
// layout l with the keys key returns, through the real issuance commands,
// and presents it again (as after issuance at a kiosk). initial is the
// value file's starting balance. It is the one issuer of simulated cards:
// the simulated bridge and the tests both call it.
func IssueSimulated(ctx context.Context, l Layout, key KeyFunc, uid []byte, initial int32) (*simcard.Card, error) {
	return IssueSimulatedCard(ctx, l, key, simcard.Options{UID: uid}, initial)
}

// IssueSimulatedCard is IssueSimulated on a card made with opts
// (generation, UID length, random ID).
func IssueSimulatedCard(ctx context.Context, l Layout, key KeyFunc, opts simcard.Options, initial int32) (*simcard.Card, error) {
	card, err := simcard.New(opts)
	if err != nil {
		return nil, fmt.Errorf("simulated card: %w", err)
	}
	if err := Issue(ctx, card, l, key, initial, nil); err != nil {
		return nil, fmt.Errorf("issue simulated card: %w", err)
	}
	if err := card.Tap(); err != nil {
		return nil, fmt.Errorf("present simulated card: %w", err)
	}
	return card, nil
}
