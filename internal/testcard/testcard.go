// Package testcard issues simulated DESFire cards for tests: a blank
// simcard personalised through the real issuance commands with freshly
// generated development keys for a card profile.
package testcard

import (
	"context"
	"testing"

	"github.com/desfire-relay/relay/desfire/personalize"
	"github.com/desfire-relay/relay/desfire/simcard"
	"github.com/desfire-relay/relay/transaction/cardscript"
	"github.com/desfire-relay/relay/transaction/issue"
	"github.com/desfire-relay/relay/transaction/keys"
	"github.com/desfire-relay/relay/transaction/profile"
)

// Keys returns fresh development keys for the profile's application.
func Keys(t testing.TB, p profile.Profile) (*keys.Static, keys.File) {
	t.Helper()
	f, err := keys.DevFile(nil, p.AID)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := keys.New(f)
	if err != nil {
		t.Fatal(err)
	}
	return kp, f
}

// Issue personalises a new simulated card with kp's keys and the given
// initial value, and presents it again (as after issuance at a kiosk),
// with the simulated bridge's issuer (personalize.IssueSimulated).
func Issue(t testing.TB, p profile.Profile, kp keys.Provider, uid []byte, initial int32) *simcard.Card {
	t.Helper()
	return IssueCard(t, p, kp, simcard.Options{UID: uid}, initial)
}

// IssueCard is Issue on a simulated card made with opts (generation, UID
// length, random ID).
func IssueCard(t testing.TB, p profile.Profile, kp keys.Provider, opts simcard.Options, initial int32) *simcard.Card {
	t.Helper()
	uid := opts.UID
	if uid == nil {
		uid = []byte{0x04, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06}
	}
	card, err := personalize.IssueSimulatedCard(context.Background(), p.Layout(), issue.CardKeys(p, kp, uid), opts, initial)
	if err != nil {
		t.Fatalf("issue: %v", err)
	}
	return card
}

// KeyFunc resolves the card's keys from kp, as the server does.
func KeyFunc(p profile.Profile, kp keys.Provider, uid []byte) cardscript.KeyFunc {
	return func(ctx context.Context, no, ver byte) ([]byte, error) {
		return kp.CardKey(ctx, keys.Ref{AID: p.AID, KeyNo: no, Version: ver}, uid)
	}
}
