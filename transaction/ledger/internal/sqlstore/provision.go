package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/desfire-relay/relay/transaction/ledger"
)

var _ ledger.ProvisionLedger = (*Store)(nil)

const maxProvisionKeys = 14

// provisionCard reads a card's row (locked in a transaction) or ErrNotFound.
func (s *Store) provisionCard(ctx context.Context, q Querier, uid string, lock bool) (ledger.ProvisionRecord, error) {
	query := `SELECT uid, kind, step, fence, created_at, updated_at FROM provision_cards WHERE uid = $1`
	if lock {
		query += s.d.ForUpdate
	}
	var (
		r              ledger.ProvisionRecord
		kind, step     string
		created, updat int64
	)
	err := q.QueryRow(ctx, query, uid).Scan(&r.UID, &kind, &step, &r.Fence, &created, &updat)
	if errors.Is(err, ErrNoRows) {
		return ledger.ProvisionRecord{}, fmt.Errorf("provisioning of %s: %w", uid, ledger.ErrNotFound)
	}
	if err != nil {
		return ledger.ProvisionRecord{}, fmt.Errorf("read provisioning of %s: %w", uid, err)
	}
	r.Kind, r.Step = ledger.ProvisionKind(kind), ledger.ProvisionStep(step)
	r.CreatedAt, r.UpdatedAt = fromMicros(created), fromMicros(updat)
	rows, err := q.Query(ctx, `SELECT key_no, version, pending, evidence, updated_at FROM provision_keys WHERE uid = $1 ORDER BY key_no`, uid)
	if err != nil {
		return ledger.ProvisionRecord{}, fmt.Errorf("read keys of %s: %w", uid, err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			no, ver, at int64
			pending     *int64
			k           ledger.KeyState
		)
		if err := rows.Scan(&no, &ver, &pending, &k.Evidence, &at); err != nil {
			return ledger.ProvisionRecord{}, fmt.Errorf("read keys of %s: %w", uid, err)
		}
		if no < 0 || no > 255 || ver < 0 || ver > 255 || (pending != nil && (*pending < 0 || *pending > 255)) {
			return ledger.ProvisionRecord{}, fmt.Errorf("stored key of %s out of range", uid)
		}
		k.KeyNo, k.Version, k.UpdatedAt = byte(no), byte(ver), fromMicros(at)
		if pending != nil {
			p := byte(*pending)
			k.Pending = &p
		}
		r.Keys = append(r.Keys, k)
	}
	if err := rows.Err(); err != nil {
		return ledger.ProvisionRecord{}, fmt.Errorf("read keys of %s: %w", uid, err)
	}
	return r, nil
}

// fenced locks the card's row, checks and raises its fence.
func (s *Store) fenced(ctx context.Context, q Querier, uid string, fence int64, now time.Time) (ledger.ProvisionRecord, error) {
	if fence <= 0 {
		return ledger.ProvisionRecord{}, fmt.Errorf("provisioning of %s: fence %d: %w", uid, fence, ledger.ErrInvalid)
	}
	r, err := s.provisionCard(ctx, q, uid, true)
	if err != nil {
		return r, err
	}
	if fence < r.Fence {
		return r, fmt.Errorf("provisioning of %s: fence %d below %d: %w", uid, fence, r.Fence, ledger.ErrStaleFence)
	}
	if _, err := q.Exec(ctx, `UPDATE provision_cards SET fence = $1, updated_at = $2 WHERE uid = $3`, fence, micros(now), uid); err != nil {
		return r, fmt.Errorf("provisioning of %s: %w", uid, err)
	}
	return r, nil
}

func (s *Store) provisionEvent(ctx context.Context, q Querier, uid, what, detail string, now time.Time) error {
	var last int64
	if err := q.QueryRow(ctx, `SELECT COALESCE(MAX(seq), 0) FROM provision_events WHERE uid = $1`, uid).Scan(&last); err != nil {
		return fmt.Errorf("provisioning event of %s: %w", uid, err)
	}
	_, err := q.Exec(ctx, `INSERT INTO provision_events (uid, seq, what, detail, at) VALUES ($1, $2, $3, $4, $5)`, uid, last+1, what, detail, micros(now))
	if err != nil {
		return fmt.Errorf("provisioning event of %s: %w", uid, err)
	}
	return nil
}

