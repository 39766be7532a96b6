package ledger

import (
	"context"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Ledger is the durable store of top-ups, attempts, card fences, sessions
// and bridge tokens. Both implementations (ledger/sqlite, ledger/postgres)
// pass the ledgertest suite and are safe for concurrent use by several
// goroutines and, for PostgreSQL, several processes.
type Ledger interface {
	// CreateTopUp creates a pending top-up for an operator request, once per
	// idempotency key: a replay with the same request returns the existing
	// top-up and created=false; the same key with a different request
	// fails with ErrIdempotencyConflict. Bad input fails with ErrInvalid.
	CreateTopUp(ctx context.Context, req Request, idempotencyKey string, now time.Time) (TopUp, bool, error)
	// CreateTopUpSession is CreateTopUp and, for a new top-up, its first
	// session (of the request's tenant) with its bridge token
	// (IssueToken's tokenHash, expiring at tokenExpires), in one commit.
	// A replayed key returns the existing top-up, created=false and a
	// zero Session: the caller issues a ticket the ordinary way.
	CreateTopUpSession(ctx context.Context, req Request, idempotencyKey string, tokenHash []byte, tokenExpires, now time.Time) (TopUp, Session, bool, error)
	// SessionTopUp returns a top-up and its card's unresolved top-ups (as
	// UnresolvedByCard(cardUID) would, the top-up itself among them when it
	// is unresolved and bound to that card) in one read, and whether the
	// top-up's tenant has cardUID on its hot list.
	SessionTopUp(ctx context.Context, id uuid.UUID, cardUID string) (tu TopUp, open []TopUp, blocked bool, err error)
	// CreateReversal creates, once per credit, a pending entry of kind
	// TopUpReversal that debits an applied credit's amount back from the
	// same card; asking again returns the existing one (created=false).
	// ErrNotFound if tenant does not own the credit, ErrNotReversible if it
	// is not an applied credit bound to a card.
	CreateReversal(ctx context.Context, tenant string, original uuid.UUID, now time.Time) (TopUp, bool, error)
	// GetTopUp returns a top-up or ErrNotFound.
	GetTopUp(ctx context.Context, id uuid.UUID) (TopUp, error)
	// ListTopUpsByCard returns a card's top-ups, newest first.
	ListTopUpsByCard(ctx context.Context, cardUID string) ([]TopUp, error)
	// UnresolvedByCard returns a card's in_progress and in_doubt top-ups,
	// oldest first, so a session holding the card's lock can settle what
	// earlier sessions left open before anything else. It reads only those
	// rows (indexed), however long the card's history.
	UnresolvedByCard(ctx context.Context, cardUID string) ([]TopUp, error)
	// ListAttempts returns the attempts on a top-up, oldest first.
	ListAttempts(ctx context.Context, topUpID uuid.UUID) ([]Attempt, error)
	// Transition changes a top-up's status in one database transaction:
	// compare-and-set on t.From (ErrConflict if it moved), the state machine
	// (ErrInvalidTransition), the card binding (ErrCardMismatch) and the
	// card's fence (ErrStaleFence); session transitions also record the
	// Attempt. On any error nothing is written.
	Transition(ctx context.Context, t Transition) (TopUp, error)
	// ExpirePending moves pending top-ups whose expiry is at or before now
	// to expired and returns how many it moved.
	ExpirePending(ctx context.Context, now time.Time) (int, error)

	// CreateSession opens a session of DefaultTenant; a KindTopUp session
	// names its top-up.
	CreateSession(ctx context.Context, kind SessionKind, topUpID uuid.UUID, now time.Time) (Session, error)
	// CreateTenantSession opens a session owned by tenant; a KindTopUp
	// session's top-up must belong to the same tenant (ErrNotFound).
	CreateTenantSession(ctx context.Context, tenant string, kind SessionKind, topUpID uuid.UUID, now time.Time) (Session, error)
	// RevokeTokens retires the unused bridge tokens of a top-up's open
	// sessions issued before keep (in created_at, then id, order, so of two
	// concurrent tickets one survives): their sessions end failed with
	// ErrorCode "token_replaced" and the tokens are refused as used. It
	// returns how many sessions it ended.
	RevokeTokens(ctx context.Context, topUpID, keep uuid.UUID, now time.Time) (int, error)
	// IssueToken stores the SHA-256 of the one bridge token of an open
	// session.
	IssueToken(ctx context.Context, sessionID uuid.UUID, tokenHash []byte, expiresAt time.Time) error
	// ConsumeToken atomically marks a token used and returns its session;
	// it fails with ErrTokenUnknown, ErrTokenExpired, ErrTokenUsed or
	// ErrSessionClosed, and exactly one of several concurrent callers wins.
	ConsumeToken(ctx context.Context, tokenHash []byte, now time.Time) (Session, error)
	// FinishSession records a session's outcome, once (ErrSessionClosed after).
	FinishSession(ctx context.Context, id uuid.UUID, outcome SessionOutcome, now time.Time) (Session, error)
	// GetSession returns a session or ErrNotFound.
	GetSession(ctx context.Context, id uuid.UUID) (Session, error)

	// Resolve records an operator's decision on a top-up whose card never
	// came back: in_doubt or in_progress → applied or failed, with who and
	// why. The top-up is then final for sessions (not payable again); a
	// later tap of its card compares the decision with the card's log
	// (CheckResolution). ErrConflict if the status moved meanwhile.
	Resolve(ctx context.Context, r Resolution) (TopUp, error)
	// CheckResolution records that an authenticated read of the card's log
	// was compared with a manual resolution; conflict (empty when they
	// agree) says what the card proved.
	CheckResolution(ctx context.Context, id uuid.UUID, conflict string, now time.Time) (TopUp, error)
	// ListResolutions returns the operator decisions on a top-up, oldest first.
	ListResolutions(ctx context.Context, topUpID uuid.UUID) ([]ResolutionEntry, error)
	// ListTopUps returns top-ups matching f, oldest change first, at most
	// f.Limit of them.
	ListTopUps(ctx context.Context, f Filter) ([]TopUp, error)
	// OldestUnresolved returns the last change time of the oldest
	// in_progress or in_doubt top-up (ok=false when there is none).
	OldestUnresolved(ctx context.Context) (at time.Time, ok bool, err error)

	// Operations: the hot list, cancellation and exports (operations.go).
	Operations

	// Ping reports whether the database answers, for readiness probes.
	Ping(ctx context.Context) error
	// Close releases the database.
	Close() error
}

// Transition asks to move one top-up from From to To. Fields that do not
// apply are left zero; set fields are validated and stored.
type Transition struct {
	TopUpID uuid.UUID
	From    Status
	To      Status
	// Fence is the card lock's fencing token. Required (> 0) for session
	// transitions; when set it must be at least the card's recorded fence.
	Fence int64
	// SessionID is the session making a session transition; its Attempt
	// row is created or updated.
	SessionID uuid.UUID
	// CardUID is the card the session holds (hex). Required for session
	// transitions; binds an unbound top-up when it starts.
	CardUID string
	// BalanceBefore/BalanceAfter, TMC and TMV record what the session read
	// or verified; nil leaves the stored value unchanged.
	BalanceBefore *int64
	BalanceAfter  *int64
	TMC           *uint32
	TMV           []byte
	// App is the card application (AID) the TMC belongs to; with TMC on
	// → applied the ledger checks TMC is above the last counter it
	// accepted for this card and application (ErrTMCReplay otherwise).
	App uint32
	// ReaderID and PrevReaderID, on → applied, record the Transaction MAC
	// Reader IDs the verified Transaction MAC covers (nil: none).
	ReaderID, PrevReaderID []byte
	// ErrorCode (contract error code, e.g. "tag_lost") goes on the Attempt.
	ErrorCode string
	// Profile is the card profile the session uses (recorded on the
	// Attempt and the top-up; empty leaves them unchanged).
	Profile string
	// ExpiresAt, for failed → pending, gives the top-up a new expiry.
	ExpiresAt time.Time
	// Unbind, for in_progress (or pending) → failed, clears the card binding the
	// session made: nothing reached a card, so the top-up is free for any
	// card again (a tap with a foreign card, or a bridge that named a UID
	// it did not prove, must not strand a paid top-up). The Attempt keeps
	// the UID the session used.
	Unbind bool
	// Finish, on a session transition, also ends the session with this
	// outcome in the same database transaction (one commit where FinishSession
	// would take a second). A session that has ended already keeps its
	// outcome; the transition is made all the same.
	Finish *SessionOutcome
	// Now is the time of the change.
	Now time.Time
}

// Resolution is an operator's decision on an unresolved top-up.
type Resolution struct {
	TopUpID uuid.UUID
	// From is the status the operator saw (in_doubt or in_progress).
	From Status
	// Outcome is applied or failed.
	Outcome Status
	// Actor identifies who decided (the API key's id); Reason why.
	Actor, Reason string
	Now           time.Time
}

// Resolution limits.
const (
	MaxReasonLen = 500
	MaxActorLen  = 100
)

// Check validates r on its own.
func (r Resolution) Check() error {
	switch {
	case r.TopUpID == uuid.Nil:
		return invalid("topup_id", "missing")
	case r.From != StatusInDoubt && r.From != StatusInProgress:
		return invalid("status", "only an in_doubt or in_progress top-up can be resolved, this one is %s", r.From)
	case r.Outcome != StatusApplied && r.Outcome != StatusFailed:
		return invalid("outcome", "must be applied or failed")
	case strings.TrimSpace(r.Reason) == "" || len(r.Reason) > MaxReasonLen || !utf8.ValidString(r.Reason):
		return invalid("reason", "required, valid UTF-8, at most %d bytes", MaxReasonLen)
	case r.Actor == "" || len(r.Actor) > MaxActorLen || !printable(r.Actor):
		return invalid("actor", "required, printable, at most %d bytes", MaxActorLen)
	case r.Now.IsZero():
		return invalid("now", "missing")
	}
	return nil
}

// ResolutionEntry is one recorded operator decision.
type ResolutionEntry struct {
	ID      uuid.UUID
	TopUpID uuid.UUID
	Actor   string
	From    Status
	Outcome Status
	Reason  string
	At      time.Time
}

// Filter selects top-ups for ListTopUps. Zero fields do not filter.
type Filter struct {
	Status Status
	// Tenant keeps one tenant's top-ups.
	Tenant string
	// CardUID selects one card's top-ups (normalised hex).
	CardUID string
	// UpdatedBefore keeps top-ups whose last change is before it;
	// UpdatedFrom those whose last change is at or after it.
	UpdatedBefore time.Time
	UpdatedFrom   time.Time
	// CreatedFrom and CreatedBefore bound the creation time: [from, before).
	CreatedFrom   time.Time
	CreatedBefore time.Time
	// Reference selects the top-ups with exactly this operator reference.
	Reference string
	// NewestFirst orders by creation time, newest first (a card's
	// history); otherwise the order is the last change, oldest first (the
	// operator's queue).
	NewestFirst bool
	// After is the cursor: top-ups after this position in the order, an
	// (updated_at, id) or, NewestFirst, a (created_at, id).
	AfterUpdated time.Time
	AfterID      uuid.UUID
	// Limit is the page size (1..MaxPage; default DefaultPage).
	Limit int
}

// Page sizes of ListTopUps.
const (
	DefaultPage = 100
	MaxPage     = 1000
)

// Check validates f and fills its defaults.
func (f Filter) Check() (Filter, error) {
	if f.Status != 0 && !f.Status.Valid() {
		return f, invalid("status", "unknown status")
	}
	if f.Tenant != "" {
		if err := ValidateTenant(f.Tenant); err != nil {
			return f, err
		}
	}
	if f.CardUID != "" {
		uid, err := NormalizeCardUID(f.CardUID)
		if err != nil {
			return f, err
		}
		f.CardUID = uid
	}
	switch {
	case f.Limit == 0:
		f.Limit = DefaultPage
	case f.Limit < 0 || f.Limit > MaxPage:
		return f, invalid("limit", "must be 1..%d", MaxPage)
	}
	if f.AfterID != uuid.Nil && f.AfterUpdated.IsZero() {
		return f, invalid("cursor", "malformed")
	}
	if len(f.Reference) > MaxReferenceLen || !printable(f.Reference) {
		return f, invalid("reference", "printable, at most %d bytes", MaxReferenceLen)
	}
	if !f.CreatedFrom.IsZero() && !f.CreatedBefore.IsZero() && !f.CreatedFrom.Before(f.CreatedBefore) {
		return f, invalid("created", "the range is empty (from is not before the end)")
	}
	if !f.UpdatedFrom.IsZero() && !f.UpdatedBefore.IsZero() && !f.UpdatedFrom.Before(f.UpdatedBefore) {
		return f, invalid("updated", "the range is empty (from is not before the end)")
	}
	return f, nil
}

// Check validates t on its own, before any database work: the state
// machine, required session fields and payload sizes. It returns the
// transition's rule and t with its card UID normalised.
func (t Transition) Check() (Rule, Transition, error) {
	rule, err := CheckTransition(t.From, t.To)
	if err != nil {
		return Rule{}, t, err
	}
	if t.TopUpID == uuid.Nil {
		return Rule{}, t, invalid("topup_id", "missing")
	}
	if t.Now.IsZero() {
		return Rule{}, t, invalid("now", "missing")
	}
	if t.Fence < 0 {
		return Rule{}, t, invalid("fence", "negative")
	}
	if t.CardUID != "" {
		uid, err := NormalizeCardUID(t.CardUID)
		if err != nil {
			return Rule{}, t, err
		}
		t.CardUID = uid
	}
	if rule.Session {
		switch {
		case t.Fence == 0:
			return Rule{}, t, invalid("fence", "required for %s → %s", t.From, t.To)
		case t.SessionID == uuid.Nil:
			return Rule{}, t, invalid("session_id", "required for %s → %s", t.From, t.To)
		case t.CardUID == "":
			return Rule{}, t, invalid("card_uid", "required for %s → %s", t.From, t.To)
		}
	} else if t.SessionID != uuid.Nil {
		return Rule{}, t, invalid("session_id", "not used by %s → %s", t.From, t.To)
	} else if t.Finish != nil {
		return Rule{}, t, invalid("finish", "only a session transition ends a session")
	}
	if len(t.TMV) != 0 && len(t.TMV) != TMVLen {
		return Rule{}, t, invalid("tmv", "must be %d bytes, got %d", TMVLen, len(t.TMV))
	}
	switch {
	case len(t.ReaderID) == 0 && len(t.PrevReaderID) != 0:
		return Rule{}, t, invalid("prev_reader_id", "only with reader_id")
	case len(t.ReaderID) != 0 && (len(t.ReaderID) != ReaderIDLen || len(t.PrevReaderID) != ReaderIDLen):
		return Rule{}, t, invalid("reader_id", "reader_id and prev_reader_id must be %d bytes", ReaderIDLen)
	case len(t.ReaderID) != 0 && t.To != StatusApplied:
		return Rule{}, t, invalid("reader_id", "only for → applied")
	}
	if len(t.ErrorCode) > MaxErrorCodeLen || !printable(t.ErrorCode) {
		return Rule{}, t, invalid("error_code", "must be printable and at most %d bytes", MaxErrorCodeLen)
	}
	if !t.ExpiresAt.IsZero() && t.To != StatusPending {
		return Rule{}, t, invalid("expires_at", "only for → pending")
	}
	if t.Unbind && ((t.From != StatusInProgress && t.From != StatusPending) || t.To != StatusFailed) {
		return Rule{}, t, invalid("unbind", "only for in_progress or pending → failed")
	}
	return rule, t, nil
}

// Config holds the ledger's policy knobs, shared by both backends.
type Config struct {
	// PendingTTL is how long a new top-up stays startable before
	// ExpirePending may expire it. Default 24h.
	PendingTTL time.Duration
	// Stats, when set, counts the ledger's statements, round trips and
	// commits (tests and the load tool read it).
	Stats *Stats
	// Outbox records an Event (ledger.Outbox) with every state change an
	// operator hears about, in the change's own transaction; on when
	// webhooks are configured.
	Outbox bool
}

// DefaultPendingTTL is Config.PendingTTL when unset.
const DefaultPendingTTL = 24 * time.Hour

// WithDefaults returns c with unset fields filled in.
func (c Config) WithDefaults() Config {
	if c.PendingTTL <= 0 {
		c.PendingTTL = DefaultPendingTTL
	}
	return c
}
