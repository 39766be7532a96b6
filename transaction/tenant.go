package transaction

import (
	"context"
	"fmt"

	"github.com/google/uuid"

	"github.com/desfire-relay/relay/transaction/ledger"
)

// The tenant-scoped reads of the operator API: another tenant's object is
// ErrNotFound, exactly like a missing one, so a tenant learns nothing of
// the others.

// TenantTopUp returns tenant's top-up.
func (s *Service) TenantTopUp(ctx context.Context, tenant string, id uuid.UUID) (ledger.TopUp, error) {
	t, err := s.cfg.Ledger.GetTopUp(ctx, id)
	if err != nil {
		return ledger.TopUp{}, err
	}
	if t.Tenant != tenant {
		return ledger.TopUp{}, fmt.Errorf("top-up %s: %w", id, ledger.ErrNotFound)
	}
	return t, nil
}

// TenantSession returns tenant's session.
func (s *Service) TenantSession(ctx context.Context, tenant string, id uuid.UUID) (ledger.Session, error) {
	sess, err := s.cfg.Ledger.GetSession(ctx, id)
	if err != nil {
		return ledger.Session{}, err
	}
	if sess.Tenant != tenant {
		return ledger.Session{}, fmt.Errorf("session %s: %w", id, ledger.ErrNotFound)
	}
	return sess, nil
}

// TenantCardTopUps returns tenant's top-ups of one card, newest first.
func (s *Service) TenantCardTopUps(ctx context.Context, tenant, uid string) ([]ledger.TopUp, error) {
	all, err := s.CardTopUps(ctx, uid)
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, t := range all {
		if t.Tenant == tenant {
			out = append(out, t)
		}
	}
	return out, nil
}

// TenantResolve is Resolve on tenant's top-up.
func (s *Service) TenantResolve(ctx context.Context, tenant string, id uuid.UUID, outcome ledger.Status, actor, reason string) (ledger.TopUp, error) {
	if _, err := s.TenantTopUp(ctx, tenant, id); err != nil {
		return ledger.TopUp{}, err
	}
	return s.Resolve(ctx, id, outcome, actor, reason)
}
