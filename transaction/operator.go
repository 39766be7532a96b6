package transaction

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/desfire-relay/relay/transaction/ledger"
)

// ListTopUps returns top-ups matching f (the operator's queue of
// unresolved top-ups, reconciliation).
func (s *Service) ListTopUps(ctx context.Context, f ledger.Filter) ([]ledger.TopUp, error) {
	return s.cfg.Ledger.ListTopUps(ctx, f)
}

// Resolve records an operator's decision on a top-up whose card never
// came back (in_doubt, or in_progress left by a dead session): applied or
// failed, with who and why. The decision is final for sessions; a later
// tap of the card that proves otherwise is recorded as a conflict on the
// top-up and never changes the money.
func (s *Service) Resolve(ctx context.Context, id uuid.UUID, outcome ledger.Status, actor, reason string) (ledger.TopUp, error) {
	t, err := s.cfg.Ledger.GetTopUp(ctx, id)
	if err != nil {
		return ledger.TopUp{}, err
	}
	if t.Status != ledger.StatusInDoubt && t.Status != ledger.StatusInProgress {
		return ledger.TopUp{}, fmt.Errorf("top-up %s is %s, only in_doubt or in_progress can be resolved: %w", id, t.Status, ErrNotResolvable)
	}
	return s.cfg.Ledger.Resolve(ctx, ledger.Resolution{TopUpID: id, From: t.Status, Outcome: outcome, Actor: actor, Reason: reason, Now: s.cfg.Now()})
}

// Resolutions returns the operator decisions recorded on a top-up.
func (s *Service) Resolutions(ctx context.Context, id uuid.UUID) ([]ledger.ResolutionEntry, error) {
	return s.cfg.Ledger.ListResolutions(ctx, id)
}

// OldestUnresolved is the age of the oldest in_progress or in_doubt
// top-up since its last change (ok=false when there is none).
func (s *Service) OldestUnresolved(ctx context.Context) (time.Duration, bool, error) {
	at, ok, err := s.cfg.Ledger.OldestUnresolved(ctx)
	if err != nil || !ok {
		return 0, ok, err
	}
	return s.cfg.Now().Sub(at), true, nil
}
