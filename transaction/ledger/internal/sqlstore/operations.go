package sqlstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/desfire-relay/relay/transaction/ledger"
)

// BlockCard implements ledger.Ledger.
func (s *Store) BlockCard(ctx context.Context, b ledger.CardBlock) (ledger.CardBlock, error) {
	b, err := b.Check()
	if err != nil {
		return ledger.CardBlock{}, err
	}
	id, err := uuid.NewRandom()
	if err != nil {
		return ledger.CardBlock{}, fmt.Errorf("new block event id: %w", err)
	}
	at := micros(b.At)
	var out ledger.CardBlock
	err = s.db.InTx(ctx, func(q Querier) error {
		// A block that exists keeps its time; its reason and actor follow
		// the latest operator.
		if _, err := q.Exec(ctx, `INSERT INTO card_blocks (tenant, card_uid, reason, actor, blocked_at) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (tenant, card_uid) DO UPDATE SET reason = excluded.reason, actor = excluded.actor`,
			b.Tenant, b.CardUID, b.Reason, b.Actor, at); err != nil {
			return fmt.Errorf("block card: %w", err)
		}
		if err := blockEvent(ctx, q, id, b.Tenant, b.CardUID, "block", b.Reason, b.Actor, at); err != nil {
			return err
		}
		var ok bool
		out, ok, err = s.cardBlock(ctx, q, b.Tenant, b.CardUID)
		if err == nil && !ok {
			err = errors.New("block card: row missing after insert")
		}
		return err
	})
	if err != nil {
		return ledger.CardBlock{}, err
	}
	return out, nil
}

