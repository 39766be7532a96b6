package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/desfire-relay/relay/transaction/ledger"
)

var _ ledger.Outbox = (*Store)(nil)

// recordEvent writes one outbox event inside the transaction q of the
// change it records (nothing when the outbox is off).
func (s *Store) recordEvent(ctx context.Context, q Querier, typ, tenant string, topUp, session uuid.UUID, status string, now int64) error {
	if !s.cfg.Outbox || typ == "" {
		return nil
	}
	id, err := uuid.NewRandom()
	if err != nil {
		return fmt.Errorf("new event id: %w", err)
	}
	if _, err := q.Exec(ctx, `INSERT INTO outbox_events (id, tenant, type, topup_id, session_id, status, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)`, id.String(), tenant, typ, idText(topUp), idText(session), status, now); err != nil {
		return fmt.Errorf("record event %s: %w", typ, err)
	}
	return nil
}

func idText(id uuid.UUID) string {
	if id == uuid.Nil {
		return ""
	}
	return id.String()
}

func parseID(s string) (uuid.UUID, error) {
	if s == "" {
		return uuid.Nil, nil
	}
	return uuid.Parse(s)
}

const eventCols = `e.id, e.tenant, e.type, e.topup_id, e.session_id, e.status, e.created_at`

func scanEvent(r Row, extra ...any) (ledger.Event, error) {
	var (
		e               ledger.Event
		id, topUp, sess string
		at              int64
		err             error
		dest            = append([]any{&id, &e.Tenant, &e.Type, &topUp, &sess, &e.Status, &at}, extra...)
	)
	if err = r.Scan(dest...); err != nil {
		return ledger.Event{}, err
	}
	if e.ID, err = uuid.Parse(id); err != nil {
		return ledger.Event{}, fmt.Errorf("stored event id %q: %w", id, err)
	}
	if e.TopUpID, err = parseID(topUp); err != nil {
		return ledger.Event{}, fmt.Errorf("stored event %s top-up: %w", id, err)
	}
	if e.SessionID, err = parseID(sess); err != nil {
		return ledger.Event{}, fmt.Errorf("stored event %s session: %w", id, err)
	}
	e.At = fromMicros(at)
	return e, nil
}

// FanOut implements ledger.Outbox.
func (s *Store) FanOut(ctx context.Context, subs []ledger.Subscription, limit int, now time.Time) (int, error) {
	created := 0
	err := s.db.InTx(ctx, func(q Querier) error {
		created = 0
		rows, err := q.Query(ctx, `SELECT `+eventCols+` FROM outbox_events e WHERE e.fanned_out = 0
ORDER BY e.created_at, e.id LIMIT $1`+s.d.SkipLocked, limit)
		if err != nil {
			return fmt.Errorf("read new events: %w", err)
		}
		var events []ledger.Event
		for rows.Next() {
			e, err := scanEvent(rows)
			if err != nil {
				rows.Close()
				return err
			}
			events = append(events, e)
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return fmt.Errorf("read new events: %w", err)
		}
		for _, e := range events {
			for _, sub := range subs {
				if sub.Tenant != e.Tenant || !slices.Contains(sub.Types, e.Type) {
					continue
				}
				if _, err := q.Exec(ctx, `INSERT INTO webhook_deliveries (event_id, endpoint, next_at) VALUES ($1, $2, $3)
ON CONFLICT (event_id, endpoint) DO NOTHING`, e.ID.String(), sub.Endpoint, micros(now)); err != nil {
					return fmt.Errorf("fan out event %s: %w", e.ID, err)
				}
				created++
			}
			if _, err := q.Exec(ctx, `UPDATE outbox_events SET fanned_out = 1 WHERE id = $1`, e.ID.String()); err != nil {
				return fmt.Errorf("mark event %s fanned out: %w", e.ID, err)
			}
		}
		return nil
	})
	return created, err
}

// ClaimDeliveries implements ledger.Outbox.
func (s *Store) ClaimDeliveries(ctx context.Context, limit int, lease time.Duration, now time.Time) ([]ledger.Delivery, error) {
	at := micros(now)
	var out []ledger.Delivery
	err := s.db.InTx(ctx, func(q Querier) error {
		out = out[:0]
		rows, err := q.Query(ctx, `SELECT `+eventCols+`, d.endpoint, d.attempts, d.next_at, d.last_error
FROM webhook_deliveries d JOIN outbox_events e ON e.id = d.event_id
WHERE d.delivered_at IS NULL AND d.next_at <= $1 AND d.claimed_until <= $1
ORDER BY d.next_at LIMIT $2`+s.d.SkipLockedOf("d"), at, limit)
		if err != nil {
			return fmt.Errorf("read due deliveries: %w", err)
		}
		for rows.Next() {
			var (
				d        ledger.Delivery
				attempts int64
				next     int64
			)
			d.Event, err = scanEvent(rows, &d.Endpoint, &attempts, &next, &d.LastError)
			if err != nil {
				rows.Close()
				return err
			}
			d.Attempts, d.NextAt = int(attempts), fromMicros(next)
			out = append(out, d)
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return fmt.Errorf("read due deliveries: %w", err)
		}
		for _, d := range out {
			if _, err := q.Exec(ctx, `UPDATE webhook_deliveries SET claimed_until = $1 WHERE event_id = $2 AND endpoint = $3`,
				micros(now.Add(lease)), d.Event.ID.String(), d.Endpoint); err != nil {
				return fmt.Errorf("claim delivery: %w", err)
			}
		}
		return nil
	})
	return out, err
}

