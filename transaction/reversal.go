package transaction

import (
	"context"
	"fmt"

	"github.com/google/uuid"

	"github.com/desfire-relay/relay/transaction/ledger"
)

// TenantReversal creates (once per credit) the reversal of tenant's
// applied top-up original — an entry that debits the same amount back
// from the same card — and, while it is payable, a bridge ticket for the
// session that runs it with the card present. The reversal follows the
// top-up's state machine and evidence rules exactly: the debit, the log
// record carrying the reversal's own reference and the commit leave
// together, and only the Transaction MAC (or the commit's MAC, or the
// card's log on a later tap) moves it to applied.
func (s *Service) TenantReversal(ctx context.Context, tenant string, original uuid.UUID) (ledger.TopUp, *Ticket, bool, error) {
	rv, created, err := s.cfg.Ledger.CreateReversal(ctx, tenant, original, s.cfg.Now())
	if err != nil {
		return ledger.TopUp{}, nil, false, err
	}
	switch rv.Status {
	case ledger.StatusPending, ledger.StatusFailed, ledger.StatusInDoubt, ledger.StatusInProgress:
		if rv.Resolution != "" {
			return rv, nil, created, nil
		}
		tk, err := s.TenantTopUpTicket(ctx, tenant, rv.ID)
		if err != nil {
			return ledger.TopUp{}, nil, false, fmt.Errorf("reversal %s ticket: %w", rv.ID, err)
		}
		if rv.Status == ledger.StatusFailed {
			if rv, err = s.cfg.Ledger.GetTopUp(ctx, rv.ID); err != nil {
				return ledger.TopUp{}, nil, false, err
			}
		}
		return rv, tk, created, nil
	}
	return rv, nil, created, nil
}
