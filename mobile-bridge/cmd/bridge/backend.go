package main

import (
	"context"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/mobile-bridge/bridge"
)

// cardBackend is the card a session talks to, whichever backend
// provides it (the simulated card, or a PC/SC reader with -pcsc).
type cardBackend struct {
	card     desfire.Transport
	info     bridge.CardInfo
	platform string // hello.bridge.platform
	// close releases the backend (nil: nothing to release).
	close func() error
	// retap waits for the card to be presented again after it was lost
	// (nil: the bridge does not offer re-tap within a session).
	retap func(ctx context.Context) (bridge.CardInfo, error)
}
