package postgres_test

import (
	"testing"

	"github.com/desfire-relay/relay/transaction/ledger/ledgertest"
)

func TestReaderLedger(t *testing.T) { ledgertest.RunReaders(t, open) }
