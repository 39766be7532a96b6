package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/desfire-relay/relay/transaction/ledger"
)

// The hot path on a database with writable CTEs (PostgreSQL): each phase
// of a top-up is one statement, so one round trip and one commit. Every
// check the multi-statement path makes (status, expiry, card binding,
// fence, Transaction MAC counter) is a condition inside the statement,
// each write depends on the checks before it, and the statement as a
// whole writes nothing when any fails; only then does a read-only
// diagnosis (off the common path) find which error to return. A later
// write (an outbox row, say) joins as one more WITH item fed by "ok".

// transitionSQL is Transition as one statement. Parameters:
// $1 id, $2 from, $3 to, $4 now, $5 card (session's, or ”), $6 fence,
// $7 session id, $8 session transition, $9 check expiry, $10 new attempt
// id, $11 attempt ended_at, $12 error code, $13 profile, $14 balance
// before, $15 balance after, $16 tmc, $17 tmv, $18 app, $19 check tmc,
// $20 set applied_at, $21 new expiry, $22 unbind, $23 session outcome
// (JSON, NULL: the session stays open), $24 session status, $25 event id,
// $26 event type (”: none), $27 session event id, $28 session event type,
// $29 and $30 the reader IDs the verified Transaction MAC covers (NULL:
// unchanged).
// The outbox rows are written by the same statement, fed by what it
// changed (the session's event one microsecond after the top-up's, so it
// sorts after it).
func transitionSQL(relaxed string) string {
	with := "WITH "
	cond := ""
	if relaxed != "" {
		with += relaxed + ",\n"
		cond = " AND (SELECT v FROM relaxed) = 'off'"
	}
	return with + `cur AS (
	SELECT t.id, CASE WHEN $8::boolean THEN $5::text ELSE t.card_uid END AS uid FROM topups t
	WHERE t.id = $1::text AND t.status = $2::text` + cond + `
	  AND (NOT $9::boolean OR t.expires_at > $4::bigint)
	  AND ($5::text = '' OR t.card_uid = '' OR t.card_uid = $5::text)
	  AND (NOT $19::boolean OR NOT EXISTS (SELECT 1 FROM card_tmacs m
	    WHERE m.card_uid = (CASE WHEN $8::boolean THEN $5::text ELSE t.card_uid END) AND m.aid = $18::bigint AND m.tmc >= $16::bigint))
	FOR NO KEY UPDATE),
f AS (INSERT INTO card_fences (card_uid, fence, updated_at) SELECT uid, $6::bigint, $4::bigint FROM cur WHERE $6::bigint > 0 AND uid <> ''
	ON CONFLICT (card_uid) DO UPDATE SET fence = excluded.fence, updated_at = excluded.updated_at
	WHERE card_fences.fence <= excluded.fence RETURNING 1),
fenced AS (SELECT cur.* FROM cur WHERE $6::bigint = 0 OR EXISTS (SELECT 1 FROM f)),
tm AS (INSERT INTO card_tmacs (card_uid, aid, tmc, updated_at) SELECT uid, $18::bigint, $16::bigint, $4::bigint FROM fenced WHERE $19::boolean AND uid <> ''
	ON CONFLICT (card_uid, aid) DO UPDATE SET tmc = excluded.tmc, updated_at = excluded.updated_at
	WHERE card_tmacs.tmc < excluded.tmc RETURNING 1),
ok AS (SELECT fenced.* FROM fenced WHERE NOT $19::boolean OR EXISTS (SELECT 1 FROM tm)),
au AS (UPDATE attempts SET fence = $6::bigint, outcome = $3::text, ended_at = $11::bigint, error_code = $12::text,
	profile = CASE WHEN $13::text = '' THEN attempts.profile ELSE $13::text END
	FROM ok WHERE $8::boolean AND attempts.topup_id = ok.id AND attempts.session_id = $7::text RETURNING 1),
ai AS (INSERT INTO attempts (id, topup_id, session_id, card_uid, fence, started_at, ended_at, outcome, error_code, profile)
	SELECT $10::text, ok.id, $7::text, ok.uid, $6::bigint, $4::bigint, $11::bigint, $3::text, $12::text, $13::text FROM ok
	WHERE $8::boolean AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.topup_id = ok.id AND a.session_id = $7::text) RETURNING 1),
fin AS (UPDATE sessions SET status = $24::text, outcome = $23::text, ended_at = $4::bigint
	FROM ok WHERE $23::text IS NOT NULL AND sessions.id = $7::text AND sessions.status = 'open'
	RETURNING sessions.id, sessions.tenant, sessions.status),
fev AS (INSERT INTO outbox_events (id, tenant, type, topup_id, session_id, status, created_at)
	SELECT $27::text, fin.tenant, $28::text, $1::text, fin.id, fin.status, $4::bigint + 1 FROM fin WHERE $28::text <> '' RETURNING 1),
upd AS (UPDATE topups SET status = $3::text, updated_at = $4::bigint,
	card_uid = CASE WHEN $22::boolean THEN '' ELSE ok.uid END,
	fence = CASE WHEN $6::bigint > 0 THEN $6::bigint ELSE topups.fence END,
	balance_before = COALESCE($14::bigint, topups.balance_before), balance_after = COALESCE($15::bigint, topups.balance_after),
	tmc = COALESCE($16::bigint, topups.tmc), tmv = COALESCE($17::bytea, topups.tmv),
	applied_at = CASE WHEN $20::boolean THEN $4::bigint ELSE topups.applied_at END,
	expires_at = COALESCE($21::bigint, topups.expires_at),
	attempts = topups.attempts + (SELECT count(*) FROM ai),
	profile = CASE WHEN $13::text = '' THEN topups.profile ELSE $13::text END,
	reader_id = COALESCE($29::bytea, topups.reader_id), prev_reader_id = COALESCE($30::bytea, topups.prev_reader_id)
	FROM ok WHERE topups.id = ok.id
	RETURNING ` + qualified("topups", topUpCols) + `)
,
ev AS (INSERT INTO outbox_events (id, tenant, type, topup_id, session_id, status, created_at)
	SELECT $25::text, upd.tenant, $26::text, upd.id, $7::text, $3::text, $4::bigint FROM upd WHERE $26::text <> '' RETURNING 1)
SELECT upd.*, (SELECT count(*) FROM fin) FROM upd`
}

