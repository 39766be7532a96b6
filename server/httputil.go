package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"unicode/utf8"
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
	codeRateLimited         = "rate_limited"
	codeDuplicateKey        = "duplicate_key"
	codeInvalidUTF8         = "invalid_utf8"
	codeUpgradeRequired     = "upgrade_required"
	codeTokenInQuery        = "token_in_query"
	codeBodyTimeout         = "body_timeout"
	codeReaderOffline       = "reader_offline"
	codeReaderExists        = "reader_exists"
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
// other content types, invalid UTF-8, duplicate object keys (which the
// standard decoder would resolve silently, last one winning), unknown
// fields and trailing data.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return &errBody{http.StatusUnsupportedMediaType, codeMediaType, "Content-Type must be application/json"}
		}
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		var ne net.Error
		switch {
		case errors.As(err, &mbe):
			return &errBody{http.StatusRequestEntityTooLarge, codeTooLarge, fmt.Sprintf("body larger than %d bytes", maxBody)}
		case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
			return &errBody{http.StatusRequestTimeout, codeBodyTimeout, "request body not received in time"}
		}
		return &errBody{http.StatusBadRequest, codeInvalid, "unreadable body"}
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return &errBody{http.StatusBadRequest, codeInvalid, "empty body"}
	}
	if !utf8.Valid(raw) {
		return &errBody{http.StatusBadRequest, codeInvalidUTF8, "body is not valid UTF-8"}
	}
	if err := checkDuplicateKeys(raw); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return &errBody{http.StatusBadRequest, codeInvalid, jsonProblem(err)}
	}
	if dec.More() {
		return &errBody{http.StatusBadRequest, codeInvalid, "trailing data after the JSON object"}
	}
	return nil
}

// jsonProblem describes a decoding error in the API's terms: the field
// and the JSON type it needs, never the server's Go types.
func jsonProblem(err error) string {
	var (
		te *json.UnmarshalTypeError
		se *json.SyntaxError
	)
	switch {
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			return "the body must be a JSON object"
		}
		return "field " + strconv.Quote(sanitize(field)) + " must be " + jsonKind(te.Type.Kind().String()) + ", got a JSON " + sanitize(te.Value)
	case errors.As(err, &se):
		return fmt.Sprintf("malformed JSON at byte %d", se.Offset)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "malformed JSON: the body ends early"
	}
	msg := err.Error()
	if f, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		return "unknown field " + sanitize(f)
	}
	return "malformed JSON"
}

// jsonKind names the JSON value a Go kind is decoded from.
func jsonKind(k string) string {
	switch {
	case strings.HasPrefix(k, "int"), strings.HasPrefix(k, "uint"):
		return "an integer"
	case strings.HasPrefix(k, "float"):
		return "a number"
	case k == "string":
		return "a string"
	case k == "bool":
		return "true or false"
	case k == "slice", k == "array":
		return "an array"
	}
	return "an object"
}

// maxDepth bounds JSON nesting in checkDuplicateKeys.
const maxDepth = 32

// checkDuplicateKeys walks the JSON tokens of raw and refuses an object
// that names a key twice or gives a field as null (no field of the API
// is nullable, and a null would silently read as absent). Malformed JSON
// is left to the decoder.
func checkDuplicateKeys(raw []byte) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	type frame struct {
		keys   map[string]bool
		object bool
		expect bool // next token in an object is a key
		last   string
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil // io.EOF, or malformed: the decoder reports it
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.object && top.expect {
			if k, ok := tok.(string); ok {
				if top.keys[k] {
					return &errBody{http.StatusBadRequest, codeDuplicateKey, "duplicate key " + strconv.Quote(sanitize(k))}
				}
				top.keys[k] = true
				top.expect = false
				top.last = k
				continue
			}
		}
		if tok == nil && top != nil && top.object {
			// The document gives no field as nullable: omit it instead.
			return &errBody{http.StatusBadRequest, codeInvalid, "field " + strconv.Quote(sanitize(top.last)) + " is null: omit the field instead"}
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			if len(stack) >= maxDepth {
				return &errBody{http.StatusBadRequest, codeInvalid, "JSON nested too deeply"}
			}
			stack = append(stack, &frame{keys: map[string]bool{}, object: tok == json.Delim('{'), expect: tok == json.Delim('{')})
			continue
		case json.Delim('}'), json.Delim(']'):
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
		}
		// A value ended: in an object the next token is a key again.
		if len(stack) > 0 && stack[len(stack)-1].object {
			stack[len(stack)-1].expect = true
		}
	}
}

// publicError is an error's message for an API client: without the
// package prefixes of the layers it came through.
func publicError(err error) string {
	return sanitize(strings.NewReplacer("ledger: ", "", "transaction: ", "").Replace(err.Error()))
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