// BeginProvision implements ledger.ProvisionLedger.
func (s *Store) BeginProvision(ctx context.Context, uid string, kind ledger.ProvisionKind, keys int, fence int64, now time.Time) (ledger.ProvisionRecord, error) {
	if uid == "" || len(uid) > 20 || keys <= 0 || keys > maxProvisionKeys || (kind != ledger.ProvisionNTAG424 && kind != ledger.ProvisionDESFire) {
		return ledger.ProvisionRecord{}, fmt.Errorf("begin provisioning %q (%s, %d keys): %w", uid, kind, keys, ledger.ErrInvalid)
	}
	var out ledger.ProvisionRecord
	err := s.db.InTx(ctx, func(q Querier) error {
		r, err := s.fenced(ctx, q, uid, fence, now)
		switch {
		case errors.Is(err, ledger.ErrNotFound):
			if _, err := q.Exec(ctx, `INSERT INTO provision_cards (uid, kind, step, fence, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6)`,
				uid, string(kind), string(ledger.StepStarted), fence, micros(now), micros(now)); err != nil {
				return fmt.Errorf("begin provisioning %s: %w", uid, err)
			}
			for k := 0; k < keys; k++ {
				if _, err := q.Exec(ctx, `INSERT INTO provision_keys (uid, key_no, version, pending, evidence, updated_at) VALUES ($1, $2, 0, NULL, 'factory', $3)`,
					uid, k, micros(now)); err != nil {
					return fmt.Errorf("begin provisioning %s: %w", uid, err)
				}
			}
			if err := s.provisionEvent(ctx, q, uid, "begin", string(kind), now); err != nil {
				return err
			}
		case err != nil:
			return err
		case r.Kind != kind:
			return fmt.Errorf("provisioning of %s is %s, not %s: %w", uid, r.Kind, kind, ledger.ErrInvalid)
		}
		out, err = s.provisionCard(ctx, q, uid, false)
		return err
	})
	return out, err
}

// GetProvision implements ledger.ProvisionLedger.
func (s *Store) GetProvision(ctx context.Context, uid string) (ledger.ProvisionRecord, error) {
	return s.provisionCard(ctx, s.db, uid, false)
}

func keyOf(r ledger.ProvisionRecord, no byte) (ledger.KeyState, error) {
	for _, k := range r.Keys {
		if k.KeyNo == no {
			return k, nil
		}
	}
	return ledger.KeyState{}, fmt.Errorf("key %d of %s: %w", no, r.UID, ledger.ErrInvalid)
}

// IntendKey implements ledger.ProvisionLedger.
func (s *Store) IntendKey(ctx context.Context, uid string, keyNo, from, to byte, fence int64, now time.Time) error {
	if from == to {
		return fmt.Errorf("key %d of %s: version %d to itself: %w", keyNo, uid, to, ledger.ErrInvalid)
	}
	return s.db.InTx(ctx, func(q Querier) error {
		r, err := s.fenced(ctx, q, uid, fence, now)
		if err != nil {
			return err
		}
		k, err := keyOf(r, keyNo)
		if err != nil {
			return err
		}
		if k.Version != from || (k.Pending != nil && *k.Pending != to) {
			return fmt.Errorf("key %d of %s: at %d (pending %v), not %d: %w", keyNo, uid, k.Version, k.Pending, from, ledger.ErrKeyState)
		}
		if _, err := q.Exec(ctx, `UPDATE provision_keys SET pending = $1, updated_at = $2 WHERE uid = $3 AND key_no = $4`, int64(to), micros(now), uid, int64(keyNo)); err != nil {
			return fmt.Errorf("key %d of %s: %w", keyNo, uid, err)
		}
		return s.provisionEvent(ctx, q, uid, "intend_key", fmt.Sprintf("key %d: %d -> %d", keyNo, from, to), now)
	})
}

// ConfirmKey implements ledger.ProvisionLedger.
func (s *Store) ConfirmKey(ctx context.Context, uid string, keyNo, version byte, evidence string, fence int64, now time.Time) error {
	if evidence == "" || len(evidence) > 64 {
		return fmt.Errorf("key %d of %s: evidence %q: %w", keyNo, uid, evidence, ledger.ErrInvalid)
	}
	return s.db.InTx(ctx, func(q Querier) error {
		r, err := s.fenced(ctx, q, uid, fence, now)
		if err != nil {
			return err
		}
		k, err := keyOf(r, keyNo)
		if err != nil {
			return err
		}
		if version != k.Version && (k.Pending == nil || *k.Pending != version) {
			return fmt.Errorf("key %d of %s: proven version %d is neither %d nor pending %v: %w", keyNo, uid, version, k.Version, k.Pending, ledger.ErrKeyState)
		}
		if _, err := q.Exec(ctx, `UPDATE provision_keys SET version = $1, pending = NULL, evidence = $2, updated_at = $3 WHERE uid = $4 AND key_no = $5`,
			int64(version), evidence, micros(now), uid, int64(keyNo)); err != nil {
			return fmt.Errorf("key %d of %s: %w", keyNo, uid, err)
		}
		return s.provisionEvent(ctx, q, uid, "confirm_key", fmt.Sprintf("key %d: version %d (%s)", keyNo, version, evidence), now)
	})
}

