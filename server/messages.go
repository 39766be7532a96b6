package server

import (
	"github.com/desfire-relay/relay/transaction"
	"github.com/desfire-relay/relay/transaction/provision"
)

// Session result codes (result.error.code in docs/PROTOCOL.md, error_code
// of GET /v1/sessions/{id}), besides codeNotPayable, codeCardBlocked and
// codeInternal.
const (
	codeCardBusy          = "card_busy"
	codeCardMismatch      = "card_mismatch"
	codeCardUnknown       = "card_unknown"
	codeCardError         = "card_error"
	codeLimitExceeded     = "limit_exceeded"
	codeIntegrity         = "integrity"
	codeTagLost           = "tag_lost"
	codeTimeout           = "timeout"
	codeCancelled         = "cancelled"
	codeProtocolViolation = "protocol_violation"
	codeTokenReplaced     = "token_replaced"
	codeTopUpCancelled    = "topup_cancelled"
	codeAbandoned         = "abandoned"
	codeNotOnCard         = "not_on_card"
	codeNotBlank          = "not_blank"
	codeTagLocked         = "tag_locked"
	codeProvisioned       = "already_provisioned"
)

// reasonCodes maps each reason the domain records to its contract code:
// the one place the two vocabularies meet.
var reasonCodes = map[transaction.Reason]string{
	transaction.ReasonCardBusy:       codeCardBusy,
	transaction.ReasonCardMismatch:   codeCardMismatch,
	transaction.ReasonCardUnknown:    codeCardUnknown,
	transaction.ReasonCardError:      codeCardError,
	transaction.ReasonLimitExceeded:  codeLimitExceeded,
	transaction.ReasonIntegrity:      codeIntegrity,
	transaction.ReasonTagLost:        codeTagLost,
	transaction.ReasonTimeout:        codeTimeout,
	transaction.ReasonCancelled:      codeCancelled,
	transaction.ReasonNotPayable:     codeNotPayable,
	transaction.ReasonCardBlocked:    codeCardBlocked,
	transaction.ReasonInternal:       codeInternal,
	transaction.ReasonProtocol:       codeProtocolViolation,
	transaction.ReasonTokenReplaced:  codeTokenReplaced,
	transaction.ReasonTopUpCancelled: codeTopUpCancelled,
	transaction.ReasonAbandoned:      codeAbandoned,
	transaction.ReasonNotOnCard:      codeNotOnCard,
	provision.ReasonInvalid:          codeInvalid,
	provision.ReasonNotBlank:         codeNotBlank,
	provision.ReasonLocked:           codeTagLocked,
	provision.ReasonProvisioned:      codeProvisioned,
}

// wireCode is the contract code of a reason ("" for none). A reason
// without a code (a stored value from a newer release) reads as internal.
func wireCode(r transaction.Reason) string {
	if r == "" {
		return ""
	}
	if c, ok := reasonCodes[r]; ok {
		return c
	}
	return codeInternal
}

// storedCode is the contract code of a reason the ledger stored as text.
func storedCode(s string) string { return wireCode(transaction.Reason(s)) }

// userMessage is the text a bridge shows its user for a session result
// code: the contract's words, kept out of the domain.
func userMessage(code string) string {
	switch code {
	case codeCardBusy:
		return "This card is being used in another session. Try again in a moment."
	case codeCardMismatch:
		return "This top-up belongs to a different card."
	case codeCardUnknown:
		return "This card is not recognised."
	case codeCardError:
		return "The card refused the operation."
	case codeLimitExceeded:
		return "The card's balance would go beyond its limits."
	case codeIntegrity:
		return "The card's answer could not be verified. Tap the card again."
	case codeTagLost:
		return "The card was removed too early. Tap the card again to finish."
	case codeTimeout:
		return "The connection was too slow. Tap the card again."
	case codeCancelled:
		return "Cancelled."
	case codeNotPayable:
		return "This top-up cannot be applied any more."
	case codeCardBlocked:
		return "This card is blocked. Please contact support."
	}
	return "Something went wrong on our side."
}

// promptText words a session's prompt for the card holder.
func promptText(p transaction.Prompt) string {
	switch p {
	case transaction.PromptHold:
		return "Hold the card still"
	case transaction.PromptTapAgain:
		return "Tap the card again to finish"
	case transaction.PromptDone:
		return "Done"
	}
	return ""
}
