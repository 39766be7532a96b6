package transaction

import (
	"context"
	"errors"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/transaction/cardscript"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/lock"
)

// Error codes of a session result (result.error.code in the relay
// contract).
const (
	CodeCardBusy      = "card_busy"
	CodeCardMismatch  = "card_mismatch"
	CodeCardUnknown   = "card_unknown"
	CodeCardError     = "card_error"
	CodeLimitExceeded = "limit_exceeded"
	CodeIntegrity     = "integrity"
	CodeTagLost       = "tag_lost"
	CodeTimeout       = "timeout"
	CodeCancelled     = "cancelled"
	CodeNotPayable    = "not_payable"
	CodeInternal      = "internal"
)

// Record is one card log entry in a result.
type Record struct {
	Kind      string `json:"kind"` // "topup" or "usage"
	Timestamp uint32 `json:"timestamp"`
	Amount    int64  `json:"amount"`
	Ref       string `json:"ref,omitempty"`
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
	// Code is set when OK is false (the server words it for the user).
	Code string
	// Exchanges is the number of bridge round trips the card work took.
	Exchanges int
	// Retaps is how often the card was presented again within the
	// session after it left the field.
	Retaps int
	// Profile is the fleet profile that served the card.
	Profile string
}

// Code maps an error from a session to a contract error code.
func Code(err error) string {
	var se *desfire.StatusError
	switch {
	case err == nil:
		return ""
	case errors.Is(err, desfire.ErrCancelled):
		return CodeCancelled
	case errors.Is(err, ErrNotPayable):
		return CodeNotPayable
	case errors.Is(err, ErrCardBlocked):
		return CodeCardBlocked
	case errors.Is(err, ledger.ErrCardMismatch):
		return CodeCardMismatch
	case errors.Is(err, ErrUnproven):
		return CodeIntegrity
	case errors.Is(err, cardscript.ErrLayout), errors.Is(err, cardscript.ErrUnknownCard):
		return CodeCardUnknown
	case errors.Is(err, desfire.ErrTagLost):
		return CodeTagLost
	case errors.Is(err, desfire.ErrBridgeTimeout), errors.Is(err, context.DeadlineExceeded):
		return CodeTimeout
	case errors.Is(err, lock.ErrLocked):
		return CodeCardBusy
	case errors.Is(err, desfire.ErrBoundary):
		return CodeLimitExceeded
	case errors.Is(err, desfire.ErrAuthentication), errors.Is(err, desfire.ErrRndA),
		errors.Is(err, desfire.ErrNoSuchKey), errors.Is(err, desfire.ErrApplicationNotFound):
		return CodeCardUnknown
	case errors.Is(err, desfire.ErrResponseMAC), errors.Is(err, desfire.ErrResponseCRC),
		errors.Is(err, desfire.ErrTransactionMAC), errors.Is(err, desfire.ErrPadding),
		errors.Is(err, desfire.ErrIntegrity), errors.Is(err, desfire.ErrShortResponse),
		errors.Is(err, desfire.ErrLongResponse), errors.Is(err, desfire.ErrUnexpectedStatus):
		return CodeIntegrity
	case errors.As(err, &se):
		return CodeCardError
	}
	return CodeInternal
}
