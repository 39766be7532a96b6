package ledger

import (
	"fmt"
)

// Status is where a top-up stands. The zero value is not a status, so a
// forgotten assignment is caught rather than read as "pending".
type Status uint8

// Top-up statuses, as published in the relay contract (PROTOCOL.md §2).
const (
	// StatusPending: paid for, not yet on a card; a bridge may start it.
	StatusPending Status = iota + 1
	// StatusInProgress: a session holds the card and is working on it.
	StatusInProgress
	// StatusInDoubt: a commit was (or may have been) sent to the card and
	// its outcome is not proven; the card's next tap resolves it.
	StatusInDoubt
	// StatusApplied: the card committed the credit, proven by its
	// Transaction MAC or its top-up log record. Final.
	StatusApplied
	// StatusFailed: proven not applied; may be retried.
	StatusFailed
	// StatusExpired: stayed pending too long. Final.
	StatusExpired
	// StatusCancelled: withdrawn by the operator before reaching a card. Final.
	StatusCancelled
)

var statusNames = [...]string{
	StatusPending:    "pending",
	StatusInProgress: "in_progress",
	StatusInDoubt:    "in_doubt",
	StatusApplied:    "applied",
	StatusFailed:     "failed",
	StatusExpired:    "expired",
	StatusCancelled:  "cancelled",
}

// String returns the contract's name for the status, which is also how it
// is stored, so logs, API and database agree.
func (s Status) String() string {
	if s.Valid() {
		return statusNames[s]
	}
	return fmt.Sprintf("Status(%d)", uint8(s))
}

// Valid reports whether s is one of the named statuses.
func (s Status) Valid() bool { return s >= StatusPending && s <= StatusCancelled }

// Final reports whether nothing may ever change the status again, so
// callers can stop polling and retrying.
func (s Status) Final() bool {
	return s == StatusApplied || s == StatusExpired || s == StatusCancelled
}

// ParseStatus reads a status name as stored and published.
func ParseStatus(name string) (Status, error) {
	for s := StatusPending; s <= StatusCancelled; s++ {
		if statusNames[s] == name {
			return s, nil
		}
	}
	return 0, fmt.Errorf("%w: unknown status %q", ErrInvalid, name)
}

// MarshalText lets statuses appear by name in JSON.
func (s Status) MarshalText() ([]byte, error) {
	if !s.Valid() {
		return nil, fmt.Errorf("%w: %s", ErrInvalid, s)
	}
	return []byte(s.String()), nil
}

// UnmarshalText reads a status name from JSON.
func (s *Status) UnmarshalText(b []byte) error {
	v, err := ParseStatus(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// Rule describes one allowed transition. Session transitions are made by
// a session holding the card lock: they must carry the session, the card
// UID and the lock's fencing token, and they are recorded as an Attempt.
// The others are operator or housekeeping actions with no card involved.
type Rule struct {
	// Session is true when the transition needs a session, card and fence.
	Session bool
	// Why explains the transition; it documents the table.
	Why string
}

// transitions is the whole state machine: any pair not listed is refused.
var transitions = map[[2]Status]Rule{
	{StatusPending, StatusInProgress}: {Session: true, Why: "a session holds the card"},
	{StatusFailed, StatusInProgress}:  {Session: true, Why: "retry after a proven failure"},
	{StatusInProgress, StatusInDoubt}: {Session: true, Why: "recorded before the commit is sent to the card"},
	{StatusPending, StatusInDoubt}:    {Session: true, Why: "a session takes the top-up in one step, right before the commit is sent"},
	{StatusPending, StatusFailed}:     {Session: true, Why: "proven not applied: the session failed before anything that could commit left"},
	{StatusInProgress, StatusApplied}: {Session: true, Why: "commit proven by the Transaction MAC"},
	{StatusInProgress, StatusFailed}:  {Session: true, Why: "proven not applied (error before commit)"},
	{StatusInDoubt, StatusApplied}:    {Session: true, Why: "the card's top-up log record or TMV proves it"},
	{StatusInDoubt, StatusFailed}:     {Session: true, Why: "the card's log proves it is not there"},
	{StatusFailed, StatusPending}:     {Why: "a new bridge token was issued"},
	{StatusPending, StatusExpired}:    {Why: "stayed pending past its expiry"},
	{StatusPending, StatusCancelled}:  {Why: "operator cancelled before any card was touched"},
	{StatusFailed, StatusCancelled}:   {Why: "operator gave up after a proven failure"},
}

// CheckTransition is the single authority on which status changes are
// allowed. It returns the transition's rule, or a *TransitionError that
// unwraps to ErrInvalidTransition.
func CheckTransition(from, to Status) (Rule, error) {
	r, ok := transitions[[2]Status{from, to}]
	if !ok {
		return Rule{}, &TransitionError{From: from, To: to}
	}
	return r, nil
}

// TransitionError says which status change was refused.
type TransitionError struct {
	From, To Status
}

func (e *TransitionError) Error() string {
	return fmt.Sprintf("ledger: transition %s → %s is not allowed", e.From, e.To)
}

// Unwrap makes errors.Is(err, ErrInvalidTransition) work.
func (e *TransitionError) Unwrap() error { return ErrInvalidTransition }

// SessionKind says what a session is for.
type SessionKind uint8

// Session kinds, as in the bridge protocol's ready.kind.
const (
	// KindTopUp: the session puts one top-up on a card.
	KindTopUp SessionKind = iota + 1
	// KindBalance: the session only reads a card's balance and log.
	KindBalance
)

// String returns the protocol's name of the kind.
func (k SessionKind) String() string {
	switch k {
	case KindTopUp:
		return "topup"
	case KindBalance:
		return "balance"
	}
	return fmt.Sprintf("SessionKind(%d)", uint8(k))
}

// ParseSessionKind reads a kind name as stored and published.
func ParseSessionKind(name string) (SessionKind, error) {
	switch name {
	case "topup":
		return KindTopUp, nil
	case "balance":
		return KindBalance, nil
	}
	return 0, fmt.Errorf("%w: unknown session kind %q", ErrInvalid, name)
}

// SessionStatus is where a session stands: open until FinishSession moves
// it, once, to ok or failed.
type SessionStatus uint8

// Session statuses.
const (
	// SessionOpen: created, possibly running.
	SessionOpen SessionStatus = iota + 1
	// SessionOK: finished with result.ok = true.
	SessionOK
	// SessionFailed: finished with result.ok = false.
	SessionFailed
)

// String returns the stored name of the session status.
func (s SessionStatus) String() string {
	switch s {
	case SessionOpen:
		return "open"
	case SessionOK:
		return "ok"
	case SessionFailed:
		return "failed"
	}
	return fmt.Sprintf("SessionStatus(%d)", uint8(s))
}

// ParseSessionStatus reads a stored session status.
func ParseSessionStatus(name string) (SessionStatus, error) {
	switch name {
	case "open":
		return SessionOpen, nil
	case "ok":
		return SessionOK, nil
	case "failed":
		return SessionFailed, nil
	}
	return 0, fmt.Errorf("%w: unknown session status %q", ErrInvalid, name)
}