// qualified prefixes each column of a column list with table.
func qualified(table, cols string) string {
	parts := strings.Split(cols, ",")
	for i, p := range parts {
		parts[i] = table + "." + strings.TrimSpace(p)
	}
	return strings.Join(parts, ", ")
}

var transitionDurable = transitionSQL("")

// transitionOne is Transition as one statement (Dialect.WritableCTE).
// finish, when set, also ends the transition's session.
func (s *Store) transitionOne(ctx context.Context, rule ledger.Rule, t ledger.Transition, finish *finishArgs) (ledger.TopUp, error) {
	now := micros(t.Now)
	aid, err := uuid.NewRandom()
	if err != nil {
		return ledger.TopUp{}, fmt.Errorf("new attempt id: %w", err)
	}
	var ended, tmc, expires, outcome, sessStatus any
	if t.To != ledger.StatusInProgress {
		ended = now
	}
	if t.TMC != nil {
		tmc = int64(*t.TMC)
	}
	if !t.ExpiresAt.IsZero() {
		expires = micros(t.ExpiresAt)
	}
	if finish != nil {
		outcome, sessStatus = finish.outcome, finish.status
	}
	sid := ""
	if t.SessionID != uuid.Nil {
		sid = t.SessionID.String()
	}
	// Relaxed: an applied top-up whose record a crash loses is still
	// in_doubt, which the card's next tap settles from its log.
	relaxed := t.To == ledger.StatusApplied && rule.Session && s.d.Relaxed != ""
	query := transitionDurable
	if relaxed {
		query = s.transitionRelaxed
	}
	evID, sevID, evType, sevType, err := s.eventArgs(t, finish != nil)
	if err != nil {
		return ledger.TopUp{}, err
	}
	var n int64
	var tu ledger.TopUp
	row := s.db.WriteRow(ctx, relaxed, query,
		t.TopUpID.String(), t.From.String(), t.To.String(), now, t.CardUID, t.Fence,
		sid, rule.Session, checksExpiry(t), aid.String(), ended, t.ErrorCode, t.Profile,
		nullInt(t.BalanceBefore), nullInt(t.BalanceAfter), tmc, nullBytes(t.TMV), int64(t.App),
		t.To == ledger.StatusApplied && t.TMC != nil, t.To == ledger.StatusApplied, expires, t.Unbind,
		outcome, sessStatus, evID, evType, sevID, sevType, nullBytes(t.ReaderID), nullBytes(t.PrevReaderID))
	tu, err = scanTopUpAnd(row, &n)
	if errors.Is(err, ErrNoRows) {
		return ledger.TopUp{}, s.diagnose(ctx, rule, t)
	}
	if err != nil {
		return ledger.TopUp{}, fmt.Errorf("update top-up %s: %w", t.TopUpID, err)
	}
	if finish != nil && n == 0 {
		// The session had ended already: the top-up moved, the outcome
		// recorded earlier stands.
		finish.closed = true
	}
	return tu, nil
}

