package postgres_test

import (
	"testing"

	"github.com/desfire-relay/relay/transaction/ledger/ledgertest"
)

func TestOperations(t *testing.T) { ledgertest.RunOperations(t, open) }
