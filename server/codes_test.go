package server

import (
	"strings"
	"testing"
)

// TestErrorCodesDocumented keeps every stable error code in the OpenAPI
// document.
func TestErrorCodesDocumented(t *testing.T) {
	codes := []string{codeInvalid, codeUnauthorized, codeNotFound, codeMethod, codeIdempotency, codeNotPayable,
		codeTooLarge, codeMediaType, codeUnavailable, codeInternal, codeCurrencyMismatch, codeAmountLimit,
		codeSubprotocolRequired, codeNotResolvable, codeRateLimited, codeDuplicateKey, codeInvalidUTF8,
		codeUpgradeRequired, codeTokenInQuery, codeBodyTimeout, codeWebhooksDisabled, codeNotReversible}
	doc := string(openAPI)
	for _, c := range codes {
		if c == codeMethod {
			continue // answered by net/http's mux, not by a handler
		}
		if !strings.Contains(doc, c) {
			t.Errorf("error code %q is not in server/api/openapi.yaml", c)
		}
	}
	for _, status := range []string{"'408'", "'426'", "'429'"} {
		if !strings.Contains(doc, status) {
			t.Errorf("status %s is not in server/api/openapi.yaml", status)
		}
	}
}
