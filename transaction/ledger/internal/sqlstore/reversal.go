package sqlstore

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/desfire-relay/relay/transaction/ledger"
)

// CreateReversal implements ledger.Ledger.
func (s *Store) CreateReversal(ctx context.Context, tenant string, original uuid.UUID, now time.Time) (ledger.TopUp, bool, error) {
	if tenant == "" {
		tenant = ledger.DefaultTenant
	}
	if now.IsZero() {
		return ledger.TopUp{}, false, &ledger.ValidationError{Field: "now", Reason: "missing"}
	}
	id, err := uuid.NewRandom()
	if err != nil {
		return ledger.TopUp{}, false, fmt.Errorf("new reversal id: %w", err)
	}
	at := micros(now)
	var (
		out     ledger.TopUp
		created bool
	)
	err = s.db.InTx(ctx, func(q Querier) error {
		created = false
		orig, err := s.getTopUp(ctx, q, original, true)
		if err != nil || orig.Tenant != tenant {
			return fmt.Errorf("top-up %s: %w", original, ledger.ErrNotFound)
		}
		// One reversal per credit: asking again returns it.
		out, err = scanTopUp(q.QueryRow(ctx, `SELECT `+topUpCols+` FROM topups WHERE reverses = $1`, original.String()))
		if err == nil {
			return nil
		}
		if !errors.Is(err, ErrNoRows) {
			return fmt.Errorf("read reversal of %s: %w", original, err)
		}
		switch {
		case orig.Kind == ledger.TopUpReversal:
			return fmt.Errorf("top-up %s is itself a reversal: %w", original, ledger.ErrNotReversible)
		case orig.Status != ledger.StatusApplied:
			return fmt.Errorf("top-up %s is %s, only an applied credit can be reversed: %w", original, orig.Status, ledger.ErrNotReversible)
		case orig.CardUID == "":
			return fmt.Errorf("top-up %s names no card: %w", original, ledger.ErrNotReversible)
		}
		key := "reversal:" + original.String()
		hash := sha256.Sum256([]byte(key))
		out, err = scanTopUp(q.QueryRow(ctx, `INSERT INTO topups (id, idempotency_key, request_hash, amount, currency, card_uid, reference,
	status, log_ref, attempts, fence, created_at, updated_at, expires_at, tenant, kind, reverses)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, 0, $10, $10, $11, $12, $13, $14)
RETURNING `+topUpCols,
			id.String(), scopeKey(tenant, key), hash[:], orig.Amount, orig.Currency, orig.CardUID, orig.Reference,
			ledger.StatusPending.String(), ledger.LogRef(id), at, micros(now.Add(s.cfg.PendingTTL)), tenant,
			string(ledger.TopUpReversal), original.String()))
		if err != nil {
			return fmt.Errorf("insert reversal of %s: %w", original, err)
		}
		created = true
		return nil
	})
	if err != nil {
		return ledger.TopUp{}, false, err
	}
	return out, created, nil
}
