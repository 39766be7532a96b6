package postgres_test

import (
	"testing"

	"github.com/desfire-relay/relay/internal/testenv"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/ledger/ledgertest"
)

func TestOutbox(t *testing.T) {
	testenv.DatabaseURL(t)
	ledgertest.RunOutbox(t, func(t testing.TB) ledger.Ledger { return openConfig(t, ledger.Config{Outbox: true}) }, open)
}