// checksExpiry: a pending top-up past its expiry cannot be taken to a
// card.
// eventArgs are the outbox ids and types of a one-statement transition
// (empty types when the outbox is off or the change has no event).
func (s *Store) eventArgs(t ledger.Transition, finish bool) (evID, sevID, evType, sevType string, err error) {
	if !s.cfg.Outbox {
		return "", "", "", "", nil
	}
	evType = ledger.EventForStatus(t.To)
	if finish {
		sevType = ledger.EventSession
	}
	a, err := uuid.NewRandom()
	if err != nil {
		return "", "", "", "", fmt.Errorf("new event id: %w", err)
	}
	b, err := uuid.NewRandom()
	if err != nil {
		return "", "", "", "", fmt.Errorf("new event id: %w", err)
	}
	return a.String(), b.String(), evType, sevType, nil
}

func checksExpiry(t ledger.Transition) bool {
	return t.From == ledger.StatusPending && (t.To == ledger.StatusInProgress || t.To == ledger.StatusInDoubt)
}

// diagnose finds why a one-statement transition wrote nothing, checking
// in the order the multi-statement path does. It only reads.
func (s *Store) diagnose(ctx context.Context, rule ledger.Rule, t ledger.Transition) error {
	wrap := func(err error) error { return fmt.Errorf("transition %s → %s: %w", t.From, t.To, err) }
	cur, err := s.getTopUp(ctx, s.db, t.TopUpID, false)
	if err != nil {
		return wrap(err)
	}
	if cur.Status != t.From {
		return wrap(fmt.Errorf("top-up %s is %s, not %s: %w", cur.ID, cur.Status, t.From, ledger.ErrConflict))
	}
	if checksExpiry(t) && micros(t.Now) >= micros(cur.ExpiresAt) {
		return wrap(fmt.Errorf("top-up %s expired at %s: %w", cur.ID, cur.ExpiresAt.Format(time.RFC3339), ledger.ErrTopUpExpired))
	}
	card := cur.CardUID
	if t.CardUID != "" && card != "" && t.CardUID != card {
		return wrap(fmt.Errorf("top-up %s: %w", cur.ID, ledger.ErrCardMismatch))
	}
	if rule.Session {
		card = t.CardUID
	}
	if t.Fence > 0 {
		if card == "" {
			return wrap(&ledger.ValidationError{Field: "card_uid", Reason: "a fence needs a card"})
		}
		var fence int64
		err := s.db.QueryRow(ctx, `SELECT fence FROM card_fences WHERE card_uid = $1`, card).Scan(&fence)
		if err != nil && !errors.Is(err, ErrNoRows) {
			return wrap(fmt.Errorf("check card fence: %w", err))
		}
		if err == nil && fence > t.Fence {
			return wrap(fmt.Errorf("card %s, fence %d: %w", card, t.Fence, ledger.ErrStaleFence))
		}
	}
	if t.To == ledger.StatusApplied && t.TMC != nil {
		if card == "" {
			return wrap(&ledger.ValidationError{Field: "card_uid", Reason: "a Transaction MAC counter needs a card"})
		}
		var tmc int64
		err := s.db.QueryRow(ctx, `SELECT tmc FROM card_tmacs WHERE card_uid = $1 AND aid = $2`, card, int64(t.App)).Scan(&tmc)
		if err == nil && tmc >= int64(*t.TMC) {
			return wrap(fmt.Errorf("card %s application %06X, counter %d: %w", card, t.App, *t.TMC, ledger.ErrTMCReplay))
		}
	}
	// Everything holds now: something moved between the statement and
	// this read.
	return wrap(fmt.Errorf("top-up %s changed concurrently: %w", cur.ID, ledger.ErrConflict))
}

// finishArgs ends a session together with a transition.
type finishArgs struct {
	outcome string
	status  string
	// closed: the session had already ended (the transition still happened).
	closed bool
}

// scanTopUpAnd scans a top-up followed by more integer columns.
func scanTopUpAnd(r Row, n ...*int64) (ledger.TopUp, error) {
	return scanTopUp(extraRow{r, n})
}

type extraRow struct {
	r Row
	n []*int64
}

func (e extraRow) Scan(dest ...any) error {
	for _, p := range e.n {
		dest = append(dest, p)
	}
	return e.r.Scan(dest...)
}

