package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
)

// Stable error codes of the operator API.
const (
	codeInvalid             = "invalid_request"
	codeUnauthorized        = "unauthorized"
	codeNotFound            = "not_found"
	codeMethod              = "method_not_allowed"
	codeIdempotency         = "idempotency_conflict"
	codeNotPayable          = "not_payable"
	codeTooLarge            = "payload_too_large"
	codeMediaType           = "unsupported_media_type"
	codeUnavailable         = "unavailable"
	codeInternal            = "internal"
	codeCurrencyMismatch    = "currency_mismatch"
	codeAmountLimit         = "amount_limit"
	codeSubprotocolRequired = "subprotocol_required"
	codeNotResolvable       = "not_resolvable"
)

// maxBody bounds operator request bodies.
const maxBody = 8 << 10

type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	var b errorBody
	b.Error.Code, b.Error.Message = code, msg
	writeJSON(w, status, b)
}

// errBody is a request body problem with its HTTP answer.
type errBody struct {
	status int
	code   string
	msg    string
}

func (e *errBody) Error() string { return e.msg }

// decodeBody reads a JSON object of at most maxBody bytes into v, refusing
// other content types, unknown fields and trailing data.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return &errBody{http.StatusUnsupportedMediaType, codeMediaType, "Content-Type must be application/json"}
		}
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return &errBody{http.StatusRequestEntityTooLarge, codeTooLarge, fmt.Sprintf("body larger than %d bytes", maxBody)}
		}
		if errors.Is(err, io.EOF) {
			return &errBody{http.StatusBadRequest, codeInvalid, "empty body"}
		}
		return &errBody{http.StatusBadRequest, codeInvalid, "malformed JSON: " + sanitize(err.Error())}
	}
	if dec.More() {
		return &errBody{http.StatusBadRequest, codeInvalid, "trailing data after the JSON object"}
	}
	return nil
}

func sanitize(s string) string {
	if len(s) > 200 {
		s = s[:200]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 {
			return ' '
		}
		return r
	}, s)
}

// bearer returns the token of an Authorization: Bearer header.
func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}