// AdvanceProvision implements ledger.ProvisionLedger.
func (s *Store) AdvanceProvision(ctx context.Context, uid string, from, to ledger.ProvisionStep, fence int64, now time.Time) error {
	if !from.Next(to) {
		return fmt.Errorf("provisioning of %s: %s -> %s: %w", uid, from, to, ledger.ErrInvalidTransition)
	}
	return s.db.InTx(ctx, func(q Querier) error {
		r, err := s.fenced(ctx, q, uid, fence, now)
		if err != nil {
			return err
		}
		if r.Step != from {
			return fmt.Errorf("provisioning of %s is at %s, not %s: %w", uid, r.Step, from, ledger.ErrConflict)
		}
		if _, err := q.Exec(ctx, `UPDATE provision_cards SET step = $1, updated_at = $2 WHERE uid = $3`, string(to), micros(now), uid); err != nil {
			return fmt.Errorf("provisioning of %s: %w", uid, err)
		}
		return s.provisionEvent(ctx, q, uid, "step", string(to), now)
	})
}

// ProvisionHistory implements ledger.ProvisionLedger.
func (s *Store) ProvisionHistory(ctx context.Context, uid string) ([]ledger.ProvisionEvent, error) {
	rows, err := s.db.Query(ctx, `SELECT seq, what, detail, at FROM provision_events WHERE uid = $1 ORDER BY seq`, uid)
	if err != nil {
		return nil, fmt.Errorf("provisioning history of %s: %w", uid, err)
	}
	defer rows.Close()
	var out []ledger.ProvisionEvent
	for rows.Next() {
		var (
			e  ledger.ProvisionEvent
			at int64
		)
		if err := rows.Scan(&e.Seq, &e.What, &e.Detail, &at); err != nil {
			return nil, fmt.Errorf("provisioning history of %s: %w", uid, err)
		}
		e.At = fromMicros(at)
		out = append(out, e)
	}
	return out, rows.Err()
}

var _ ledger.ProvisionSessions = (*Store)(nil)

const provSessionCols = `id, tenant, kind, params, status, card_uid, error_code, result, created_at, expires_at, ended_at`

func scanProvSession(r Row) (ledger.ProvisionSession, error) {
	var (
		p                  ledger.ProvisionSession
		id, params, result string
		created, expires   int64
		ended              *int64
	)
	if err := r.Scan(&id, &p.Tenant, &p.Kind, &params, &p.Status, &p.CardUID, &p.ErrorCode, &result, &created, &expires, &ended); err != nil {
		return p, err
	}
	var err error
	if p.ID, err = uuid.Parse(id); err != nil {
		return p, fmt.Errorf("stored provisioning session id %q: %w", id, err)
	}
	p.Params = []byte(params)
	if result != "" {
		p.Result = []byte(result)
	}
	p.CreatedAt, p.ExpiresAt, p.EndedAt = fromMicros(created), fromMicros(expires), fromMicrosPtr(ended)
	return p, nil
}

// CreateProvisionSession implements ledger.ProvisionSessions.
func (s *Store) CreateProvisionSession(ctx context.Context, tenant, kind string, params, hash []byte, expiresAt, now time.Time) (ledger.ProvisionSession, error) {
	if err := checkTokenHash(hash); err != nil {
		return ledger.ProvisionSession{}, err
	}
	if err := ledger.ValidateTenant(tenant); err != nil {
		return ledger.ProvisionSession{}, fmt.Errorf("provisioning session: %w", err)
	}
	if kind == "" || len(kind) > 32 || len(params) > 64<<10 {
		return ledger.ProvisionSession{}, fmt.Errorf("provisioning session %q: %w", kind, ledger.ErrInvalid)
	}
	id := uuid.New()
	_, err := s.db.Exec(ctx, `INSERT INTO provision_sessions (id, tenant, kind, params, token_hash, expires_at, status, created_at) VALUES ($1, $2, $3, $4, $5, $6, 'open', $7)`,
		id.String(), tenant, kind, string(params), hash, micros(expiresAt), micros(now))
	if err != nil {
		return ledger.ProvisionSession{}, fmt.Errorf("create provisioning session: %w", err)
	}
	return s.GetProvisionSession(ctx, id)
}