// consumeTokenSQL marks a token used and returns its session, when the
// token is unused, unexpired and its session open.
var consumeTokenSQL = `UPDATE bridge_tokens SET used_at = $1 FROM sessions
WHERE bridge_tokens.token_hash = $2 AND bridge_tokens.used_at IS NULL AND bridge_tokens.expires_at > $1
  AND sessions.id = bridge_tokens.session_id AND sessions.status = 'open'
RETURNING ` + qualified("sessions", sessionCols)

// consumeTokenOne is ConsumeToken as one statement; only a refusal reads
// again, to say why.
func (s *Store) consumeTokenOne(ctx context.Context, hash []byte, at int64) (ledger.Session, error) {
	out, err := scanSession(s.db.WriteRow(ctx, false, consumeTokenSQL, at, hash))
	if err == nil {
		return out, nil
	}
	if !errors.Is(err, ErrNoRows) {
		return ledger.Session{}, fmt.Errorf("consume bridge token: %w", err)
	}
	var (
		expires int64
		used    *int64
		sid     string
		status  *string
	)
	err = s.db.QueryRow(ctx, `SELECT k.expires_at, k.used_at, k.session_id, s.status
FROM bridge_tokens k LEFT JOIN sessions s ON s.id = k.session_id WHERE k.token_hash = $1`, hash).Scan(&expires, &used, &sid, &status)
	switch {
	case errors.Is(err, ErrNoRows):
		return ledger.Session{}, ledger.ErrTokenUnknown
	case err != nil:
		return ledger.Session{}, fmt.Errorf("read bridge token: %w", err)
	case used != nil:
		return ledger.Session{}, ledger.ErrTokenUsed
	case expires <= at:
		return ledger.Session{}, ledger.ErrTokenExpired
	case status != nil && *status != ledger.SessionOpen.String():
		return ledger.Session{}, fmt.Errorf("session %s is %s: %w", sid, *status, ledger.ErrSessionClosed)
	}
	return ledger.Session{}, ledger.ErrTokenUsed // used meanwhile
}

// createTopUpSQL inserts a top-up, its session and the session's token;
// nothing when the idempotency key exists. Parameters as in CreateTopUp
// ($13 the scheme), then $14 session id, $15 token hash, $16 token expiry.
var createTopUpSQL = `WITH t AS (INSERT INTO topups (id, idempotency_key, request_hash, amount, currency, card_uid, reference,
	status, log_ref, attempts, fence, created_at, updated_at, expires_at, tenant, scheme)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, 0, $10, $10, $11, $12, $13)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING ` + topUpCols + `),
s AS (INSERT INTO sessions (id, kind, topup_id, status, created_at, tenant)
	SELECT $14, 'topup', t.id, 'open', $10, t.tenant FROM t RETURNING id),
k AS (INSERT INTO bridge_tokens (token_hash, session_id, expires_at) SELECT $15, s.id, $16 FROM s RETURNING 1)
SELECT t.*, (SELECT count(*) FROM k) FROM t`

// errReplay: the idempotency key exists (CreateTopUpSession then answers
// as CreateTopUp).
var errReplay = errors.New("idempotency key exists")

