package transaction

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/desfire-relay/relay/transaction/ledger"
)

// Errors of registered readers and agent mode.
var (
	// ErrReaderOffline: the reader has no live agent connection.
	ErrReaderOffline = errors.New("transaction: reader is offline")
	// ErrNoReaders: the ledger does not implement ledger.ReaderStore.
	ErrNoReaders = errors.New("transaction: this ledger has no registered readers")
	// ErrAgentCredential: the agent credential is missing or unknown.
	ErrAgentCredential = errors.New("transaction: agent credential refused")
)

// AgentPresenceTTL is how long an agent connection's presence lease lasts;
// the connection's node renews it every AgentHeartbeat. A reader whose
// lease ran out is offline (its node died or lost the database).
const (
	AgentPresenceTTL = 15 * time.Second
	AgentHeartbeat   = 5 * time.Second
)

// AgentCredentialPrefix starts every agent credential, so that one found
// in a log or a file is recognisable.
const AgentCredentialPrefix = "dra_"

// NewReader is an operator's registration of a reader.
type NewReader struct {
	ID              string
	DESFireReaderID []byte // nil or 16 bytes
	Location        string
}

func (s *Service) readers() (ledger.ReaderStore, error) {
	rs, ok := s.cfg.Ledger.(ledger.ReaderStore)
	if !ok {
		return nil, ErrNoReaders
	}
	return rs, nil
}

// RegisterReader registers tenant's reader and returns it with its agent
// credential, which is shown once and stored only as its SHA-256.
func (s *Service) RegisterReader(ctx context.Context, tenant string, n NewReader) (ledger.Reader, string, error) {
	rs, err := s.readers()
	if err != nil {
		return ledger.Reader{}, "", err
	}
	raw := make([]byte, 32)
	if _, err := io.ReadFull(s.cfg.Rand, raw); err != nil {
		return ledger.Reader{}, "", fmt.Errorf("credential randomness: %w", err)
	}
	cred := AgentCredentialPrefix + base64.RawURLEncoding.EncodeToString(raw)
	clear(raw)
	r, err := rs.CreateReader(ctx, ledger.Reader{Tenant: tenant, ID: n.ID, DESFireReaderID: n.DESFireReaderID,
		Location: n.Location, SecretHash: hashToken(cred), CreatedAt: s.cfg.Now()})
	if err != nil {
		return ledger.Reader{}, "", err
	}
	return r, cred, nil
}

// Readers lists tenant's readers.
func (s *Service) Readers(ctx context.Context, tenant string) ([]ledger.Reader, error) {
	rs, err := s.readers()
	if err != nil {
		return nil, err
	}
	return rs.ListReaders(ctx, tenant)
}

// Reader returns tenant's reader.
func (s *Service) Reader(ctx context.Context, tenant, id string) (ledger.Reader, error) {
	rs, err := s.readers()
	if err != nil {
		return ledger.Reader{}, err
	}
	if err := ledger.ValidateReaderID(id); err != nil {
		return ledger.Reader{}, err
	}
	return rs.GetReader(ctx, tenant, id)
}

// DeleteReader removes tenant's reader; its agent credential stops
// working and sessions still addressed to it are never run.
func (s *Service) DeleteReader(ctx context.Context, tenant, id string) error {
	rs, err := s.readers()
	if err != nil {
		return err
	}
	if err := ledger.ValidateReaderID(id); err != nil {
		return err
	}
	return rs.DeleteReader(ctx, tenant, id)
}

// ReaderOnline reports whether r's agent presence lease is fresh.
func (s *Service) ReaderOnline(r ledger.Reader) bool {
	return r.Online(s.cfg.Now(), AgentPresenceTTL)
}

// AuthenticateAgent returns the reader an agent credential belongs to.
// Every refusal wraps ErrAgentCredential.
func (s *Service) AuthenticateAgent(ctx context.Context, credential string) (ledger.Reader, error) {
	rs, err := s.readers()
	if err != nil {
		return ledger.Reader{}, err
	}
	if !strings.HasPrefix(credential, AgentCredentialPrefix) || len(credential) > 128 {
		return ledger.Reader{}, fmt.Errorf("malformed agent credential: %w", ErrAgentCredential)
	}
	r, err := rs.ReaderBySecret(ctx, hashToken(credential))
	if errors.Is(err, ledger.ErrNotFound) {
		return ledger.Reader{}, fmt.Errorf("unknown agent credential: %w", ErrAgentCredential)
	}
	return r, err
}

// AgentAlive renews the presence lease of r's agent connection conn.
func (s *Service) AgentAlive(ctx context.Context, r ledger.Reader, conn string) error {
	rs, err := s.readers()
	if err != nil {
		return err
	}
	return rs.TouchAgent(ctx, r.Tenant, r.ID, conn, s.cfg.Now())
}

// AgentGone ends the presence of r's agent connection conn.
func (s *Service) AgentGone(ctx context.Context, r ledger.Reader, conn string) error {
	rs, err := s.readers()
	if err != nil {
		return err
	}
	return rs.DropAgent(ctx, r.Tenant, r.ID, conn)
}

