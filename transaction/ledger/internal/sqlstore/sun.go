package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/desfire-relay/relay/transaction/ledger"
)

var _ ledger.SUNStore = (*Store)(nil)

// maxSUNSignals bounds the signals SUNTag returns (newest first).
const maxSUNSignals = 50

// sunAccept inserts a first-seen tag or moves a known tag's counter up,
// keeping the previous accepted message in prev_*: in PostgreSQL and
// SQLite the right-hand sides of SET read the row as it was. The WHERE of
// DO UPDATE is re-checked on the locked, newest row version, so two
// requests with one counter cannot both get a row back.
const sunAccept = `INSERT INTO sun_tags (uid, template, last_counter, last_mac, last_at, last_region, verified, first_at, tenant)
VALUES ($1, $2, $3, $4, $5, $6, 1, $5, $7)
ON CONFLICT (uid) DO UPDATE SET
	prev_counter = sun_tags.last_counter, prev_at = sun_tags.last_at, prev_region = sun_tags.last_region,
	last_counter = excluded.last_counter, last_mac = excluded.last_mac, last_at = excluded.last_at,
	last_region = excluded.last_region, verified = sun_tags.verified + 1, template = excluded.template
WHERE sun_tags.last_counter < excluded.last_counter
RETURNING prev_counter, prev_at, prev_region`

// sunAcceptKnown is sunAccept for templates that accept registered tags
// only: no insert.
const sunAcceptKnown = `UPDATE sun_tags SET
	prev_counter = last_counter, prev_at = last_at, prev_region = last_region,
	last_counter = $3, last_mac = $4, last_at = $5, last_region = $6, verified = verified + 1, template = $2
WHERE uid = $1 AND last_counter < $3
RETURNING prev_counter, prev_at, prev_region`

// sunReplay counts a refused message and reads what refused it.
const sunReplay = `UPDATE sun_tags SET replays = replays + 1 WHERE uid = $1 RETURNING last_counter, last_mac`

// write runs one statement that writes and returns a row. A database
// with one writer (no ForUpdate suffix: SQLite) serves lone statements
// from a read pool, so there the statement runs in a transaction on the
// writer; elsewhere it is its own transaction, one round trip.
func (s *Store) write(ctx context.Context, fn func(Querier) error) error {
	if s.d.ForUpdate == "" {
		return s.db.InTx(ctx, fn)
	}
	return fn(s.db)
}

// RecordSUN implements ledger.SUNStore.
func (s *Store) RecordSUN(ctx context.Context, c ledger.SUNCheck) (ledger.SUNRecord, error) {
	if c.UID == "" || c.Counter > 1<<24-1 {
		return ledger.SUNRecord{}, fmt.Errorf("record SUN for %q counter %d: %w", c.UID, c.Counter, ledger.ErrInvalid)
	}
	if c.Tenant == "" {
		c.Tenant = ledger.DefaultTenant
	}
	var rec ledger.SUNRecord
	q, args := sunAccept, []any{c.UID, c.Template, int64(c.Counter), c.MAC, micros(c.At), c.Region, c.Tenant}
	if c.RequireKnown {
		q, args = sunAcceptKnown, args[:6]
	}
	err := s.write(ctx, func(tx Querier) error {
		rec = ledger.SUNRecord{}
		var (
			prevCtr, prevAt *int64
			prevRegion      *string
		)
		err := tx.QueryRow(ctx, q, args...).Scan(&prevCtr, &prevAt, &prevRegion)
		switch {
		case err == nil:
			rec.Accepted, rec.Known = true, prevCtr != nil || c.RequireKnown
			if prevCtr != nil && *prevCtr >= 0 {
				rec.HasPrev, rec.PrevCounter = true, uint32(*prevCtr)
				if prevAt != nil {
					rec.PrevAt = fromMicros(*prevAt)
				}
				if prevRegion != nil {
					rec.PrevRegion = *prevRegion
				}
			}
			return nil
		case !errors.Is(err, ErrNoRows):
			return fmt.Errorf("accept SUN counter: %w", err)
		}
		err = tx.QueryRow(ctx, sunReplay, c.UID).Scan(&rec.LastCounter, &rec.LastMAC)
		switch {
		case err == nil:
			rec.Known = true
		case errors.Is(err, ErrNoRows):
			// Only with RequireKnown: the tag was never registered.
		default:
			return fmt.Errorf("count SUN replay: %w", err)
		}
		return nil
	})
	if err != nil {
		return ledger.SUNRecord{}, fmt.Errorf("record SUN for %s: %w", c.UID, err)
	}
	return rec, nil
}