// CreateTopUpSession implements ledger.Ledger.
func (s *Store) CreateTopUpSession(ctx context.Context, req ledger.Request, key string, tokenHash []byte, tokenExpires, now time.Time) (ledger.TopUp, ledger.Session, bool, error) {
	norm, err := req.Normalize()
	if err != nil {
		return ledger.TopUp{}, ledger.Session{}, false, err
	}
	if err := ledger.ValidateIdempotencyKey(key); err != nil {
		return ledger.TopUp{}, ledger.Session{}, false, err
	}
	if err := checkTokenHash(tokenHash); err != nil {
		return ledger.TopUp{}, ledger.Session{}, false, err
	}
	switch {
	case now.IsZero():
		return ledger.TopUp{}, ledger.Session{}, false, &ledger.ValidationError{Field: "now", Reason: "missing"}
	case tokenExpires.IsZero():
		return ledger.TopUp{}, ledger.Session{}, false, &ledger.ValidationError{Field: "expires_at", Reason: "missing"}
	}
	id, err := uuid.NewRandom()
	if err != nil {
		return ledger.TopUp{}, ledger.Session{}, false, fmt.Errorf("new top-up id: %w", err)
	}
	sid, err := uuid.NewRandom()
	if err != nil {
		return ledger.TopUp{}, ledger.Session{}, false, fmt.Errorf("new session id: %w", err)
	}
	at := micros(now)
	args := []any{id.String(), scopeKey(norm.Tenant, key), norm.Hash(), norm.Amount, norm.Currency, norm.CardUID, norm.Reference,
		ledger.StatusPending.String(), ledger.LogRef(id), at, micros(now.Add(s.cfg.PendingTTL)), norm.Tenant, norm.Scheme}
	var tu ledger.TopUp
	if s.d.WritableCTE {
		var n int64
		tu, err = scanTopUpAnd(s.db.WriteRow(ctx, false, createTopUpSQL, append(args, sid.String(), tokenHash, micros(tokenExpires))...), &n)
		if err == nil && n != 1 {
			err = fmt.Errorf("top-up %s: token not stored", tu.ID)
		}
		if errors.Is(err, ErrNoRows) {
			err = errReplay
		}
	} else {
		err = s.db.InTx(ctx, func(q Querier) error {
			tu, err = scanTopUp(q.QueryRow(ctx, `INSERT INTO topups (id, idempotency_key, request_hash, amount, currency, card_uid, reference,
	status, log_ref, attempts, fence, created_at, updated_at, expires_at, tenant, scheme)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, 0, $10, $10, $11, $12, $13)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING `+topUpCols, args...))
			if errors.Is(err, ErrNoRows) {
				return errReplay
			}
			if err != nil {
				return fmt.Errorf("insert top-up: %w", err)
			}
			if _, err := q.Exec(ctx, `INSERT INTO sessions (id, kind, topup_id, status, created_at, tenant) VALUES ($1, $2, $3, $4, $5, $6)`,
				sid.String(), ledger.KindTopUp.String(), id.String(), ledger.SessionOpen.String(), at, norm.Tenant); err != nil {
				return fmt.Errorf("insert session: %w", err)
			}
			if _, err := q.Exec(ctx, `INSERT INTO bridge_tokens (token_hash, session_id, expires_at) VALUES ($1, $2, $3)`,
				tokenHash, sid.String(), micros(tokenExpires)); err != nil {
				return fmt.Errorf("insert bridge token: %w", err)
			}
			return nil
		})
	}
	if errors.Is(err, errReplay) {
		tu, _, err := s.CreateTopUp(ctx, req, key, now)
		return tu, ledger.Session{}, false, err
	}
	if err != nil {
		return ledger.TopUp{}, ledger.Session{}, false, err
	}
	return tu, ledger.Session{ID: sid, Kind: ledger.KindTopUp, TopUpID: id, Tenant: norm.Tenant, Status: ledger.SessionOpen,
		CreatedAt: fromMicros(at)}, true, nil
}

// SessionTopUp implements ledger.Ledger: one read, the top-up first
// (marked 0), then the card's unresolved top-ups oldest first.
func (s *Store) SessionTopUp(ctx context.Context, id uuid.UUID, cardUID string) (ledger.TopUp, []ledger.TopUp, bool, error) {
	uid, err := ledger.NormalizeCardUID(cardUID)
	if err != nil {
		return ledger.TopUp{}, nil, false, err
	}
	// Literal statuses so the planner can use the partial indexes (see
	// UnresolvedByCard).
	// The first row also says whether the top-up's tenant has the card
	// on its hot list, so the block costs no round trip of its own.
	rows, err := s.db.Query(ctx, `SELECT `+topUpCols+`, 0 AS k,
	(SELECT COUNT(*) FROM card_blocks b WHERE b.tenant = topups.tenant AND b.card_uid = $2) AS blocked
FROM topups WHERE id = $1
UNION ALL
SELECT `+topUpCols+`, 1 AS k, 0 AS blocked FROM topups WHERE card_uid = $2 AND (status IN ('in_progress', 'in_doubt')
	OR (resolution = 'manual' AND resolution_checked = 0))
ORDER BY k, created_at, id`, id.String(), uid)
	if err != nil {
		return ledger.TopUp{}, nil, false, fmt.Errorf("read top-up %s and its card: %w", id, err)
	}
	defer rows.Close()
	var (
		tu      ledger.TopUp
		found   bool
		open    []ledger.TopUp
		blocked bool
	)
	for rows.Next() {
		var k, b int64
		t, err := scanTopUpAnd(rows, &k, &b)
		if err != nil {
			return ledger.TopUp{}, nil, false, fmt.Errorf("read top-up %s and its card: %w", id, err)
		}
		if k == 0 {
			tu, found, blocked = t, true, b > 0
		} else {
			open = append(open, t)
		}
	}
	if err := rows.Err(); err != nil {
		return ledger.TopUp{}, nil, false, fmt.Errorf("read top-up %s and its card: %w", id, err)
	}
	if !found {
		return ledger.TopUp{}, nil, false, fmt.Errorf("top-up %s: %w", id, ledger.ErrNotFound)
	}
	return tu, open, blocked, nil
}
