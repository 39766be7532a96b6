package sqlite_test

import (
	"testing"

	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/ledger/ledgertest"
)

func TestOutbox(t *testing.T) {
	ledgertest.RunOutbox(t, func(t testing.TB) ledger.Ledger { return openConfig(t, ledger.Config{Outbox: true}) }, open)
}
