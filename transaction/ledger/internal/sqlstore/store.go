package sqlstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/desfire-relay/relay/transaction/ledger"
)

// Times are stored as Unix microseconds (UTC) in BIGINT columns: the same
// in both dialects, exact, and ordered.
func micros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(v int64) time.Time { return time.UnixMicro(v).UTC() }

func fromMicrosPtr(v *int64) *time.Time {
	if v == nil {
		return nil
	}
	t := fromMicros(*v)
	return &t
}

func nullInt(p *int64) any {
	if p == nil {
		return nil
	}
	return *p
}

func nullBytes(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

// Store implements ledger.Ledger over a DB.
type Store struct {
	db  DB
	d   Dialect
	cfg ledger.Config
	// transitionRelaxed is transitionSQL for the dialect's relaxed commit.
	transitionRelaxed string
}

var _ ledger.Ledger = (*Store)(nil)

// New returns a store; the schema must already be migrated.
func New(db DB, d Dialect, cfg ledger.Config) *Store {
	cfg = cfg.WithDefaults()
	if cfg.Stats != nil {
		db = counted{DB: db, st: cfg.Stats}
	}
	st := &Store{db: db, d: d, cfg: cfg}
	if d.Relaxed != "" {
		st.transitionRelaxed = transitionSQL(d.Relaxed)
	}
	return st
}

const topUpCols = `id, idempotency_key, request_hash, amount, currency, card_uid, reference, status,
	balance_before, balance_after, tmc, tmv, log_ref, attempts, fence,
	created_at, updated_at, expires_at, applied_at, resolution, resolution_checked, conflict, profile, tenant, kind, reverses,
	reader_id, prev_reader_id, scheme`

func scanTopUp(r Row) (ledger.TopUp, error) {
	var (
		t                           ledger.TopUp
		id, status                  string
		tmc, applied                *int64
		attempts                    int64
		created, updated, expiresAt int64
		checked                     int64
		kind, reverses              string
	)
	err := r.Scan(&id, &t.IdempotencyKey, &t.RequestHash, &t.Amount, &t.Currency, &t.CardUID, &t.Reference, &status,
		&t.BalanceBefore, &t.BalanceAfter, &tmc, &t.TMV, &t.LogRef, &attempts, &t.Fence,
		&created, &updated, &expiresAt, &applied, &t.Resolution, &checked, &t.Conflict, &t.Profile, &t.Tenant, &kind, &reverses,
		&t.ReaderID, &t.PrevReaderID, &t.Scheme)
	if err != nil {
		return ledger.TopUp{}, err
	}
	t.IdempotencyKey = unscopeKey(t.IdempotencyKey)
	if t.ID, err = uuid.Parse(id); err != nil {
		return ledger.TopUp{}, fmt.Errorf("stored top-up id %q: %w", id, err)
	}
	if t.Status, err = ledger.ParseStatus(status); err != nil {
		return ledger.TopUp{}, fmt.Errorf("stored top-up %s: %w", id, err)
	}
	if tmc != nil {
		if *tmc < 0 || *tmc > 1<<32-1 {
			return ledger.TopUp{}, fmt.Errorf("stored top-up %s: tmc %d out of range", id, *tmc)
		}
		v := uint32(*tmc)
		t.TMC = &v
	}
	if len(t.TMV) == 0 {
		t.TMV = nil
	}
	if len(t.ReaderID) == 0 {
		t.ReaderID = nil
	}
	if len(t.PrevReaderID) == 0 {
		t.PrevReaderID = nil
	}
	t.Attempts = int(attempts)
	t.ResolutionChecked = checked != 0
	t.Kind = ledger.TopUpKind(kind)
	if reverses != "" {
		if t.Reverses, err = uuid.Parse(reverses); err != nil {
			return ledger.TopUp{}, fmt.Errorf("stored top-up %s: reverses %q: %w", id, reverses, err)
		}
	}
	t.CreatedAt, t.UpdatedAt, t.ExpiresAt = fromMicros(created), fromMicros(updated), fromMicros(expiresAt)
	t.AppliedAt = fromMicrosPtr(applied)
	return t, nil
}

func (s *Store) getTopUp(ctx context.Context, q Querier, id uuid.UUID, lock bool) (ledger.TopUp, error) {
	query := `SELECT ` + topUpCols + ` FROM topups WHERE id = $1`
	if lock {
		query += s.d.ForUpdate
	}
	t, err := scanTopUp(q.QueryRow(ctx, query, id.String()))
	if errors.Is(err, ErrNoRows) {
		return ledger.TopUp{}, fmt.Errorf("top-up %s: %w", id, ledger.ErrNotFound)
	}
	if err != nil {
		return ledger.TopUp{}, fmt.Errorf("read top-up %s: %w", id, err)
	}
	return t, nil
}

func (s *Store) listTopUps(ctx context.Context, where string, args ...any) ([]ledger.TopUp, error) {
	rows, err := s.db.Query(ctx, `SELECT `+topUpCols+` FROM topups WHERE `+where, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []ledger.TopUp
	for rows.Next() {
		t, err := scanTopUp(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// keySep separates a tenant from its idempotency key in the stored key;
// client keys are printable ASCII, so it never occurs in one.
const keySep = "\x1f"

// scopeKey is the stored form of a tenant's idempotency key: the default
// tenant's keys as they are (rows from before tenants), others prefixed.
func scopeKey(tenant, key string) string {
	if tenant == ledger.DefaultTenant {
		return key
	}
	return tenant + keySep + key
}

// unscopeKey returns the client's key from its stored form.
func unscopeKey(stored string) string {
	if _, key, ok := strings.Cut(stored, keySep); ok {
		return key
	}
	return stored
}

// CreateTopUp implements ledger.Ledger.
func (s *Store) CreateTopUp(ctx context.Context, req ledger.Request, key string, now time.Time) (ledger.TopUp, bool, error) {
	req, err := req.Normalize()
	if err != nil {
		return ledger.TopUp{}, false, err
	}
	if err := ledger.ValidateIdempotencyKey(key); err != nil {
		return ledger.TopUp{}, false, err
	}
	if now.IsZero() {
		return ledger.TopUp{}, false, &ledger.ValidationError{Field: "now", Reason: "missing"}
	}
	hash := req.Hash()
	stored := scopeKey(req.Tenant, key)
	id, err := uuid.NewRandom()
	if err != nil {
		return ledger.TopUp{}, false, fmt.Errorf("new top-up id: %w", err)
	}
	at := micros(now)
	var (
		out     ledger.TopUp
		created bool
	)
	err = s.db.InTx(ctx, func(q Querier) error {
		// One round trip: RETURNING gives the new row, or no row when the
		// key exists.
		out, err = scanTopUp(q.QueryRow(ctx, `INSERT INTO topups (id, idempotency_key, request_hash, amount, currency, card_uid, reference,
	status, log_ref, attempts, fence, created_at, updated_at, expires_at, tenant, scheme)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, 0, $10, $10, $11, $12, $13)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING `+topUpCols,
			id.String(), stored, hash, req.Amount, req.Currency, req.CardUID, req.Reference,
			ledger.StatusPending.String(), ledger.LogRef(id), at, micros(now.Add(s.cfg.PendingTTL)), req.Tenant, req.Scheme))
		if err == nil {
			created = true
			return nil
		}
		if !errors.Is(err, ErrNoRows) {
			return fmt.Errorf("insert top-up: %w", err)
		}
		out, err = scanTopUp(q.QueryRow(ctx, `SELECT `+topUpCols+` FROM topups WHERE idempotency_key = $1`, stored))
		if err != nil {
			return fmt.Errorf("read top-up by idempotency key: %w", err)
		}
		if out.Tenant != req.Tenant {
			// Unreachable with scoped keys; never hand one tenant's top-up
			// to another.
			return fmt.Errorf("idempotency key of another tenant: %w", ledger.ErrIdempotencyConflict)
		}
		if !bytes.Equal(out.RequestHash, hash) {
			return fmt.Errorf("top-up %s: %w", out.ID, ledger.ErrIdempotencyConflict)
		}
		return nil
	})
	if err != nil {
		return ledger.TopUp{}, false, err
	}
	return out, created, nil
}

// GetTopUp implements ledger.Ledger.
func (s *Store) GetTopUp(ctx context.Context, id uuid.UUID) (ledger.TopUp, error) {
	return s.getTopUp(ctx, s.db, id, false)
}

// ListTopUpsByCard implements ledger.Ledger.
func (s *Store) ListTopUpsByCard(ctx context.Context, cardUID string) ([]ledger.TopUp, error) {
	uid, err := ledger.NormalizeCardUID(cardUID)
	if err != nil {
		return nil, err
	}
	out, err := s.listTopUps(ctx, `card_uid = $1 ORDER BY created_at DESC, id DESC`, uid)
	if err != nil {
		return nil, fmt.Errorf("list top-ups of card: %w", err)
	}
	return out, nil
}

// UnresolvedByCard implements ledger.Ledger.
func (s *Store) UnresolvedByCard(ctx context.Context, cardUID string) ([]ledger.TopUp, error) {
	uid, err := ledger.NormalizeCardUID(cardUID)
	if err != nil {
		return nil, err
	}
	// Literal statuses, not parameters, so the planner can prove the
	// partial indexes topups_card_unresolved and topups_card_manual apply.
	// Manual resolutions not yet compared with the card's log come too.
	out, err := s.listTopUps(ctx, `card_uid = $1 AND (status IN ('in_progress', 'in_doubt')
	OR (resolution = 'manual' AND resolution_checked = 0)) ORDER BY created_at ASC, id ASC`, uid)
	if err != nil {
		return nil, fmt.Errorf("list unresolved top-ups of card: %w", err)
	}
	return out, nil
}

// ListAttempts implements ledger.Ledger.
func (s *Store) ListAttempts(ctx context.Context, topUpID uuid.UUID) ([]ledger.Attempt, error) {
	rows, err := s.db.Query(ctx, `SELECT id, topup_id, session_id, card_uid, fence, started_at, ended_at, outcome, error_code, profile
FROM attempts WHERE topup_id = $1 ORDER BY started_at ASC, id ASC`, topUpID.String())
	if err != nil {
		return nil, fmt.Errorf("list attempts: %w", err)
	}
	defer rows.Close()
	var out []ledger.Attempt
	for rows.Next() {
		var (
			a                    ledger.Attempt
			id, tid, sid, status string
			started              int64
			ended                *int64
		)
		if err := rows.Scan(&id, &tid, &sid, &a.CardUID, &a.Fence, &started, &ended, &status, &a.ErrorCode, &a.Profile); err != nil {
			return nil, fmt.Errorf("list attempts: %w", err)
		}
		var perr [3]error
		a.ID, perr[0] = uuid.Parse(id)
		a.TopUpID, perr[1] = uuid.Parse(tid)
		a.SessionID, perr[2] = uuid.Parse(sid)
		if err := errors.Join(perr[:]...); err != nil {
			return nil, fmt.Errorf("stored attempt %q: %w", id, err)
		}
		if a.Outcome, err = ledger.ParseStatus(status); err != nil {
			return nil, fmt.Errorf("stored attempt %s: %w", id, err)
		}
		a.StartedAt, a.EndedAt = fromMicros(started), fromMicrosPtr(ended)
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list attempts: %w", err)
	}
	return out, nil
}

// Transition implements ledger.Ledger.
func (s *Store) Transition(ctx context.Context, t ledger.Transition) (ledger.TopUp, error) {
	rule, t, err := t.Check()
	if err != nil {
		return ledger.TopUp{}, err
	}
	var finish *finishArgs
	if t.Finish != nil {
		b, status, err := encodeOutcome(*t.Finish)
		if err != nil {
			return ledger.TopUp{}, err
		}
		finish = &finishArgs{outcome: b, status: status.String()}
	}
	if s.d.WritableCTE {
		return s.transitionOne(ctx, rule, t, finish)
	}
	now := micros(t.Now)
	// Relaxed: an applied top-up whose record a crash loses is still
	// in_doubt, which the card's next tap settles from its log.
	relaxed := t.To == ledger.StatusApplied && rule.Session
	var out ledger.TopUp
	err = s.db.InTxRelaxed(ctx, relaxed, func(q Querier) error {
		cur, err := s.getTopUp(ctx, q, t.TopUpID, true)
		if err != nil {
			return err
		}
		if cur.Status != t.From {
			return fmt.Errorf("top-up %s is %s, not %s: %w", cur.ID, cur.Status, t.From, ledger.ErrConflict)
		}
		if checksExpiry(t) && now >= micros(cur.ExpiresAt) {
			return fmt.Errorf("top-up %s expired at %s: %w", cur.ID, cur.ExpiresAt.Format(time.RFC3339), ledger.ErrTopUpExpired)
		}
		card := cur.CardUID
		if t.CardUID != "" && card != "" && t.CardUID != card {
			return fmt.Errorf("top-up %s: %w", cur.ID, ledger.ErrCardMismatch)
		}
		if rule.Session {
			card = t.CardUID // binds an unbound top-up; equal otherwise
		}
		fence := cur.Fence
		if t.Fence > 0 {
			if card == "" {
				return &ledger.ValidationError{Field: "card_uid", Reason: "a fence needs a card"}
			}
			n, err := q.Exec(ctx, `INSERT INTO card_fences (card_uid, fence, updated_at) VALUES ($1, $2, $3)
ON CONFLICT (card_uid) DO UPDATE SET fence = excluded.fence, updated_at = excluded.updated_at
WHERE card_fences.fence <= excluded.fence`, card, t.Fence, now)
			if err != nil {
				return fmt.Errorf("check card fence: %w", err)
			}
			if n == 0 {
				return fmt.Errorf("card %s, fence %d: %w", card, t.Fence, ledger.ErrStaleFence)
			}
			fence = t.Fence
		}
		attempts := int64(cur.Attempts)
		if rule.Session {
			// A session's later transitions update its attempt; its first
			// one finds nothing to update and records it (one statement
			// in the common case instead of two).
			var ended any
			if t.To != ledger.StatusInProgress {
				ended = now
			}
			n, err := q.Exec(ctx, `UPDATE attempts SET fence = $1, outcome = $2, ended_at = $3, error_code = $4,
	profile = CASE WHEN $7 = '' THEN profile ELSE $7 END
WHERE topup_id = $5 AND session_id = $6`,
				t.Fence, t.To.String(), ended, t.ErrorCode, cur.ID.String(), t.SessionID.String(), t.Profile)
			if err != nil {
				return fmt.Errorf("update attempt: %w", err)
			}
			if n == 0 {
				aid, err := uuid.NewRandom()
				if err != nil {
					return fmt.Errorf("new attempt id: %w", err)
				}
				// The top-up row is locked, so no other transaction can
				// insert this (top-up, session) attempt meanwhile.
				if _, err := q.Exec(ctx, `INSERT INTO attempts (id, topup_id, session_id, card_uid, fence, started_at, ended_at, outcome, error_code, profile)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
					aid.String(), cur.ID.String(), t.SessionID.String(), card, t.Fence, now, ended, t.To.String(), t.ErrorCode, t.Profile); err != nil {
					return fmt.Errorf("record attempt: %w", err)
				}
				attempts++
			}
		}
		if t.To == ledger.StatusApplied && t.TMC != nil {
			if err := s.acceptTMC(ctx, q, card, t.App, *t.TMC, now); err != nil {
				return err
			}
		}
		if t.Unbind {
			card = "" // after the fence and the attempt, which keep it
		}
		next := cur
		if t.BalanceBefore != nil {
			next.BalanceBefore = t.BalanceBefore
		}
		if t.Profile != "" {
			next.Profile = t.Profile
		}
		if t.BalanceAfter != nil {
			next.BalanceAfter = t.BalanceAfter
		}
		var tmc any
		if cur.TMC != nil {
			tmc = int64(*cur.TMC)
		}
		if t.TMC != nil {
			tmc = int64(*t.TMC)
		}
		if len(t.TMV) != 0 {
			next.TMV = t.TMV
		}
		applied := any(nil)
		if cur.AppliedAt != nil {
			applied = micros(*cur.AppliedAt)
		}
		if t.To == ledger.StatusApplied {
			applied = now
		}
		expires := micros(cur.ExpiresAt)
		if !t.ExpiresAt.IsZero() {
			expires = micros(t.ExpiresAt)
		}
		if len(t.ReaderID) != 0 {
			// The reader IDs the verified Transaction MAC covers.
			if _, err := q.Exec(ctx, `UPDATE topups SET reader_id = $1, prev_reader_id = $2 WHERE id = $3`,
				t.ReaderID, nullBytes(t.PrevReaderID), cur.ID.String()); err != nil {
				return fmt.Errorf("record reader IDs of %s: %w", cur.ID, err)
			}
		}
		out, err = scanTopUp(q.QueryRow(ctx, `UPDATE topups SET status = $1, updated_at = $2, card_uid = $3, fence = $4,
	balance_before = $5, balance_after = $6, tmc = $7, tmv = $8, applied_at = $9, expires_at = $10, attempts = $11,
	profile = $14
WHERE id = $12 AND status = $13
RETURNING `+topUpCols,
			t.To.String(), now, card, fence,
			nullInt(next.BalanceBefore), nullInt(next.BalanceAfter), tmc, nullBytes(next.TMV), applied, expires, attempts,
			cur.ID.String(), t.From.String(), next.Profile))
		if errors.Is(err, ErrNoRows) {
			// The row is locked (or the database has one writer), so this
			// means the lock did not hold; refuse rather than guess.
			return fmt.Errorf("top-up %s changed under a lock: %w", cur.ID, ledger.ErrConflict)
		}
		if err != nil {
			return fmt.Errorf("update top-up %s: %w", cur.ID, err)
		}
		if err := s.recordEvent(ctx, q, ledger.EventForStatus(t.To), out.Tenant, out.ID, t.SessionID, t.To.String(), now); err != nil {
			return err
		}
		if finish != nil {
			n, err := q.Exec(ctx, `UPDATE sessions SET status = $1, outcome = $2, ended_at = $3 WHERE id = $4 AND status = $5`,
				finish.status, finish.outcome, now, t.SessionID.String(), ledger.SessionOpen.String())
			if err != nil {
				return fmt.Errorf("finish session %s: %w", t.SessionID, err)
			}
			if n == 1 {
				// One microsecond later: the session ends after the change
				// it rode with, in the outbox's order too.
				return s.recordEvent(ctx, q, ledger.EventSession, out.Tenant, out.ID, t.SessionID, finish.status, now+1)
			}
		}
		return nil
	})
	if err != nil {
		return ledger.TopUp{}, fmt.Errorf("transition %s → %s: %w", t.From, t.To, err)
	}
	return out, nil
}

// ExpirePending implements ledger.Ledger.
func (s *Store) ExpirePending(ctx context.Context, now time.Time) (int, error) {
	if _, err := ledger.CheckTransition(ledger.StatusPending, ledger.StatusExpired); err != nil {
		return 0, err
	}
	at := micros(now)
	if !s.cfg.Outbox {
		n, err := s.db.Exec(ctx, `UPDATE topups SET status = $1, updated_at = $2 WHERE status = $3 AND expires_at <= $4`,
			ledger.StatusExpired.String(), at, ledger.StatusPending.String(), at)
		if err != nil {
			return 0, fmt.Errorf("expire pending top-ups: %w", err)
		}
		return int(n), nil
	}
	var moved int
	err := s.db.InTx(ctx, func(q Querier) error {
		rows, err := q.Query(ctx, `UPDATE topups SET status = $1, updated_at = $2 WHERE status = $3 AND expires_at <= $4
RETURNING id, tenant`, ledger.StatusExpired.String(), at, ledger.StatusPending.String(), at)
		if err != nil {
			return fmt.Errorf("expire pending top-ups: %w", err)
		}
		type expired struct{ id, tenant string }
		var list []expired
		for rows.Next() {
			var e expired
			if err := rows.Scan(&e.id, &e.tenant); err != nil {
				rows.Close()
				return fmt.Errorf("expire pending top-ups: %w", err)
			}
			list = append(list, e)
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return fmt.Errorf("expire pending top-ups: %w", err)
		}
		for _, e := range list {
			id, err := uuid.Parse(e.id)
			if err != nil {
				return fmt.Errorf("stored top-up id %q: %w", e.id, err)
			}
			if err := s.recordEvent(ctx, q, ledger.EventExpired, e.tenant, id, uuid.Nil, ledger.StatusExpired.String(), at); err != nil {
				return err
			}
		}
		moved = len(list)
		return nil
	})
	return moved, err
}

const sessionCols = `id, kind, topup_id, status, outcome, created_at, ended_at, tenant`

func scanSession(r Row) (ledger.Session, error) {
	var (
		s                ledger.Session
		id, kind, status string
		topup, outcome   *string
		created          int64
		ended            *int64
	)
	if err := r.Scan(&id, &kind, &topup, &status, &outcome, &created, &ended, &s.Tenant); err != nil {
		return ledger.Session{}, err
	}
	var err error
	if s.ID, err = uuid.Parse(id); err != nil {
		return ledger.Session{}, fmt.Errorf("stored session id %q: %w", id, err)
	}
	if s.Kind, err = ledger.ParseSessionKind(kind); err != nil {
		return ledger.Session{}, fmt.Errorf("stored session %s: %w", id, err)
	}
	if s.Status, err = ledger.ParseSessionStatus(status); err != nil {
		return ledger.Session{}, fmt.Errorf("stored session %s: %w", id, err)
	}
	if topup != nil {
		if s.TopUpID, err = uuid.Parse(*topup); err != nil {
			return ledger.Session{}, fmt.Errorf("stored session %s top-up: %w", id, err)
		}
	}
	if outcome != nil {
		if err := json.Unmarshal([]byte(*outcome), &s.Outcome); err != nil {
			return ledger.Session{}, fmt.Errorf("stored session %s outcome: %w", id, err)
		}
	}
	s.CreatedAt, s.EndedAt = fromMicros(created), fromMicrosPtr(ended)
	return s, nil
}

func (s *Store) getSession(ctx context.Context, q Querier, id uuid.UUID, lock bool) (ledger.Session, error) {
	query := `SELECT ` + sessionCols + ` FROM sessions WHERE id = $1`
	if lock {
		query += s.d.ForUpdate
	}
	out, err := scanSession(q.QueryRow(ctx, query, id.String()))
	if errors.Is(err, ErrNoRows) {
		return ledger.Session{}, fmt.Errorf("session %s: %w", id, ledger.ErrNotFound)
	}
	if err != nil {
		return ledger.Session{}, fmt.Errorf("read session %s: %w", id, err)
	}
	return out, nil
}

// CreateSession implements ledger.Ledger.
func (s *Store) CreateSession(ctx context.Context, kind ledger.SessionKind, topUpID uuid.UUID, now time.Time) (ledger.Session, error) {
	return s.CreateTenantSession(ctx, ledger.DefaultTenant, kind, topUpID, now)
}

// CreateTenantSession implements ledger.Ledger.
func (s *Store) CreateTenantSession(ctx context.Context, tenant string, kind ledger.SessionKind, topUpID uuid.UUID, now time.Time) (ledger.Session, error) {
	if err := ledger.ValidateTenant(tenant); err != nil {
		return ledger.Session{}, err
	}
	switch {
	case kind != ledger.KindTopUp && kind != ledger.KindBalance:
		return ledger.Session{}, &ledger.ValidationError{Field: "kind", Reason: kind.String()}
	case kind == ledger.KindTopUp && topUpID == uuid.Nil:
		return ledger.Session{}, &ledger.ValidationError{Field: "topup_id", Reason: "required for a top-up session"}
	case kind == ledger.KindBalance && topUpID != uuid.Nil:
		return ledger.Session{}, &ledger.ValidationError{Field: "topup_id", Reason: "not used by a balance session"}
	case now.IsZero():
		return ledger.Session{}, &ledger.ValidationError{Field: "now", Reason: "missing"}
	}
	id, err := uuid.NewRandom()
	if err != nil {
		return ledger.Session{}, fmt.Errorf("new session id: %w", err)
	}
	var out ledger.Session
	err = s.db.InTx(ctx, func(q Querier) error {
		var topup any
		if kind == ledger.KindTopUp {
			t, err := s.getTopUp(ctx, q, topUpID, false)
			if err != nil {
				return err
			}
			if t.Tenant != tenant {
				return fmt.Errorf("top-up %s: %w", topUpID, ledger.ErrNotFound)
			}
			topup = topUpID.String()
		}
		out, err = scanSession(q.QueryRow(ctx, `INSERT INTO sessions (id, kind, topup_id, status, created_at, tenant) VALUES ($1, $2, $3, $4, $5, $6)
RETURNING `+sessionCols,
			id.String(), kind.String(), topup, ledger.SessionOpen.String(), micros(now), tenant))
		if err != nil {
			return fmt.Errorf("insert session: %w", err)
		}
		return nil
	})
	if err != nil {
		return ledger.Session{}, err
	}
	return out, nil
}

func checkTokenHash(h []byte) error {
	if len(h) != ledger.TokenHashLen {
		return &ledger.ValidationError{Field: "token_hash", Reason: fmt.Sprintf("must be %d bytes, got %d", ledger.TokenHashLen, len(h))}
	}
	return nil
}

// IssueToken implements ledger.Ledger.
func (s *Store) IssueToken(ctx context.Context, sessionID uuid.UUID, hash []byte, expiresAt time.Time) error {
	if err := checkTokenHash(hash); err != nil {
		return err
	}
	if expiresAt.IsZero() {
		return &ledger.ValidationError{Field: "expires_at", Reason: "missing"}
	}
	return s.db.InTx(ctx, func(q Querier) error {
		sess, err := s.getSession(ctx, q, sessionID, true)
		if err != nil {
			return err
		}
		if sess.Status != ledger.SessionOpen {
			return fmt.Errorf("session %s is %s: %w", sessionID, sess.Status, ledger.ErrSessionClosed)
		}
		n, err := q.Exec(ctx, `INSERT INTO bridge_tokens (token_hash, session_id, expires_at) VALUES ($1, $2, $3)
ON CONFLICT DO NOTHING`, hash, sessionID.String(), micros(expiresAt))
		if err != nil {
			return fmt.Errorf("insert bridge token: %w", err)
		}
		if n == 0 {
			return fmt.Errorf("session %s: %w", sessionID, ledger.ErrTokenExists)
		}
		return nil
	})
}

// ConsumeToken implements ledger.Ledger.
func (s *Store) ConsumeToken(ctx context.Context, hash []byte, now time.Time) (ledger.Session, error) {
	if err := checkTokenHash(hash); err != nil {
		return ledger.Session{}, err
	}
	at := micros(now)
	if s.d.WritableCTE {
		return s.consumeTokenOne(ctx, hash, at)
	}
	var out ledger.Session
	err := s.db.InTx(ctx, func(q Querier) error {
		var sid string
		err := q.QueryRow(ctx, `UPDATE bridge_tokens SET used_at = $1
WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $3 RETURNING session_id`, at, hash, at).Scan(&sid)
		if errors.Is(err, ErrNoRows) {
			var (
				expires int64
				used    *int64
			)
			err := q.QueryRow(ctx, `SELECT expires_at, used_at FROM bridge_tokens WHERE token_hash = $1`, hash).Scan(&expires, &used)
			switch {
			case errors.Is(err, ErrNoRows):
				return ledger.ErrTokenUnknown
			case err != nil:
				return fmt.Errorf("read bridge token: %w", err)
			case used != nil:
				return ledger.ErrTokenUsed
			default:
				return ledger.ErrTokenExpired
			}
		}
		if err != nil {
			return fmt.Errorf("consume bridge token: %w", err)
		}
		id, err := uuid.Parse(sid)
		if err != nil {
			return fmt.Errorf("stored token session %q: %w", sid, err)
		}
		if out, err = s.getSession(ctx, q, id, false); err != nil {
			return err
		}
		if out.Status != ledger.SessionOpen {
			return fmt.Errorf("session %s is %s: %w", id, out.Status, ledger.ErrSessionClosed)
		}
		return nil
	})
	if err != nil {
		return ledger.Session{}, err
	}
	return out, nil
}

// RevokeTokens implements ledger.Ledger.
func (s *Store) RevokeTokens(ctx context.Context, topUpID, keep uuid.UUID, now time.Time) (int, error) {
	if now.IsZero() {
		return 0, &ledger.ValidationError{Field: "now", Reason: "missing"}
	}
	b, err := json.Marshal(ledger.SessionOutcome{ErrorCode: ledger.CodeTokenReplaced})
	if err != nil {
		return 0, fmt.Errorf("encode session outcome: %w", err)
	}
	var n int
	err = s.db.InTx(ctx, func(q Querier) error {
		// Tokens first: a concurrent ConsumeToken either won (its session
		// runs and is not ended here) or finds its token used.
		// Only sessions issued before keep, in (created_at, id) order: of
		// two tickets issued concurrently the later revokes the earlier and
		// never the other way round, so one always survives.
		kept, err := s.getSession(ctx, q, keep, false)
		if err != nil {
			return err
		}
		rows, err := q.Query(ctx, `UPDATE bridge_tokens SET used_at = $1
WHERE used_at IS NULL AND session_id IN (SELECT id FROM sessions WHERE topup_id = $2 AND status = $4
  AND (created_at < $5 OR (created_at = $5 AND id < $3)))
RETURNING session_id`, micros(now), topUpID.String(), keep.String(), ledger.SessionOpen.String(), micros(kept.CreatedAt))
		if err != nil {
			return fmt.Errorf("revoke bridge tokens: %w", err)
		}
		var ids []string
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return fmt.Errorf("revoke bridge tokens: %w", err)
			}
			ids = append(ids, id)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return fmt.Errorf("revoke bridge tokens: %w", err)
		}
		for _, id := range ids {
			m, err := q.Exec(ctx, `UPDATE sessions SET status = $1, outcome = $2, ended_at = $3 WHERE id = $4 AND status = $5`,
				ledger.SessionFailed.String(), string(b), micros(now), id, ledger.SessionOpen.String())
			if err != nil {
				return fmt.Errorf("end replaced session %s: %w", id, err)
			}
			n += int(m)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// FinishSession implements ledger.Ledger.
func (s *Store) FinishSession(ctx context.Context, id uuid.UUID, o ledger.SessionOutcome, now time.Time) (ledger.Session, error) {
	if now.IsZero() {
		return ledger.Session{}, &ledger.ValidationError{Field: "now", Reason: "missing"}
	}
	b, status, err := encodeOutcome(o)
	if err != nil {
		return ledger.Session{}, err
	}
	var out ledger.Session
	err = s.db.InTx(ctx, func(q Querier) error {
		cur, err := s.getSession(ctx, q, id, true)
		if err != nil {
			return err
		}
		if cur.Status != ledger.SessionOpen {
			return fmt.Errorf("session %s is %s: %w", id, cur.Status, ledger.ErrSessionClosed)
		}
		out, err = scanSession(q.QueryRow(ctx, `UPDATE sessions SET status = $1, outcome = $2, ended_at = $3 WHERE id = $4
RETURNING `+sessionCols,
			status.String(), b, micros(now), id.String()))
		if err != nil {
			return fmt.Errorf("finish session %s: %w", id, err)
		}
		return s.recordEvent(ctx, q, ledger.EventSession, out.Tenant, out.TopUpID, out.ID, status.String(), micros(now))
	})
	if err != nil {
		return ledger.Session{}, err
	}
	return out, nil
}

// GetSession implements ledger.Ledger.
func (s *Store) GetSession(ctx context.Context, id uuid.UUID) (ledger.Session, error) {
	return s.getSession(ctx, s.db, id, false)
}

// Ping implements ledger.Ledger.
func (s *Store) Ping(ctx context.Context) error { return s.db.Ping(ctx) }

// Close implements ledger.Ledger.
func (s *Store) Close() error { return s.db.Close() }

// encodeOutcome validates a session outcome and returns it as stored,
// with the session status it gives.
func encodeOutcome(o ledger.SessionOutcome) (string, ledger.SessionStatus, error) {
	if o.CardUID != "" {
		uid, err := ledger.NormalizeCardUID(o.CardUID)
		if err != nil {
			return "", 0, err
		}
		o.CardUID = uid
	}
	if len(o.Records) != 0 && !json.Valid(o.Records) {
		return "", 0, &ledger.ValidationError{Field: "records", Reason: "not JSON"}
	}
	if len(o.ErrorCode) > ledger.MaxErrorCodeLen {
		return "", 0, &ledger.ValidationError{Field: "error_code", Reason: "too long"}
	}
	b, err := json.Marshal(o)
	if err != nil {
		return "", 0, fmt.Errorf("encode session outcome: %w", err)
	}
	status := ledger.SessionFailed
	if o.OK {
		status = ledger.SessionOK
	}
	return string(b), status, nil
}
