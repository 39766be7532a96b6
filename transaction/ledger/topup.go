package ledger

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Limits on operator input. They bound what a caller can make the ledger
// store and keep amounts within what a card can hold.
const (
	// MaxAmount is the largest credit: DESFire's Credit command takes a
	// signed 32-bit value, so nothing larger can ever reach a card.
	MaxAmount = 1<<31 - 1
	// MaxReferenceLen bounds the operator's reference, in bytes.
	MaxReferenceLen = 128
	// MaxIdempotencyKeyLen bounds the Idempotency-Key header, in bytes.
	MaxIdempotencyKeyLen = 255
	// MaxErrorCodeLen bounds an attempt's error code, in bytes.
	MaxErrorCodeLen = 64
	// LogRefLen is the size of the reference written into the card's
	// top-up log record.
	LogRefLen = 8
	// TMVLen is the size of a DESFire EV2 Transaction MAC value.
	TMVLen = 8
	// MaxSchemeLen bounds the card profile name a request may give.
	MaxSchemeLen = 64
	// ReaderIDLen is the size of a Transaction MAC Reader ID.
	ReaderIDLen = 16
	// TokenHashLen is the size of a stored bridge token digest (SHA-256).
	TokenHashLen = sha256.Size
)

// Request is what an operator asks for in POST /v1/topups. Its canonical
// form is hashed so a replay with the same Idempotency-Key can be told
// apart from a different request reusing the key.
type Request struct {
	// Amount in minor units; 1..MaxAmount.
	Amount int64
	// Currency is an ISO 4217 code: three upper-case letters.
	Currency string
	// CardUID optionally binds the top-up to one card (hex, any case).
	CardUID string
	// Reference is the operator's own reference, up to MaxReferenceLen bytes.
	Reference string
	// Scheme optionally names the card profile the top-up is for; a
	// session then serves only a card of that profile (the transaction
	// layer checks the name against its fleet). Part of Hash when set.
	Scheme string
	// Tenant owns the top-up (empty: DefaultTenant). Idempotency keys are
	// unique per tenant, and only the owning tenant sees the top-up. It is
	// not part of Hash: a key never names two tenants' requests.
	Tenant string
}

// Normalize validates r and returns its canonical form (card UID in
// upper-case hex). It fails with a *ValidationError.
func (r Request) Normalize() (Request, error) {
	if r.Amount <= 0 {
		return Request{}, invalid("amount", "must be positive, got %d", r.Amount)
	}
	if r.Amount > MaxAmount {
		return Request{}, invalid("amount", "must be at most %d, got %d", MaxAmount, r.Amount)
	}
	if err := ValidateCurrency(r.Currency); err != nil {
		return Request{}, err
	}
	if r.Tenant == "" {
		r.Tenant = DefaultTenant
	}
	if err := ValidateTenant(r.Tenant); err != nil {
		return Request{}, err
	}
	if r.CardUID != "" {
		uid, err := NormalizeCardUID(r.CardUID)
		if err != nil {
			return Request{}, err
		}
		r.CardUID = uid
	}
	if len(r.Scheme) > MaxSchemeLen || !printable(r.Scheme) {
		return Request{}, invalid("profile", "must be printable and at most %d bytes", MaxSchemeLen)
	}
	if len(r.Reference) > MaxReferenceLen {
		return Request{}, invalid("reference", "longer than %d bytes", MaxReferenceLen)
	}
	if !printable(r.Reference) {
		return Request{}, invalid("reference", "must be printable UTF-8")
	}
	return r, nil
}

