package ledger

import (
	"errors"
	"fmt"
)

// Errors of the ledger. Backends wrap them with context; test with errors.Is.
var (
	// ErrInvalid: the input was refused before anything was written (see
	// *ValidationError for which field).
	ErrInvalid = errors.New("ledger: invalid input")
	// ErrNotFound: no top-up or session with that ID.
	ErrNotFound = errors.New("ledger: not found")
	// ErrIdempotencyConflict: the idempotency key was already used for a
	// different request (HTTP 409 in the operator API).
	ErrIdempotencyConflict = errors.New("ledger: idempotency key reused with a different request")
	// ErrInvalidTransition: the state machine does not allow the change.
	ErrInvalidTransition = errors.New("ledger: invalid status transition")
	// ErrConflict: the top-up was not in the expected status any more;
	// someone else changed it first (compare-and-set lost).
	ErrConflict = errors.New("ledger: top-up status changed concurrently")
	// ErrNotReversible: only an applied credit bound to a card can be
	// reversed.
	ErrNotReversible = errors.New("ledger: not an applied credit")
	// ErrStaleFence: a newer fencing token has touched the card, so the
	// caller's card lock is gone and it must not write.
	ErrStaleFence = errors.New("ledger: stale fencing token")
	// ErrCardMismatch: the top-up is bound to a different card.
	ErrCardMismatch = errors.New("ledger: top-up is bound to another card")
	// ErrTopUpExpired: a pending top-up past its expiry cannot start.
	ErrTopUpExpired = errors.New("ledger: top-up expired")
	// ErrTokenUnknown: no bridge token with that hash.
	ErrTokenUnknown = errors.New("ledger: unknown bridge token")
	// ErrTokenExpired: the bridge token's lifetime is over.
	ErrTokenExpired = errors.New("ledger: bridge token expired")
	// ErrTokenUsed: the bridge token was already consumed.
	ErrTokenUsed = errors.New("ledger: bridge token already used")
	// ErrTokenExists: the session already has its bridge token.
	ErrTokenExists = errors.New("ledger: session already has a bridge token")
	// ErrTMCReplay: a commit proof's Transaction MAC counter is not above
	// the last one the ledger accepted for that card and application.
	ErrTMCReplay = errors.New("ledger: transaction MAC counter not above the card's last")
	// ErrSessionClosed: the session is finished and cannot be used again.
	ErrSessionClosed = errors.New("ledger: session already finished")
)

// ValidationError names the field that was refused, so the operator API
// can tell its caller what to fix.
type ValidationError struct {
	Field  string
	Reason string
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("ledger: invalid %s: %s", e.Field, e.Reason)
}

// Unwrap makes errors.Is(err, ErrInvalid) work.
func (e *ValidationError) Unwrap() error { return ErrInvalid }

func invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Reason: fmt.Sprintf(format, args...)}
}