// Delivered implements ledger.Outbox.
func (s *Store) Delivered(ctx context.Context, eventID uuid.UUID, endpoint string, now time.Time) error {
	_, err := s.db.Exec(ctx, `UPDATE webhook_deliveries SET delivered_at = $1, attempts = attempts + 1, last_error = '', claimed_until = 0
WHERE event_id = $2 AND endpoint = $3`, micros(now), eventID.String(), endpoint)
	if err != nil {
		return fmt.Errorf("record delivery of %s: %w", eventID, err)
	}
	return nil
}

// Retry implements ledger.Outbox.
func (s *Store) Retry(ctx context.Context, eventID uuid.UUID, endpoint, reason string, next time.Time) error {
	if len(reason) > 300 {
		reason = reason[:300]
	}
	_, err := s.db.Exec(ctx, `UPDATE webhook_deliveries SET attempts = attempts + 1, last_error = $1, next_at = $2, claimed_until = 0
WHERE event_id = $3 AND endpoint = $4 AND delivered_at IS NULL`, reason, micros(next), eventID.String(), endpoint)
	if err != nil {
		return fmt.Errorf("record failed delivery of %s: %w", eventID, err)
	}
	return nil
}

// Redeliver implements ledger.Outbox.
func (s *Store) Redeliver(ctx context.Context, tenant string, eventID uuid.UUID, now time.Time) (int, error) {
	var n int64
	err := s.db.InTx(ctx, func(q Querier) error {
		var found int64
		if err := q.QueryRow(ctx, `SELECT COUNT(*) FROM outbox_events WHERE id = $1 AND tenant = $2`, eventID.String(), tenant).Scan(&found); err != nil {
			return fmt.Errorf("find event %s: %w", eventID, err)
		}
		if found == 0 {
			return fmt.Errorf("event %s: %w", eventID, ledger.ErrNotFound)
		}
		var err error
		n, err = q.Exec(ctx, `UPDATE webhook_deliveries SET delivered_at = NULL, next_at = $1, claimed_until = 0 WHERE event_id = $2`,
			micros(now), eventID.String())
		if err != nil {
			return fmt.Errorf("redeliver event %s: %w", eventID, err)
		}
		return nil
	})
	return int(n), err
}

// ListEvents implements ledger.Outbox.
func (s *Store) ListEvents(ctx context.Context, tenant string, topUpID uuid.UUID) ([]ledger.Event, []ledger.Delivery, error) {
	rows, err := s.db.Query(ctx, `SELECT `+eventCols+`, COALESCE(d.endpoint, ''), COALESCE(d.attempts, 0), COALESCE(d.next_at, 0),
	COALESCE(d.last_error, ''), d.delivered_at
FROM outbox_events e LEFT JOIN webhook_deliveries d ON d.event_id = e.id
WHERE e.tenant = $1 AND e.topup_id = $2 ORDER BY e.created_at, e.id, d.endpoint`, tenant, topUpID.String())
	if err != nil {
		return nil, nil, fmt.Errorf("list events: %w", err)
	}
	defer rows.Close()
	var (
		events []ledger.Event
		dels   []ledger.Delivery
	)
	for rows.Next() {
		var (
			d              ledger.Delivery
			attempts, next int64
			delivered      *int64
		)
		d.Event, err = scanEvent(rows, &d.Endpoint, &attempts, &next, &d.LastError, &delivered)
		if err != nil {
			return nil, nil, err
		}
		if len(events) == 0 || events[len(events)-1].ID != d.Event.ID {
			events = append(events, d.Event)
		}
		if d.Endpoint != "" {
			d.Attempts, d.NextAt, d.DeliveredAt = int(attempts), fromMicros(next), fromMicrosPtr(delivered)
			dels = append(dels, d)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("list events: %w", err)
	}
	return events, dels, nil
}

// Backlog implements ledger.Outbox.
func (s *Store) Backlog(ctx context.Context) (int, error) {
	var a, b int64
	if err := s.db.QueryRow(ctx, `SELECT (SELECT COUNT(*) FROM webhook_deliveries WHERE delivered_at IS NULL),
	(SELECT COUNT(*) FROM outbox_events WHERE fanned_out = 0)`).Scan(&a, &b); err != nil {
		return 0, fmt.Errorf("count webhook backlog: %w", err)
	}
	return int(a + b), nil
}
