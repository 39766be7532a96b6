package server

import "github.com/desfire-relay/relay/transaction"

// userMessage is the text a bridge shows its user for a session result
// code: the contract's words, kept out of the domain.
func userMessage(code string) string {
	switch code {
	case transaction.CodeCardBusy:
		return "This card is being used in another session. Try again in a moment."
	case transaction.CodeCardMismatch:
		return "This top-up belongs to a different card."
	case transaction.CodeCardUnknown:
		return "This card is not recognised."
	case transaction.CodeCardError:
		return "The card refused the operation."
	case transaction.CodeLimitExceeded:
		return "The card's balance would go beyond its limits."
	case transaction.CodeIntegrity:
		return "The card's answer could not be verified. Tap the card again."
	case transaction.CodeTagLost:
		return "The card was removed too early. Tap the card again to finish."
	case transaction.CodeTimeout:
		return "The connection was too slow. Tap the card again."
	case transaction.CodeCancelled:
		return "Cancelled."
	case transaction.CodeNotPayable:
		return "This top-up cannot be applied any more."
	case transaction.CodeCardBlocked:
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