// AddSUNSignals implements ledger.SUNStore.
func (s *Store) AddSUNSignals(ctx context.Context, uid string, sigs []ledger.SUNSignal) error {
	if len(sigs) == 0 {
		return nil
	}
	err := s.db.InTx(ctx, func(tx Querier) error {
		var last int64
		err := tx.QueryRow(ctx, `UPDATE sun_tags SET signals = signals + $2 WHERE uid = $1 RETURNING signals`,
			uid, int64(len(sigs))).Scan(&last)
		if errors.Is(err, ErrNoRows) {
			return fmt.Errorf("flag tag %s: %w", uid, ledger.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("flag tag: %w", err)
		}
		seq := last - int64(len(sigs))
		for _, g := range sigs {
			seq++
			if _, err := tx.Exec(ctx, `INSERT INTO sun_signals (uid, seq, kind, counter, detail, at) VALUES ($1, $2, $3, $4, $5, $6)`,
				uid, seq, g.Kind, int64(g.Counter), g.Detail, micros(g.At)); err != nil {
				return fmt.Errorf("insert signal: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("SUN signals for %s: %w", uid, err)
	}
	return nil
}

// SUNTag implements ledger.SUNStore.
func (s *Store) SUNTag(ctx context.Context, uid string) (ledger.SUNTag, error) {
	var (
		t       ledger.SUNTag
		lastAt  *int64
		first   int64
		signals int64
	)
	err := s.db.QueryRow(ctx, `SELECT uid, tenant, template, last_counter, last_at, first_at, verified, replays, signals
FROM sun_tags WHERE uid = $1`, uid).Scan(&t.UID, &t.Tenant, &t.Template, &t.LastCounter, &lastAt, &first, &t.Verified, &t.Replays, &signals)
	if errors.Is(err, ErrNoRows) {
		return ledger.SUNTag{}, fmt.Errorf("SUN tag %s: %w", uid, ledger.ErrNotFound)
	}
	if err != nil {
		return ledger.SUNTag{}, fmt.Errorf("SUN tag %s: %w", uid, err)
	}
	t.LastAt, t.FirstAt, t.CloneFlag = fromMicrosPtr(lastAt), fromMicros(first), signals > 0
	rows, err := s.db.Query(ctx, `SELECT kind, counter, detail, at FROM sun_signals WHERE uid = $1 ORDER BY seq DESC LIMIT $2`, uid, maxSUNSignals)
	if err != nil {
		return ledger.SUNTag{}, fmt.Errorf("SUN signals of %s: %w", uid, err)
	}
	defer rows.Close()
	t.Signals = []ledger.SUNSignal{}
	for rows.Next() {
		var (
			g   ledger.SUNSignal
			ctr int64
			at  int64
		)
		if err := rows.Scan(&g.Kind, &ctr, &g.Detail, &at); err != nil {
			return ledger.SUNTag{}, fmt.Errorf("SUN signals of %s: %w", uid, err)
		}
		g.Counter, g.At = uint32(ctr), fromMicros(at)
		t.Signals = append(t.Signals, g)
	}
	if err := rows.Err(); err != nil {
		return ledger.SUNTag{}, fmt.Errorf("SUN signals of %s: %w", uid, err)
	}
	return t, nil
}

// RegisterSUNTag implements ledger.SUNStore.
func (s *Store) RegisterSUNTag(ctx context.Context, uid, template, tenant string, at time.Time) error {
	if uid == "" || template == "" {
		return fmt.Errorf("register SUN tag %q: %w", uid, ledger.ErrInvalid)
	}
	if err := ledger.ValidateTenant(tenant); err != nil {
		return fmt.Errorf("register SUN tag %s: %w", uid, err)
	}
	_, err := s.db.Exec(ctx, `INSERT INTO sun_tags (uid, template, last_counter, first_at, tenant) VALUES ($1, $2, -1, $3, $4)
ON CONFLICT (uid) DO NOTHING`, uid, template, micros(at), tenant)
	if err != nil {
		return fmt.Errorf("register SUN tag %s: %w", uid, err)
	}
	return nil
}
