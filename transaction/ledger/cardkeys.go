package ledger

import (
	"context"
	"time"
)

// CardKey is what the ledger knows of one key on one card: the version
// the card last proved it holds (an authentication with that version's
// key) and, while a roll-forward may have changed it, the version the
// ChangeKey carried.
type CardKey struct {
	CardUID string
	AID     uint32
	KeyNo   byte
	// Version is the version the card last proved.
	Version byte
	// Pending is the version a ChangeKey that left the server may have
	// installed, nil when none is in flight.
	Pending   *byte
	UpdatedAt time.Time
}

// CardKeys records key roll-forwards, so that a ChangeKey torn at any
// point is understood at the card's next tap. Both backends implement it.
type CardKeys interface {
	// IntendCardKey records, before a ChangeKey leaves, that the card
	// proved version from and may hold version to afterwards.
	IntendCardKey(ctx context.Context, card string, aid uint32, keyNo, from, to byte, now time.Time) (CardKey, error)
	// ProveCardKey records that the card proved it holds version (an
	// authentication with that key succeeded); an in-flight version is
	// cleared, whichever one the card turned out to hold.
	ProveCardKey(ctx context.Context, card string, aid uint32, keyNo, version byte, now time.Time) (CardKey, error)
	// GetCardKey returns the record, ErrNotFound when there is none.
	GetCardKey(ctx context.Context, card string, aid uint32, keyNo byte) (CardKey, error)
}
