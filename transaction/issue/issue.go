// Package issue personalises a blank DESFire card for a card profile the
// way a kiosk or issuing station would (personalize.Issue with the
// profile's layout and the key provider's keys for the card). Tests use it
// on the simulated card; nothing in the top-up path calls it.
package issue

import (
	"context"
	"io"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/desfire/personalize"
	"github.com/desfire-relay/relay/transaction/keys"
	"github.com/desfire-relay/relay/transaction/profile"
)

// KeyVersion is the version every issued key gets.
const KeyVersion = personalize.KeyVersion

// Issue creates the profile's application on a blank card (PICC master key
// all-zero AES, version 0), sets its keys from kp (diversified for uid) and
// creates its files. The value file starts at initial.
func Issue(ctx context.Context, t desfire.Transport, p profile.Profile, kp keys.Provider, uid []byte, initial int32, rnd io.Reader) error {
	return personalize.Issue(ctx, t, p.Layout(), CardKeys(p, kp, uid), initial, rnd)
}

// CardKeys returns the keys kp gives the card with this UID for the
// profile's application, each of version KeyVersion.
func CardKeys(p profile.Profile, kp keys.Provider, uid []byte) personalize.KeyFunc {
	return personalize.CardKeys(p.Layout(), uid, func(ctx context.Context, ref keys.Ref, uid []byte) ([]byte, error) {
		return kp.CardKey(ctx, ref, uid)
	})
}
