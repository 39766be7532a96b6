package transaction

import (
	"context"
	"errors"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/transaction/cardscript"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/lock"
)

// Reason says why a session ended without success. It is domain data:
// the ledger records it with the session (and the server words it for
// the bridge; see server/messages.go for the contract's codes). The
// values are stored, so they never change.
type Reason string

// Reasons a session can end with.
const (
	ReasonCardBusy      Reason = "card_busy"
	ReasonCardMismatch  Reason = "card_mismatch"
	ReasonCardUnknown   Reason = "card_unknown"
	ReasonCardError     Reason = "card_error"
	ReasonLimitExceeded Reason = "limit_exceeded"
	ReasonIntegrity     Reason = "integrity"
	ReasonTagLost       Reason = "tag_lost"
	ReasonTimeout       Reason = "timeout"
	ReasonCancelled     Reason = "cancelled"
	ReasonNotPayable    Reason = "not_payable"
	// ReasonCardBlocked: a top-up refused because its card is on the
	// operator's hot list (nothing was sent that could credit it).
	ReasonCardBlocked Reason = "card_blocked"
	ReasonInternal    Reason = "internal"
	// ReasonProtocol: the bridge broke the protocol.
	ReasonProtocol Reason = "protocol_violation"
	// ReasonTokenReplaced: a newer bridge token for the same top-up
	// retired this session's (recorded by the ledger).
	ReasonTokenReplaced Reason = Reason(ledger.CodeTokenReplaced)
	// ReasonTopUpCancelled: an operator cancelled the session's top-up
	// (recorded by the ledger).
	ReasonTopUpCancelled Reason = Reason(ledger.CodeTopUpCancelled)
	// ReasonAbandoned: a top-up left in_progress by a dead session moved
	// to in_doubt (a top-up transition, not a session end).
	ReasonAbandoned Reason = "abandoned"
	// ReasonNotOnCard: an in_doubt top-up failed on proven absence from
	// the card's log (a top-up transition).
	ReasonNotOnCard Reason = "not_on_card"
)

// Reasons lists every reason the domain records: with a session's end
// or with a top-up's transition.
func Reasons() []Reason {
	return []Reason{ReasonCardBusy, ReasonCardMismatch, ReasonCardUnknown, ReasonCardError,
		ReasonLimitExceeded, ReasonIntegrity, ReasonTagLost, ReasonTimeout, ReasonCancelled,
		ReasonNotPayable, ReasonCardBlocked, ReasonInternal, ReasonProtocol, ReasonTokenReplaced,
		ReasonTopUpCancelled, ReasonAbandoned, ReasonNotOnCard}
}

// Record is one card log entry of a balance lookup.
type Record struct {
	Kind      string // "topup" or "usage"
	Timestamp uint32
	Amount    int64
	Ref       string // hex log reference of a top-up record
}

// Result is a session's outcome, what the bridge gets in `result`.
type Result struct {
	OK       bool
	Kind     string // "topup" or "balance"
	TopUpID  string
	Status   string // top-up status after the session
	Amount   int64
	Currency string
	Balance  *int64
	CardUID  string
	Records  []Record
	// Reason is set when OK is false (the server words it for the user).
	Reason Reason
	// Exchanges is the number of bridge round trips the card work took.
	Exchanges int
	// Retaps is how often the card was presented again within the
	// session after it left the field.
	Retaps int
	// Profile is the fleet profile that served the card.
	Profile string
}

// ReasonOf classifies an error that ended a session: the one place that
// maps errors to reasons (provision.ReasonOf adds provisioning's own
// errors and defers to it).
func ReasonOf(err error) Reason {
	var se *desfire.StatusError
	switch {
	case err == nil:
		return ""
	case errors.Is(err, desfire.ErrCancelled):
		return ReasonCancelled
	case errors.Is(err, ErrNotPayable):
		return ReasonNotPayable
	case errors.Is(err, ErrCardBlocked):
		return ReasonCardBlocked
	case errors.Is(err, ledger.ErrCardMismatch):
		return ReasonCardMismatch
	case errors.Is(err, ErrUnproven):
		return ReasonIntegrity
	case errors.Is(err, cardscript.ErrLayout), errors.Is(err, cardscript.ErrUnknownCard):
		return ReasonCardUnknown
	case errors.Is(err, desfire.ErrTagLost):
		return ReasonTagLost
	case errors.Is(err, desfire.ErrBridgeTimeout), errors.Is(err, context.DeadlineExceeded):
		return ReasonTimeout
	case errors.Is(err, lock.ErrLocked):
		return ReasonCardBusy
	case errors.Is(err, desfire.ErrBoundary):
		return ReasonLimitExceeded
	case errors.Is(err, desfire.ErrAuthentication), errors.Is(err, desfire.ErrRndA),
		errors.Is(err, desfire.ErrNoSuchKey), errors.Is(err, desfire.ErrApplicationNotFound):
		return ReasonCardUnknown
	case errors.Is(err, desfire.ErrResponseMAC), errors.Is(err, desfire.ErrResponseCRC),
		errors.Is(err, desfire.ErrTransactionMAC), errors.Is(err, desfire.ErrPadding),
		errors.Is(err, desfire.ErrIntegrity), errors.Is(err, desfire.ErrShortResponse),
		errors.Is(err, desfire.ErrLongResponse), errors.Is(err, desfire.ErrUnexpectedStatus):
		return ReasonIntegrity
	case errors.As(err, &se):
		return ReasonCardError
	}
	return ReasonInternal
}

// storedRecords is recs in the shape the ledger stores.
func storedRecords(recs []Record) []ledger.BalanceRecord {
	out := make([]ledger.BalanceRecord, len(recs))
	for i, r := range recs {
		out[i] = ledger.BalanceRecord(r)
	}
	return out
}