// Hash is the SHA-256 of the canonical request. Call it on a normalised
// request so equivalent spellings of a card UID hash alike.
func (r Request) Hash() []byte {
	// Length-prefixed fields under a versioned label: one encoding per
	// request, and no separator inside the reference can shift a field.
	h := sha256.New()
	var buf [8]byte
	field := func(b []byte) {
		binary.BigEndian.PutUint64(buf[:], uint64(len(b)))
		h.Write(buf[:])
		h.Write(b)
	}
	field([]byte("desfire-relay topup request v1"))
	var amount [8]byte
	binary.BigEndian.PutUint64(amount[:], uint64(r.Amount))
	field(amount[:])
	field([]byte(r.Currency))
	field([]byte(r.CardUID))
	field([]byte(r.Reference))
	if r.Scheme != "" {
		// Only when set, so requests without one keep their hash.
		field([]byte(r.Scheme))
	}
	return h.Sum(nil)
}

// ValidateCurrency accepts an ISO 4217 alphabetic code (three upper-case
// ASCII letters). It does not check the code is currently assigned.
func ValidateCurrency(c string) error {
	if len(c) != 3 {
		return invalid("currency", "must be 3 upper-case letters, got %q", c)
	}
	for i := 0; i < 3; i++ {
		if c[i] < 'A' || c[i] > 'Z' {
			return invalid("currency", "must be 3 upper-case letters, got %q", c)
		}
	}
	return nil
}

// NormalizeCardUID checks a card UID as a bridge or operator spells it
// (hex, either case, 4, 7 or 10 bytes as ISO/IEC 14443-3 allows) and
// returns it in upper-case hex, the form the ledger stores and compares.
func NormalizeCardUID(uid string) (string, error) {
	b, err := hex.DecodeString(uid)
	if err != nil {
		return "", invalid("card_uid", "not hex")
	}
	switch len(b) {
	case 4, 7, 10:
	default:
		return "", invalid("card_uid", "must be 4, 7 or 10 bytes, got %d", len(b))
	}
	return strings.ToUpper(hex.EncodeToString(b)), nil
}

// ValidateIdempotencyKey accepts 1..MaxIdempotencyKeyLen printable ASCII
// characters, which covers UUIDs and the usual client-generated keys.
func ValidateIdempotencyKey(key string) error {
	if key == "" {
		return invalid("idempotency_key", "missing")
	}
	if len(key) > MaxIdempotencyKeyLen {
		return invalid("idempotency_key", "longer than %d bytes", MaxIdempotencyKeyLen)
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x20 || key[i] > 0x7e {
			return invalid("idempotency_key", "must be printable ASCII")
		}
	}
	return nil
}

// CodeTokenReplaced ends a session whose bridge token a newer one for the
// same top-up replaced.
const CodeTokenReplaced = "token_replaced"

// DefaultTenant owns every object created without a tenant: the embedded
// single-tenant setup and rows written before tenants existed.
const DefaultTenant = "default"

// MaxTenantLen bounds a tenant name.
const MaxTenantLen = 64

// ValidateTenant checks a tenant name: 1..MaxTenantLen bytes of a-z, 0-9,
// '.', '_' or '-'. The alphabet keeps names safe in logs and keys.
func ValidateTenant(t string) error {
	if t == "" || len(t) > MaxTenantLen {
		return invalid("tenant", "must be 1..%d bytes", MaxTenantLen)
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '.' && c != '_' && c != '-' {
			return invalid("tenant", "only a-z, 0-9, '.', '_' and '-'")
		}
	}
	return nil
}

func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// LogRef is what a top-up writes into the card's top-up log record: the
// first LogRefLen bytes of SHA-256 over a label and the top-up ID. Finding
// it in the card's log proves the credit reached the card; it is derived,
// not random, so recovery can recompute it from the ID alone.
func LogRef(id uuid.UUID) []byte {
	h := sha256.New()
	h.Write([]byte("desfire-relay topup logref v1\x00"))
	h.Write(id[:])
	return h.Sum(nil)[:LogRefLen]
}

