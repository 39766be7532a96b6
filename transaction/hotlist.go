package transaction

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/desfire-relay/relay/transaction/ledger"
)

// Errors of the hot list and cancellation.
var (
	// ErrCardBlocked: the card is on the tenant's hot list; no top-up may
	// be created for it or put on it.
	ErrCardBlocked = errors.New("transaction: card is blocked")
	// ErrNotCancellable: only a pending or failed top-up (one that never
	// reached a card) can be cancelled.
	ErrNotCancellable = errors.New("transaction: top-up cannot be cancelled")
)

// BlockCard puts a card on tenant's hot list, with who and why.
func (s *Service) BlockCard(ctx context.Context, tenant, uid, actor, reason string) (ledger.CardBlock, error) {
	return s.cfg.Ledger.BlockCard(ctx, ledger.CardBlock{Tenant: tenant, CardUID: uid, Reason: reason, Actor: actor, At: s.cfg.Now()})
}

// UnblockCard takes a card off tenant's hot list; removed is false when
// it was not blocked.
func (s *Service) UnblockCard(ctx context.Context, tenant, uid, actor string) (bool, error) {
	return s.cfg.Ledger.UnblockCard(ctx, ledger.CardUnblock{Tenant: tenant, CardUID: uid, Actor: actor, Now: s.cfg.Now()})
}

// CardBlock returns tenant's block of a card (ok=false when none).
func (s *Service) CardBlock(ctx context.Context, tenant, uid string) (ledger.CardBlock, bool, error) {
	return s.cfg.Ledger.CardBlock(ctx, tenant, uid)
}

// refuseBlocked fails with ErrCardBlocked when tenant blocked the card.
func (s *Service) refuseBlocked(ctx context.Context, tenant, uid string) error {
	b, blocked, err := s.cfg.Ledger.CardBlock(ctx, tenant, uid)
	if err != nil {
		s.ledgerError()
		return fmt.Errorf("read the hot list: %w", err)
	}
	if blocked {
		return fmt.Errorf("card %s blocked since %s: %w", MaskUID(uid), b.At.Format("2006-01-02T15:04:05Z"), ErrCardBlocked)
	}
	return nil
}

// TenantCancel cancels tenant's top-up that never reached a card (pending
// or failed): final, its bridge tokens stop working. A top-up a session
// holds or that may be on a card (in_progress, in_doubt, applied) is
// ErrNotCancellable; one that a session took at the same moment is
// ErrNotCancellable too (the ledger's compare-and-set lets one win).
func (s *Service) TenantCancel(ctx context.Context, tenant string, id uuid.UUID, actor, reason string) (ledger.TopUp, error) {
	t, err := s.TenantTopUp(ctx, tenant, id)
	if err != nil {
		return ledger.TopUp{}, err
	}
	// A failed top-up may be reopened (→ pending) between the read and
	// the compare-and-set: both are cancellable, so look again, a few
	// times; any other move ends it.
	for range 3 {
		if t.Status != ledger.StatusPending && t.Status != ledger.StatusFailed {
			break
		}
		out, err := s.cfg.Ledger.CancelTopUp(ctx, ledger.Cancellation{TopUpID: id, From: t.Status, Actor: actor, Reason: reason, At: s.cfg.Now()})
		if !errors.Is(err, ledger.ErrConflict) {
			return out, err
		}
		if t, err = s.cfg.Ledger.GetTopUp(ctx, id); err != nil {
			return ledger.TopUp{}, err
		}
	}
	return ledger.TopUp{}, fmt.Errorf("top-up %s is %s, only pending or failed can be cancelled: %w", id, t.Status, ErrNotCancellable)
}

// Cancellation returns who cancelled a top-up and why.
func (s *Service) Cancellation(ctx context.Context, id uuid.UUID) (ledger.Cancellation, error) {
	return s.cfg.Ledger.Cancellation(ctx, id)
}

// TenantExport streams tenant's top-ups created in [f.From, f.To).
func (s *Service) TenantExport(ctx context.Context, f ledger.ExportFilter, fn func(ledger.TopUp) error) error {
	return s.cfg.Ledger.ExportTopUps(ctx, f, fn)
}