// ReaderBalanceSession opens a balance lookup session of tenant addressed
// to the registered reader: no bridge token exists for it; the node
// holding the reader's agent connection claims it from the ledger. A
// reader without a live agent is ErrReaderOffline, and nothing is created.
func (s *Service) ReaderBalanceSession(ctx context.Context, tenant, reader string) (ledger.Session, error) {
	return s.addressed(ctx, tenant, reader, ledger.KindBalance, uuid.Nil)
}

// ReaderTopUpSession opens a session for tenant's top-up (a credit or a
// reversal) addressed to the registered reader, under the rules of a new
// bridge token (TenantTopUpTicket): the top-up must be payable, a failed
// one returns to pending, and the top-up's unused bridge tokens retire.
func (s *Service) ReaderTopUpSession(ctx context.Context, tenant, reader string, topUpID uuid.UUID) (ledger.Session, error) {
	return s.addressed(ctx, tenant, reader, ledger.KindTopUp, topUpID)
}

// CreateReaderTopUp creates (or, for a replayed idempotency key, returns)
// a top-up of req.Tenant and addresses its session to the tenant's
// registered reader, so that no bridge token exists for it. The request
// and the reader are checked before anything is written: an unknown
// reader is ledger.ErrNotFound and one without a live agent
// ErrReaderOffline. (Should the reader go offline between the check and
// the dispatch, the top-up stays pending and the error says so.) A
// replay dispatches a new session only while the top-up is still pending
// (the first answer may have been lost before its dispatch; a session of
// a top-up that another session meanwhile applied ends not_payable and
// touches no value); otherwise sess is zero.
func (s *Service) CreateReaderTopUp(ctx context.Context, idempotencyKey string, req ledger.Request, reader string) (t ledger.TopUp, sess ledger.Session, created bool, err error) {
	norm, err := s.checkRequest(ctx, idempotencyKey, req)
	if err != nil {
		return ledger.TopUp{}, ledger.Session{}, false, err
	}
	r, err := s.Reader(ctx, norm.Tenant, reader)
	if err != nil {
		return ledger.TopUp{}, ledger.Session{}, false, err
	}
	if !s.ReaderOnline(r) {
		return ledger.TopUp{}, ledger.Session{}, false, fmt.Errorf("reader %s: %w", reader, ErrReaderOffline)
	}
	t, created, err = s.cfg.Ledger.CreateTopUp(ctx, norm, idempotencyKey, s.cfg.Now())
	if err != nil || (!created && t.Status != ledger.StatusPending) {
		return t, ledger.Session{}, created, err
	}
	sess, err = s.addressed(ctx, t.Tenant, reader, ledger.KindTopUp, t.ID)
	if err != nil {
		return t, ledger.Session{}, created, fmt.Errorf("dispatch top-up %s to reader %s: %w", t.ID, reader, err)
	}
	return t, sess, created, nil
}

func (s *Service) addressed(ctx context.Context, tenant, reader string, kind ledger.SessionKind, topUpID uuid.UUID) (ledger.Session, error) {
	rs, err := s.readers()
	if err != nil {
		return ledger.Session{}, err
	}
	r, err := s.Reader(ctx, tenant, reader)
	if err != nil {
		return ledger.Session{}, err
	}
	if !s.ReaderOnline(r) {
		return ledger.Session{}, fmt.Errorf("reader %s: %w", reader, ErrReaderOffline)
	}
	if kind == ledger.KindTopUp {
		if err := s.readyForSession(ctx, tenant, topUpID); err != nil {
			return ledger.Session{}, err
		}
	}
	now := s.cfg.Now()
	sess, err := s.cfg.Ledger.CreateTenantSession(ctx, tenant, kind, topUpID, now)
	if err != nil {
		return ledger.Session{}, err
	}
	if err := rs.AddressSession(ctx, tenant, reader, sess.ID, now, now.Add(s.cfg.TokenTTL)); err != nil {
		s.Abandon(ctx, sess, ReasonInternal)
		return ledger.Session{}, err
	}
	if kind == ledger.KindTopUp {
		if _, err := s.cfg.Ledger.RevokeTokens(ctx, topUpID, sess.ID, now); err != nil {
			return ledger.Session{}, fmt.Errorf("revoke earlier tokens: %w", err)
		}
	}
	return sess, nil
}

// ClaimReaderSession takes the next session addressed to r that is still
// open (ok=false when there is none). Sessions that ended meanwhile are
// skipped.
func (s *Service) ClaimReaderSession(ctx context.Context, r ledger.Reader) (ledger.Session, bool, error) {
	rs, err := s.readers()
	if err != nil {
		return ledger.Session{}, false, err
	}
	for {
		id, ok, err := rs.ClaimSession(ctx, r.Tenant, r.ID, s.cfg.Now())
		if err != nil || !ok {
			return ledger.Session{}, false, err
		}
		sess, err := s.cfg.Ledger.GetSession(ctx, id)
		if err != nil {
			return ledger.Session{}, false, err
		}
		if sess.Status == ledger.SessionOpen {
			return sess, true, nil
		}
	}
}
