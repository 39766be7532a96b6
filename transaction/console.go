package transaction

import (
	"context"

	"github.com/google/uuid"

	"github.com/desfire-relay/relay/transaction/ledger"
)

// TenantAttempts returns the attempts on tenant's top-up, oldest first
// (the support console's top-up page).
func (s *Service) TenantAttempts(ctx context.Context, tenant string, id uuid.UUID) ([]ledger.Attempt, error) {
	if _, err := s.TenantTopUp(ctx, tenant, id); err != nil {
		return nil, err
	}
	return s.cfg.Ledger.ListAttempts(ctx, id)
}
