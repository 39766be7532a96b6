package ledger

import (
	"context"
	"time"

	"github.com/google/uuid"
)

// Reader is a registered card reader (a kiosk or a support desk) of a
// tenant: it may keep an agent connection and receive sessions addressed
// to it (docs/PROTOCOL.md, agent mode).
type Reader struct {
	Tenant string
	// ID names the reader within its tenant (1..64 of a-z A-Z 0-9 . _ -).
	ID string
	// DESFireReaderID is the 16-byte reader ID sessions on this reader
	// write with CommitReaderID (nil: the server's configured default).
	DESFireReaderID []byte
	// Location is free text for people (at most 200 bytes).
	Location string
	// SecretHash is the SHA-256 of the agent credential; the credential
	// itself is never stored.
	SecretHash []byte
	CreatedAt  time.Time
	// AgentSeenAt is when the reader's agent connection last renewed its
	// presence (zero: never or disconnected).
	AgentSeenAt time.Time
}

// Online reports whether the reader's agent presence is fresher than ttl.
func (r Reader) Online(now time.Time, ttl time.Duration) bool {
	return !r.AgentSeenAt.IsZero() && now.Sub(r.AgentSeenAt) < ttl
}

// MaxReaderIDLen bounds a reader id; MaxLocationLen a location.
const (
	MaxReaderIDLen = 64
	MaxLocationLen = 200
)

// ValidateReaderID checks a reader id: 1..64 of a-z A-Z 0-9 . _ -.
func ValidateReaderID(id string) error {
	if id == "" || len(id) > MaxReaderIDLen {
		return invalid("reader_id", "must be 1 to %d characters", MaxReaderIDLen)
	}
	for _, c := range []byte(id) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
		if !ok {
			return invalid("reader_id", "only letters, digits, '.', '_' and '-' are allowed")
		}
	}
	return nil
}

// Validate checks a reader before it is stored.
func (r Reader) Validate() error {
	if err := ValidateTenant(r.Tenant); err != nil {
		return err
	}
	if err := ValidateReaderID(r.ID); err != nil {
		return err
	}
	if r.DESFireReaderID != nil && len(r.DESFireReaderID) != 16 {
		return invalid("desfire_reader_id", "must be 16 bytes")
	}
	if len(r.Location) > MaxLocationLen || !printable(r.Location) {
		return invalid("location", "must be at most %d bytes of printable UTF-8", MaxLocationLen)
	}
	if len(r.SecretHash) != 32 {
		return invalid("secret_hash", "must be a SHA-256 digest")
	}
	return nil
}

// ReaderStore keeps registered readers and the sessions addressed to them.
// Both SQL ledgers implement it (a ledger.Ledger that does not serves no
// registered readers).
type ReaderStore interface {
	// CreateReader stores a new reader; ErrReaderExists if the tenant
	// already has one with that id.
	CreateReader(ctx context.Context, r Reader) (Reader, error)
	// GetReader returns tenant's reader or ErrNotFound.
	GetReader(ctx context.Context, tenant, id string) (Reader, error)
	// ListReaders returns tenant's readers ordered by id.
	ListReaders(ctx context.Context, tenant string) ([]Reader, error)
	// DeleteReader removes tenant's reader (ErrNotFound if there is none);
	// sessions still waiting for it are never claimed.
	DeleteReader(ctx context.Context, tenant, id string) error
	// ReaderBySecret returns the reader whose agent credential has this
	// SHA-256, or ErrNotFound.
	ReaderBySecret(ctx context.Context, secretHash []byte) (Reader, error)
	// TouchAgent renews the presence lease of the agent connection conn
	// (a random id per connection) at now.
	TouchAgent(ctx context.Context, tenant, id, conn string, now time.Time) error
	// DropAgent ends the presence of connection conn, unless a newer
	// connection of the same reader renewed it since.
	DropAgent(ctx context.Context, tenant, id, conn string) error
	// AddressSession queues an open session for the reader until expires.
	AddressSession(ctx context.Context, tenant, reader string, sessionID uuid.UUID, now, expires time.Time) error
	// ClaimSession takes the oldest unclaimed, unexpired session addressed
	// to the reader, once across all nodes (ok=false when there is none).
	ClaimSession(ctx context.Context, tenant, reader string, now time.Time) (id uuid.UUID, ok bool, err error)
}
