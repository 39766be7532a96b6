package sqlite_test

import (
	"testing"

	"github.com/desfire-relay/relay/transaction/ledger/ledgertest"
)

func TestSUN(t *testing.T) { ledgertest.RunSUN(t, open) }