// TopUp is one credit to put on one card, and everything proven about it.
type TopUp struct {
	ID             uuid.UUID
	IdempotencyKey string
	// RequestHash is Request.Hash of the normalised request.
	RequestHash []byte
	Amount      int64
	Currency    string
	// CardUID is upper-case hex; empty until bound at creation or by the
	// first session, and fixed afterwards.
	CardUID   string
	Reference string
	// Tenant owns the top-up.
	Tenant string
	Status Status
	// BalanceBefore and BalanceAfter are the card's value file balance
	// around the credit, once a session has read them.
	BalanceBefore *int64
	BalanceAfter  *int64
	// TMC and TMV are the Transaction MAC counter and value that proved the
	// commit, when it was proven that way.
	TMC *uint32
	TMV []byte
	// LogRef is LogRef(ID), stored so it can be searched.
	LogRef []byte
	// Attempts counts the sessions that worked on this top-up.
	Attempts int
	// Fence is the last fencing token that changed this top-up (0: none).
	Fence     int64
	CreatedAt time.Time
	UpdatedAt time.Time
	// ExpiresAt is when a pending top-up stops being startable.
	ExpiresAt time.Time
	// AppliedAt is set when the status becomes applied.
	AppliedAt *time.Time
	// Resolution is "manual" when an operator decided the outcome (see
	// Ledger.Resolve), empty otherwise. ResolutionChecked: a later
	// authenticated read of the card's log was compared with it; Conflict
	// says what that read proved when it disagreed.
	Resolution        string
	ResolutionChecked bool
	Conflict          string
	// Profile is the card profile the last session that worked on the
	// top-up used (detected from the card in a mixed fleet).
	Profile string
	// ReaderID is the 16-byte Transaction MAC Reader ID the commit sent
	// with CommitReaderID; PrevReaderID the one the card held before
	// (the reader of its previous Transaction MAC transaction). Both are
	// covered by the verified Transaction MAC; nil when the card's
	// Transaction MAC file did not require CommitReaderID.
	ReaderID, PrevReaderID []byte
	// Scheme is the card profile the request named ("": any the fleet
	// detects).
	Scheme string
	// Kind is TopUpCredit, or TopUpReversal for an entry that debits
	// Reverses' amount back from its card.
	Kind     TopUpKind
	Reverses uuid.UUID
}

// TopUpKind says whether an entry adds value to a card or takes an applied
// credit back.
type TopUpKind string

// Entry kinds.
const (
	TopUpCredit   TopUpKind = "credit"
	TopUpReversal TopUpKind = "reversal"
)

// Attempt is one session's work on one top-up; the rows of a top-up are
// its audit trail across bridges and retries.
type Attempt struct {
	ID        uuid.UUID
	TopUpID   uuid.UUID
	SessionID uuid.UUID
	CardUID   string
	// Fence is the last fencing token this session used on the top-up.
	Fence     int64
	StartedAt time.Time
	// EndedAt is nil while the session leaves the top-up in_progress.
	EndedAt *time.Time
	// Outcome is the status this session left the top-up in.
	Outcome   Status
	ErrorCode string
	// Profile is the card profile the session used.
	Profile string
}

// Session is one bridge connection's purpose: a top-up or a balance lookup.
type Session struct {
	ID   uuid.UUID
	Kind SessionKind
	// TopUpID is set for KindTopUp.
	TopUpID uuid.UUID
	// Tenant owns the session (a top-up session: its top-up's tenant).
	Tenant    string
	Status    SessionStatus
	Outcome   SessionOutcome
	CreatedAt time.Time
	EndedAt   *time.Time
}

// SessionOutcome is what a finished session found, for GET /v1/sessions/{id}.
// It is stored as JSON; Records is kept verbatim because its shape belongs
// to the card scripts, not the ledger.
type SessionOutcome struct {
	// OK is result.ok: it decides between SessionOK and SessionFailed.
	OK        bool            `json:"ok"`
	CardUID   string          `json:"card_uid,omitempty"`
	Balance   *int64          `json:"balance,omitempty"`
	Records   json.RawMessage `json:"records,omitempty"`
	ErrorCode string          `json:"error_code,omitempty"`
}
