package sqlite_test

import (
	"testing"

	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/ledger/ledgertest"
)

func TestOperations(t *testing.T) { ledgertest.RunOperations(t, open) }

func TestCancelOutbox(t *testing.T) {
	ledgertest.RunCancelOutbox(t, func(t testing.TB) ledger.Ledger { return openConfig(t, ledger.Config{Outbox: true}) })
}
