package ledger

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"
)

// Provisioning ledger: per card or tag, the provisioning step reached and,
// for every key, the version the card has proven it holds and the version
// the server is about to write. A key version is recorded as pending
// before the ChangeKey that writes it leaves the server, so whatever a
// tear leaves on the card is one of two versions the server knows.

// ProvisionKind is what is being provisioned.
type ProvisionKind string

// Provisioning kinds.
const (
	ProvisionNTAG424 ProvisionKind = "ntag424"
	ProvisionDESFire ProvisionKind = "desfire"
)

// ProvisionStep is how far provisioning has gone. Steps only move
// forward, one transition at a time, each after card-authenticated
// evidence of the previous one.
type ProvisionStep string

// Provisioning steps, in order.
const (
	StepStarted ProvisionStep = "started" // keys 1.. not yet all at target
	StepKeys    ProvisionStep = "keys"    // keys other than 0 proven at target
	StepFiles   ProvisionStep = "files"   // files, SDM and lock proven by MACed answers
	StepDone    ProvisionStep = "done"    // key 0 proven by authentication with it
)

// Next reports whether to follows s directly.
func (s ProvisionStep) Next(to ProvisionStep) bool {
	order := []ProvisionStep{StepStarted, StepKeys, StepFiles, StepDone}
	for i := 0; i+1 < len(order); i++ {
		if order[i] == s {
			return order[i+1] == to
		}
	}
	return false
}

// Errors of the provisioning ledger.
var (
	// ErrKeyState: the requested key change does not start from the
	// recorded state (another version is pending, or the version moved).
	ErrKeyState = errors.New("ledger: key state changed")
)

// KeyState is what the ledger knows of one key of a card.
type KeyState struct {
	KeyNo byte
	// Version is the last version the card proved it holds (0 on a
	// factory tag).
	Version byte
	// Pending, when set, is a version written or about to be written: the
	// card holds Version or Pending.
	Pending *byte
	// Evidence says what proved Version ("factory", "auth", "mac").
	Evidence  string
	UpdatedAt time.Time
}

// ProvisionRecord is a card's provisioning state.
type ProvisionRecord struct {
	UID       string
	Kind      ProvisionKind
	Step      ProvisionStep
	Fence     int64
	Keys      []KeyState
	CreatedAt time.Time
	UpdatedAt time.Time
}

// ProvisionEvent is one entry of a card's provisioning history.
type ProvisionEvent struct {
	Seq    int64
	What   string
	Detail string
	At     time.Time
}

// ProvisionLedger is the durable store of provisioning state. Every write
// takes the card lock's fence and refuses one below the recorded fence
// (ErrStaleFence); every write is one database transaction.
type ProvisionLedger interface {
	// BeginProvision returns the card's record, creating it (step started,
	// keys 0..keys-1 at version 0, evidence "factory") when absent. A
	// record of another kind fails with ErrInvalid.
	BeginProvision(ctx context.Context, uid string, kind ProvisionKind, keys int, fence int64, now time.Time) (ProvisionRecord, error)
	// GetProvision returns the card's record or ErrNotFound.
	GetProvision(ctx context.Context, uid string) (ProvisionRecord, error)
	// IntendKey records, before the ChangeKey leaves, that key keyNo is
	// about to change from version from to version to: compare-and-set on
	// the key's version being from and nothing else pending
	// (ErrKeyState). Recording the same intent twice is allowed.
	IntendKey(ctx context.Context, uid string, keyNo, from, to byte, fence int64, now time.Time) error
	// ConfirmKey records that the card proved key keyNo holds version,
	// which must be the recorded version or the pending one (ErrKeyState);
	// the pending version is cleared.
	ConfirmKey(ctx context.Context, uid string, keyNo, version byte, evidence string, fence int64, now time.Time) error
	// AdvanceProvision moves the step from to to (ErrConflict if it moved,
	// ErrInvalidTransition if to does not follow from).
	AdvanceProvision(ctx context.Context, uid string, from, to ProvisionStep, fence int64, now time.Time) error
	// ProvisionHistory returns a card's provisioning events, oldest first.
	ProvisionHistory(ctx context.Context, uid string) ([]ProvisionEvent, error)
}

// ProvisionSession is one provisioning session: its kind, the validated
// request (JSON), its bridge token's state and its outcome.
type ProvisionSession struct {
	ID uuid.UUID
	// Tenant owns the session: only its API keys see it.
	Tenant string
	Kind   string
	Params []byte
	// Status is "open", "ok" or "failed".
	Status    string
	CardUID   string
	ErrorCode string
	// Result is the session's result (JSON), set when it ends.
	Result    []byte
	CreatedAt time.Time
	ExpiresAt time.Time
	EndedAt   *time.Time
}

// ProvisionSessions stores provisioning sessions and their bridge tokens.
type ProvisionSessions interface {
	// CreateProvisionSession opens a session of a tenant with the SHA-256
	// of its one bridge token.
	CreateProvisionSession(ctx context.Context, tenant, kind string, params, tokenHash []byte, expiresAt, now time.Time) (ProvisionSession, error)
	// ConsumeProvisionToken atomically marks a token used and returns its
	// session (ErrTokenUnknown, ErrTokenExpired, ErrTokenUsed); exactly
	// one of several concurrent callers wins.
	ConsumeProvisionToken(ctx context.Context, tokenHash []byte, now time.Time) (ProvisionSession, error)
	// FinishProvisionSession records the outcome, once (ErrSessionClosed).
	FinishProvisionSession(ctx context.Context, id uuid.UUID, ok bool, cardUID, errorCode string, result []byte, now time.Time) error
	// GetProvisionSession returns a session or ErrNotFound.
	GetProvisionSession(ctx context.Context, id uuid.UUID) (ProvisionSession, error)
	// ListProvisionSessions returns a tenant's sessions, newest first.
	ListProvisionSessions(ctx context.Context, tenant string, f ProvisionSessionFilter) ([]ProvisionSession, error)
}

// MaxProvisionSessionPage bounds one page of ListProvisionSessions.
const MaxProvisionSessionPage = 500

// ProvisionSessionFilter selects provisioning sessions: by status ("open",
// "ok", "failed"; empty for all) and kind (empty for all), created before
// Before (zero: now), at most Limit (1..MaxProvisionSessionPage; 0: 100).
type ProvisionSessionFilter struct {
	Status, Kind string
	Before       time.Time
	Limit        int
}
