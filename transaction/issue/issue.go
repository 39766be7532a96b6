// Package issue gives the issuing side (personalize.Issue and
// personalize.IssueSimulated, with the profile's layout) the keys a key
// provider holds for one card. Tests and the load generator use it on the
// simulated card; nothing in the top-up path calls it.
package issue

import (
	"context"

	"github.com/desfire-relay/relay/desfire/personalize"
	"github.com/desfire-relay/relay/transaction/keys"
	"github.com/desfire-relay/relay/transaction/profile"
)

// KeyVersion is the version every issued key gets.
const KeyVersion = personalize.KeyVersion

// CardKeys returns the keys kp gives the card with this UID for the
// profile's application, each of version KeyVersion.
func CardKeys(p profile.Profile, kp keys.Provider, uid []byte) personalize.KeyFunc {
	return personalize.CardKeys(p.Layout(), uid, func(ctx context.Context, ref keys.Ref, uid []byte) ([]byte, error) {
		return kp.CardKey(ctx, ref, uid)
	})
}