func blockEvent(ctx context.Context, q Querier, id uuid.UUID, tenant, card, action, reason, actor string, at int64) error {
	if _, err := q.Exec(ctx, `INSERT INTO card_block_events (id, tenant, card_uid, action, reason, actor, at) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		id.String(), tenant, card, action, reason, actor, at); err != nil {
		return fmt.Errorf("record %s of card: %w", action, err)
	}
	return nil
}

// UnblockCard implements ledger.Ledger.
func (s *Store) UnblockCard(ctx context.Context, u ledger.CardUnblock) (bool, error) {
	u, err := u.Check()
	if err != nil {
		return false, err
	}
	id, err := uuid.NewRandom()
	if err != nil {
		return false, fmt.Errorf("new block event id: %w", err)
	}
	var removed bool
	err = s.db.InTx(ctx, func(q Querier) error {
		n, err := q.Exec(ctx, `DELETE FROM card_blocks WHERE tenant = $1 AND card_uid = $2`, u.Tenant, u.CardUID)
		if err != nil {
			return fmt.Errorf("unblock card: %w", err)
		}
		removed = n > 0
		if !removed {
			return nil
		}
		return blockEvent(ctx, q, id, u.Tenant, u.CardUID, "unblock", "", u.Actor, micros(u.Now))
	})
	if err != nil {
		return false, err
	}
	return removed, nil
}

// CardBlock implements ledger.Ledger.
func (s *Store) CardBlock(ctx context.Context, tenant, cardUID string) (ledger.CardBlock, bool, error) {
	if err := ledger.ValidateTenant(tenant); err != nil {
		return ledger.CardBlock{}, false, err
	}
	uid, err := ledger.NormalizeCardUID(cardUID)
	if err != nil {
		return ledger.CardBlock{}, false, err
	}
	return s.cardBlock(ctx, s.db, tenant, uid)
}

func (s *Store) cardBlock(ctx context.Context, q Querier, tenant, uid string) (ledger.CardBlock, bool, error) {
	b := ledger.CardBlock{Tenant: tenant, CardUID: uid}
	var at int64
	err := q.QueryRow(ctx, `SELECT reason, actor, blocked_at FROM card_blocks WHERE tenant = $1 AND card_uid = $2`,
		tenant, uid).Scan(&b.Reason, &b.Actor, &at)
	if errors.Is(err, ErrNoRows) {
		return ledger.CardBlock{}, false, nil
	}
	if err != nil {
		return ledger.CardBlock{}, false, fmt.Errorf("read card block: %w", err)
	}
	b.At = fromMicros(at)
	return b, true, nil
}

// CancelTopUp implements ledger.Ledger.
func (s *Store) CancelTopUp(ctx context.Context, c ledger.Cancellation) (ledger.TopUp, error) {
	if err := c.Check(); err != nil {
		return ledger.TopUp{}, err
	}
	ended, err := json.Marshal(ledger.SessionOutcome{ErrorCode: ledger.CodeTopUpCancelled})
	if err != nil {
		return ledger.TopUp{}, fmt.Errorf("encode session outcome: %w", err)
	}
	now := micros(c.At)
	var out ledger.TopUp
	err = s.db.InTx(ctx, func(q Querier) error {
		// The compare-and-set: a session starting at the same moment moves
		// pending → in_progress under the same row; exactly one of the two
		// finds the status it expects.
		out, err = scanTopUp(q.QueryRow(ctx, `UPDATE topups SET status = $1, updated_at = $2
WHERE id = $3 AND status = $4
RETURNING `+topUpCols, ledger.StatusCancelled.String(), now, c.TopUpID.String(), c.From.String()))
		if errors.Is(err, ErrNoRows) {
			cur, gerr := s.getTopUp(ctx, q, c.TopUpID, false)
			if gerr != nil {
				return gerr
			}
			return fmt.Errorf("top-up %s is %s, not %s: %w", c.TopUpID, cur.Status, c.From, ledger.ErrConflict)
		}
		if err != nil {
			return fmt.Errorf("cancel top-up %s: %w", c.TopUpID, err)
		}
		if _, err := q.Exec(ctx, `INSERT INTO topup_cancellations (topup_id, actor, from_status, reason, at) VALUES ($1, $2, $3, $4, $5)`,
			c.TopUpID.String(), c.Actor, c.From.String(), c.Reason, now); err != nil {
			return fmt.Errorf("record cancellation: %w", err)
		}
		if err := s.recordEvent(ctx, q, ledger.EventForStatus(ledger.StatusCancelled), out.Tenant, out.ID, uuid.Nil, ledger.StatusCancelled.String(), now); err != nil {
			return err
		}
		// Its bridge tokens stop working: a bridge holding one is refused
		// as for a used token, and their sessions end. A session whose
		// token was already consumed is running: it finds the top-up
		// cancelled when it tries to start it, and ends itself.
		return endUnusedSessions(ctx, q, c.TopUpID, string(ended), now)
	})
	if err != nil {
		return ledger.TopUp{}, fmt.Errorf("cancel %s top-up: %w", c.From, err)
	}
	return out, nil
}

// endUnusedSessions retires the unused bridge tokens of a top-up's open
// sessions and ends those sessions failed with the outcome given.
func endUnusedSessions(ctx context.Context, q Querier, topUpID uuid.UUID, outcome string, now int64) error {
	rows, err := q.Query(ctx, `UPDATE bridge_tokens SET used_at = $1
WHERE used_at IS NULL AND session_id IN (SELECT id FROM sessions WHERE topup_id = $2 AND status = $3)
RETURNING session_id`, now, topUpID.String(), ledger.SessionOpen.String())
	if err != nil {
		return fmt.Errorf("retire bridge tokens: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return fmt.Errorf("retire bridge tokens: %w", err)
		}
		ids = append(ids, id)
	}
	err = rows.Err()
	rows.Close()
	if err != nil {
		return fmt.Errorf("retire bridge tokens: %w", err)
	}
	for _, id := range ids {
		if _, err := q.Exec(ctx, `UPDATE sessions SET status = $1, outcome = $2, ended_at = $3 WHERE id = $4 AND status = $5`,
			ledger.SessionFailed.String(), outcome, now, id, ledger.SessionOpen.String()); err != nil {
			return fmt.Errorf("end session %s: %w", id, err)
		}
	}
	return nil
}

// Cancellation implements ledger.Ledger.
func (s *Store) Cancellation(ctx context.Context, id uuid.UUID) (ledger.Cancellation, error) {
	c := ledger.Cancellation{TopUpID: id}
	var (
		from string
		at   int64
	)
	err := s.db.QueryRow(ctx, `SELECT actor, from_status, reason, at FROM topup_cancellations WHERE topup_id = $1`,
		id.String()).Scan(&c.Actor, &from, &c.Reason, &at)
	if errors.Is(err, ErrNoRows) {
		return ledger.Cancellation{}, fmt.Errorf("cancellation of %s: %w", id, ledger.ErrNotFound)
	}
	if err != nil {
		return ledger.Cancellation{}, fmt.Errorf("read cancellation of %s: %w", id, err)
	}
	if c.From, err = ledger.ParseStatus(from); err != nil {
		return ledger.Cancellation{}, fmt.Errorf("stored cancellation of %s: %w", id, err)
	}
	c.At = fromMicros(at)
	return c, nil
}

// exportPage is how many rows ExportTopUps reads per query.
const exportPage = 500

// ExportTopUps implements ledger.Ledger. It pages by (created_at, id),
// which never change, so a top-up that changes during the export is
// neither skipped nor repeated.
func (s *Store) ExportTopUps(ctx context.Context, f ledger.ExportFilter, fn func(ledger.TopUp) error) error {
	if err := f.Check(); err != nil {
		return err
	}
	afterAt, afterID := micros(f.From)-1, ""
	for {
		page, err := s.listTopUps(ctx, `tenant = $1 AND created_at < $2 AND created_at >= $3
	AND (created_at > $4 OR (created_at = $4 AND id > $5))
ORDER BY created_at ASC, id ASC LIMIT $6`, f.Tenant, micros(f.To), micros(f.From), afterAt, afterID, exportPage)
		if err != nil {
			return fmt.Errorf("export top-ups: %w", err)
		}
		for _, t := range page {
			if err := fn(t); err != nil {
				return err
			}
		}
		if len(page) < exportPage {
			return nil
		}
		last := page[len(page)-1]
		afterAt, afterID = micros(last.CreatedAt), last.ID.String()
	}
}
