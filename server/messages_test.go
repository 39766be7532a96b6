package server

import (
	"os"
	"regexp"
	"testing"

	"github.com/desfire-relay/relay/transaction"
	"github.com/desfire-relay/relay/transaction/provision"
)

// TestUserWording: every session code a bridge can receive has its own
// words (internal alone gets the generic text), and every prompt the
// domain raises is worded.
func TestUserWording(t *testing.T) {
	generic := userMessage(codeInternal)
	seen := map[string]string{}
	for _, c := range []string{codeCardBusy, codeCardMismatch, codeCardUnknown,
		codeCardError, codeLimitExceeded, codeIntegrity, codeTagLost,
		codeTimeout, codeCancelled, codeNotPayable, codeCardBlocked} {
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

// TestReasonCodes: every reason the domain records maps to a contract
// code of its own, and the code is the one the contract already used
// (docs/PROTOCOL.md, and ../shared/PROTOCOL.md when present), so moving
// the vocabulary out of the domain changed no code on the wire.
func TestReasonCodes(t *testing.T) {
	reasons := append(transaction.Reasons(), provision.Reasons()...)
	if len(reasonCodes) != len(reasons) {
		t.Errorf("%d reasons, %d mapped", len(reasons), len(reasonCodes))
	}
	docs := documentedCodes(t, "../docs/PROTOCOL.md")
	shared := documentedCodes(t, "../../shared/PROTOCOL.md")
	byCode := map[string]transaction.Reason{}
	for _, r := range reasons {
		c, ok := reasonCodes[r]
		if !ok {
			t.Errorf("reason %q has no contract code", r)
			continue
		}
		if other, dup := byCode[c]; dup {
			t.Errorf("reasons %q and %q share code %s", r, other, c)
		}
		byCode[c] = r
		// The stored reason and the wire code were one string before;
		// stored rows keep reading as the codes clients know.
		if c != string(r) {
			t.Errorf("reason %q goes out as %q: the wire code changed", r, c)
		}
		if !docs[c] {
			t.Errorf("code %q is not in docs/PROTOCOL.md", c)
		}
	}
	// The codes of the shared contract's result.error list are all still
	// produced.
	for c := range shared {
		if _, ok := byCode[c]; !ok && resultCodes[c] {
			t.Errorf("shared contract code %q is no longer produced", c)
		}
	}
	if wireCode("") != "" || wireCode("from_a_newer_release") != codeInternal {
		t.Error("wireCode: empty or unknown reason")
	}
}

// resultCodes are the codes of the shared contract's result.error list.
var resultCodes = map[string]bool{codeCardBusy: true, codeCardMismatch: true, codeCardUnknown: true, codeCardError: true,
	codeLimitExceeded: true, codeIntegrity: true, codeTagLost: true, codeTimeout: true, codeCancelled: true,
	codeNotPayable: true, codeInternal: true}

// documentedCodes is the set of back-quoted words of a protocol document
// (empty when the document is absent, as ../shared is in a plain clone).
func documentedCodes(t *testing.T, path string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	set := map[string]bool{}
	for _, m := range regexp.MustCompile("`([a-z_0-9]+)`").FindAllSubmatch(b, -1) {
		set[string(m[1])] = true
	}
	return set
}
