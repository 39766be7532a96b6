package postgres_test

import (
	"testing"

	"github.com/desfire-relay/relay/internal/testenv"
	"github.com/desfire-relay/relay/transaction/ledger/ledgertest"
)

func TestSUN(t *testing.T) {
	testenv.DatabaseURL(t) // skip or fail once, not per subtest
	ledgertest.RunSUN(t, open)
}
