package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/desfire-relay/relay/transaction/ledger"
)

// acceptTMC records a commit proof's Transaction MAC counter for the card
// and application, refusing one that is not above the last accepted.
func (s *Store) acceptTMC(ctx context.Context, q Querier, card string, app uint32, tmc uint32, now int64) error {
	if card == "" {
		return &ledger.ValidationError{Field: "card_uid", Reason: "a Transaction MAC counter needs a card"}
	}
	n, err := q.Exec(ctx, `INSERT INTO card_tmacs (card_uid, aid, tmc, updated_at) VALUES ($1, $2, $3, $4)
ON CONFLICT (card_uid, aid) DO UPDATE SET tmc = excluded.tmc, updated_at = excluded.updated_at
WHERE card_tmacs.tmc < excluded.tmc`, card, int64(app), int64(tmc), now)
	if err != nil {
		return fmt.Errorf("check transaction MAC counter: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("card %s application %06X, counter %d: %w", card, app, tmc, ledger.ErrTMCReplay)
	}
	return nil
}

// Resolve implements ledger.Ledger.
func (s *Store) Resolve(ctx context.Context, r ledger.Resolution) (ledger.TopUp, error) {
	if err := r.Check(); err != nil {
		return ledger.TopUp{}, err
	}
	id, err := uuid.NewRandom()
	if err != nil {
		return ledger.TopUp{}, fmt.Errorf("new resolution id: %w", err)
	}
	now := micros(r.Now)
	var applied any
	if r.Outcome == ledger.StatusApplied {
		applied = now
	}
	var out ledger.TopUp
	err = s.db.InTx(ctx, func(q Querier) error {
		out, err = scanTopUp(q.QueryRow(ctx, `UPDATE topups SET status = $1, updated_at = $2, applied_at = $3,
	resolution = 'manual', resolution_checked = 0, conflict = ''
WHERE id = $4 AND status = $5
RETURNING `+topUpCols, r.Outcome.String(), now, applied, r.TopUpID.String(), r.From.String()))
		if errors.Is(err, ErrNoRows) {
			if _, gerr := s.getTopUp(ctx, q, r.TopUpID, false); gerr != nil {
				return gerr
			}
			return fmt.Errorf("top-up %s is not %s: %w", r.TopUpID, r.From, ledger.ErrConflict)
		}
		if err != nil {
			return fmt.Errorf("resolve top-up %s: %w", r.TopUpID, err)
		}
		if _, err := q.Exec(ctx, `INSERT INTO resolutions (id, topup_id, actor, from_status, outcome, reason, at)
VALUES ($1, $2, $3, $4, $5, $6, $7)`, id.String(), r.TopUpID.String(), r.Actor, r.From.String(), r.Outcome.String(), r.Reason, now); err != nil {
			return fmt.Errorf("record resolution: %w", err)
		}
		return s.recordEvent(ctx, q, ledger.EventResolved, out.Tenant, out.ID, uuid.Nil, r.Outcome.String(), now)
	})
	if err != nil {
		return ledger.TopUp{}, fmt.Errorf("resolve %s → %s: %w", r.From, r.Outcome, err)
	}
	return out, nil
}

// CheckResolution implements ledger.Ledger.
func (s *Store) CheckResolution(ctx context.Context, id uuid.UUID, conflict string, now time.Time) (ledger.TopUp, error) {
	if len(conflict) > ledger.MaxReasonLen {
		return ledger.TopUp{}, &ledger.ValidationError{Field: "conflict", Reason: "too long"}
	}
	out, err := scanTopUp(s.db.QueryRow(ctx, `UPDATE topups SET resolution_checked = 1, conflict = $1, updated_at = $2
WHERE id = $3 AND resolution = 'manual' AND resolution_checked = 0
RETURNING `+topUpCols, conflict, micros(now), id.String()))
	if errors.Is(err, ErrNoRows) {
		return ledger.TopUp{}, fmt.Errorf("top-up %s has no unchecked manual resolution: %w", id, ledger.ErrConflict)
	}
	if err != nil {
		return ledger.TopUp{}, fmt.Errorf("check resolution of %s: %w", id, err)
	}
	return out, nil
}

// ListResolutions implements ledger.Ledger.
func (s *Store) ListResolutions(ctx context.Context, topUpID uuid.UUID) ([]ledger.ResolutionEntry, error) {
	rows, err := s.db.Query(ctx, `SELECT id, topup_id, actor, from_status, outcome, reason, at
FROM resolutions WHERE topup_id = $1 ORDER BY at ASC, id ASC`, topUpID.String())
	if err != nil {
		return nil, fmt.Errorf("list resolutions: %w", err)
	}
	defer rows.Close()
	var out []ledger.ResolutionEntry
	for rows.Next() {
		var (
			e                   ledger.ResolutionEntry
			id, tid, from, outc string
			at                  int64
		)
		if err := rows.Scan(&id, &tid, &e.Actor, &from, &outc, &e.Reason, &at); err != nil {
			return nil, fmt.Errorf("list resolutions: %w", err)
		}
		var perr [4]error
		e.ID, perr[0] = uuid.Parse(id)
		e.TopUpID, perr[1] = uuid.Parse(tid)
		e.From, perr[2] = ledger.ParseStatus(from)
		e.Outcome, perr[3] = ledger.ParseStatus(outc)
		if err := errors.Join(perr[:]...); err != nil {
			return nil, fmt.Errorf("stored resolution %q: %w", id, err)
		}
		e.At = fromMicros(at)
		out = append(out, e)
	}
	return out, rows.Err()
}

// ListTopUps implements ledger.Ledger.
func (s *Store) ListTopUps(ctx context.Context, f ledger.Filter) ([]ledger.TopUp, error) {
	f, err := f.Check()
	if err != nil {
		return nil, err
	}
	where, args := "1 = 1", []any{}
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	if f.Status != 0 {
		where += " AND status = " + arg(f.Status.String())
	}
	if f.Tenant != "" {
		where += " AND tenant = " + arg(f.Tenant)
	}
	if f.CardUID != "" {
		where += " AND card_uid = " + arg(f.CardUID)
	}
	if !f.UpdatedBefore.IsZero() {
		where += " AND updated_at < " + arg(micros(f.UpdatedBefore))
	}
	if !f.AfterUpdated.IsZero() {
		u := arg(micros(f.AfterUpdated))
		where += fmt.Sprintf(" AND (updated_at > %s OR (updated_at = %s AND id > %s))", u, u, arg(f.AfterID.String()))
	}
	where += " ORDER BY updated_at ASC, id ASC LIMIT " + arg(f.Limit)
	out, err := s.listTopUps(ctx, where, args...)
	if err != nil {
		return nil, fmt.Errorf("list top-ups: %w", err)
	}
	return out, nil
}

// OldestUnresolved implements ledger.Ledger.
func (s *Store) OldestUnresolved(ctx context.Context) (time.Time, bool, error) {
	var at *int64
	if err := s.db.QueryRow(ctx, `SELECT MIN(updated_at) FROM topups WHERE status IN ('in_progress', 'in_doubt')`).Scan(&at); err != nil {
		return time.Time{}, false, fmt.Errorf("oldest unresolved top-up: %w", err)
	}
	if at == nil {
		return time.Time{}, false, nil
	}
	return fromMicros(*at), true, nil
}
