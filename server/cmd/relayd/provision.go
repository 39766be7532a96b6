package main

import (
	"time"

	"github.com/desfire-relay/relay/server"
	"github.com/desfire-relay/relay/transaction/keys"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/lock"
	"github.com/desfire-relay/relay/transaction/profile"
	"github.com/desfire-relay/relay/transaction/provision"
)

// provisionOptions switches the provisioning session kinds on when the
// ledger stores provisioning state (both bundled ledgers do), with the
// ledger's SUN store for registering provisioned tags.
func provisionOptions(l ledger.Ledger, kp keys.Provider, lk lock.Locker, profiles profile.Set, lockTTL, tokenTTL time.Duration) *server.ProvisionOptions {
	pl, ok1 := l.(ledger.ProvisionLedger)
	ps, ok2 := l.(ledger.ProvisionSessions)
	if !ok1 || !ok2 {
		return nil
	}
	env := &provision.Env{Ledger: pl, Keys: kp, Locker: lk, LockTTL: lockTTL}
	if st, ok := l.(ledger.SUNStore); ok {
		// Provisioned tags can be registered for SUN templates.
		env.SUN = st
	}
	return &server.ProvisionOptions{Env: env, Sessions: ps, TokenTTL: tokenTTL, Profiles: profiles}
}
