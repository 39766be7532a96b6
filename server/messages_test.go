package server

import (
	"testing"

	"github.com/desfire-relay/relay/transaction"
)

// TestUserWording: every session code a bridge can receive has its own
// words (internal alone gets the generic text), and every prompt the
// domain raises is worded.
func TestUserWording(t *testing.T) {
	generic := userMessage(transaction.CodeInternal)
	seen := map[string]string{}
	for _, c := range []string{transaction.CodeCardBusy, transaction.CodeCardMismatch, transaction.CodeCardUnknown,
		transaction.CodeCardError, transaction.CodeLimitExceeded, transaction.CodeIntegrity, transaction.CodeTagLost,
		transaction.CodeTimeout, transaction.CodeCancelled, transaction.CodeNotPayable, transaction.CodeCardBlocked} {
		m := userMessage(c)
		if m == "" || m == generic {
			t.Errorf("code %s has no words of its own", c)
		}
		if other, dup := seen[m]; dup {
			t.Errorf("codes %s and %s share %q", c, other, m)
		}
		seen[m] = c
	}
	for _, p := range []transaction.Prompt{transaction.PromptHold, transaction.PromptTapAgain, transaction.PromptDone} {
		if promptText(p) == "" {
			t.Errorf("prompt %d is not worded", p)
		}
	}
	if promptText(0) != "" {
		t.Error("an unknown prompt is worded")
	}
}