// ConsumeProvisionToken implements ledger.ProvisionSessions.
func (s *Store) ConsumeProvisionToken(ctx context.Context, hash []byte, now time.Time) (ledger.ProvisionSession, error) {
	if err := checkTokenHash(hash); err != nil {
		return ledger.ProvisionSession{}, err
	}
	at := micros(now)
	var out ledger.ProvisionSession
	err := s.db.InTx(ctx, func(q Querier) error {
		var sid string
		err := q.QueryRow(ctx, `UPDATE provision_sessions SET used_at = $1
WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $3 AND status = 'open' RETURNING id`, at, hash, at).Scan(&sid)
		if errors.Is(err, ErrNoRows) {
			var (
				expires int64
				used    *int64
			)
			err := q.QueryRow(ctx, `SELECT expires_at, used_at FROM provision_sessions WHERE token_hash = $1`, hash).Scan(&expires, &used)
			switch {
			case errors.Is(err, ErrNoRows):
				return ledger.ErrTokenUnknown
			case err != nil:
				return fmt.Errorf("read provisioning token: %w", err)
			case used != nil:
				return ledger.ErrTokenUsed
			default:
				return ledger.ErrTokenExpired
			}
		}
		if err != nil {
			return fmt.Errorf("consume provisioning token: %w", err)
		}
		out, err = scanProvSession(q.QueryRow(ctx, `SELECT `+provSessionCols+` FROM provision_sessions WHERE id = $1`, sid))
		return err
	})
	return out, err
}

// FinishProvisionSession implements ledger.ProvisionSessions.
func (s *Store) FinishProvisionSession(ctx context.Context, id uuid.UUID, ok bool, cardUID, code string, result []byte, now time.Time) error {
	status := "failed"
	if ok {
		status = "ok"
	}
	n, err := s.db.Exec(ctx, `UPDATE provision_sessions SET status = $1, card_uid = $2, error_code = $3, result = $4, ended_at = $5 WHERE id = $6 AND status = 'open'`,
		status, cardUID, code, string(result), micros(now), id.String())
	if err != nil {
		return fmt.Errorf("finish provisioning session %s: %w", id, err)
	}
	if n == 0 {
		if _, err := s.GetProvisionSession(ctx, id); err != nil {
			return err
		}
		return fmt.Errorf("provisioning session %s: %w", id, ledger.ErrSessionClosed)
	}
	return nil
}

// GetProvisionSession implements ledger.ProvisionSessions.
func (s *Store) GetProvisionSession(ctx context.Context, id uuid.UUID) (ledger.ProvisionSession, error) {
	p, err := scanProvSession(s.db.QueryRow(ctx, `SELECT `+provSessionCols+` FROM provision_sessions WHERE id = $1`, id.String()))
	if errors.Is(err, ErrNoRows) {
		return p, fmt.Errorf("provisioning session %s: %w", id, ledger.ErrNotFound)
	}
	if err != nil {
		return p, fmt.Errorf("read provisioning session %s: %w", id, err)
	}
	return p, nil
}

// ListProvisionSessions implements ledger.ProvisionSessions.
func (s *Store) ListProvisionSessions(ctx context.Context, tenant string, f ledger.ProvisionSessionFilter) ([]ledger.ProvisionSession, error) {
	if err := ledger.ValidateTenant(tenant); err != nil {
		return nil, fmt.Errorf("list provisioning sessions: %w", err)
	}
	switch f.Status {
	case "", "open", "ok", "failed":
	default:
		return nil, fmt.Errorf("provisioning session status %q: %w", f.Status, ledger.ErrInvalid)
	}
	if f.Limit == 0 {
		f.Limit = 100
	}
	if f.Limit < 0 || f.Limit > ledger.MaxProvisionSessionPage || len(f.Kind) > 32 {
		return nil, fmt.Errorf("provisioning session page of %d: %w", f.Limit, ledger.ErrInvalid)
	}
	before := int64(1<<63 - 1)
	if !f.Before.IsZero() {
		before = micros(f.Before)
	}
	rows, err := s.db.Query(ctx, `SELECT `+provSessionCols+` FROM provision_sessions
WHERE tenant = $1 AND created_at < $2 AND ($3 = '' OR status = $3) AND ($4 = '' OR kind = $4)
ORDER BY created_at DESC, id DESC LIMIT $5`, tenant, before, f.Status, f.Kind, f.Limit)
	if err != nil {
		return nil, fmt.Errorf("list provisioning sessions: %w", err)
	}
	defer rows.Close()
	out := []ledger.ProvisionSession{}
	for rows.Next() {
		p, err := scanProvSession(rows)
		if err != nil {
			return nil, fmt.Errorf("list provisioning sessions: %w", err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list provisioning sessions: %w", err)
	}
	return out, nil
}
