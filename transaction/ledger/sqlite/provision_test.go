package sqlite_test

import (
	"testing"

	"github.com/desfire-relay/relay/transaction/ledger/ledgertest"
)

func TestProvisionLedger(t *testing.T) { ledgertest.RunProvision(t, open) }
