package transaction

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/desfire-relay/relay/transaction/keys"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/lock"
	"github.com/desfire-relay/relay/transaction/profile"
)

// Errors of the operator operations.
var (
	// ErrNotPayable: the top-up is not pending, failed or in_doubt.
	ErrNotPayable = errors.New("transaction: top-up is not payable")
	// ErrCurrency: the request's currency is not the card profile's.
	ErrCurrency = errors.New("transaction: currency does not match the card profile")
	// ErrAmountLimit: the amount can never fit the value file's limits.
	ErrAmountLimit = errors.New("transaction: amount exceeds the card profile's limit")
	// ErrNotResolvable: only an in_doubt or in_progress top-up can be
	// resolved by an operator.
	ErrNotResolvable = errors.New("transaction: top-up is not unresolved")
	// ErrToken: the bridge token is missing, unknown, expired or used.
	ErrToken = errors.New("transaction: bridge token refused")
)

// Metrics receives the runner's measurements; the server implements it
// with Prometheus. A nil Metrics records nothing.
type Metrics interface {
	LockWait(d time.Duration)
	SessionOutcome(kind, code string)
	TopUpOutcome(status string)
	LedgerError()
	// IntegrityFailure counts a card proof the ledger refused (reason
	// "tmc_replay": a Transaction MAC counter not above the card's last).
	IntegrityFailure(reason string)
}

// Config assembles a Service.
type Config struct {
	Ledger   ledger.Ledger
	Locker   lock.Locker
	Keys     keys.Provider
	Profiles profile.Set
	// Profile is the name of the profile used for new sessions when Fleet
	// is empty.
	Profile string
	// Fleet names the profiles one server serves (a mixed EV1/EV2/EV3
	// fleet): each tap uses the one that serves the card, detected in the
	// first exchange; the first is the default guess. All must share one
	// currency. Empty: Profile alone.
	Fleet []string
	// TokenTTL is a bridge token's lifetime (default 15 min).
	TokenTTL time.Duration
	// TopUpTTL is how long a top-up stays payable after it is created or
	// reopened after a failure (default ledger.DefaultPendingTTL; relayd
	// passes its topup-ttl, the ledger's PendingTTL).
	TopUpTTL time.Duration
	// LockTTL is the card lock's lease (renewed while held).
	LockTTL time.Duration
	// LockWait is how long a session waits for a busy card (default 0:
	// card_busy at once).
	LockWait time.Duration
	// MaxRetaps bounds how often a session asks for the card again after
	// it left the field (bridges implementing Retapper only; default 3,
	// negative: never). The session deadline bounds the waiting.
	MaxRetaps int
	// DefaultReaderID is the 16-byte Transaction MAC Reader ID a top-up
	// commits (CommitReaderID) on cards that require one, when the session
	// names none (RunOptions.ReaderID): the reader ID of phones
	// (relayd -reader-id / RELAY_READER_ID). Zero is a valid ID.
	DefaultReaderID [16]byte
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Rand is the randomness for tokens and card challenges (default
	// crypto/rand).
	Rand io.Reader
	// Log receives one line per session outcome (default no-op).
	Log *zap.Logger
	// Metrics is optional.
	Metrics Metrics
}

// Service runs top-ups and balance lookups.
type Service struct {
	cfg     Config
	profile profile.Profile   // the fleet's first: currency and limits of new top-ups
	fleet   []profile.Profile // every profile served, detected per card
	seen    *guesses          // the profile each card last used, the first guess
	// readerIDs remembers the cards whose Transaction MAC file required
	// CommitReaderID although their profile does not say so.
	readerIDs *guesses
}

// New checks cfg and returns a Service.
func New(cfg Config) (*Service, error) {
	if cfg.Ledger == nil || cfg.Locker == nil || cfg.Keys == nil {
		return nil, errors.New("transaction: ledger, locker and keys are required")
	}
	if cfg.Profiles == nil {
		cfg.Profiles = profile.DefaultSet()
	}
	if cfg.Profile == "" {
		cfg.Profile = profile.AN12113().Name
	}
	fleet, err := loadFleet(cfg)
	if err != nil {
		return nil, err
	}
	if cfg.TopUpTTL <= 0 {
		cfg.TopUpTTL = ledger.DefaultPendingTTL
	}
	if cfg.TokenTTL <= 0 {
		cfg.TokenTTL = 15 * time.Minute
	}
	if cfg.MaxRetaps == 0 {
		cfg.MaxRetaps = 3
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	return &Service{cfg: cfg, profile: fleet[0], fleet: fleet, seen: newGuesses(guessesMax), readerIDs: newGuesses(guessesMax)}, nil
}

// loadFleet resolves and validates the profiles the service serves.
func loadFleet(cfg Config) ([]profile.Profile, error) {
	names := cfg.Fleet
	if len(names) == 0 {
		names = []string{cfg.Profile}
	}
	var fleet []profile.Profile
	seen := map[string]bool{}
	for _, n := range names {
		p, err := cfg.Profiles.Get(n)
		if err != nil {
			return nil, err
		}
		if err := p.Validate(); err != nil {
			return nil, err
		}
		switch {
		case seen[n]:
			return nil, fmt.Errorf("transaction: profile %q named twice in the fleet: %w", n, profile.ErrInvalid)
		case len(fleet) > 0 && p.Currency != fleet[0].Currency:
			return nil, fmt.Errorf("transaction: profile %q uses %s, the fleet %s: %w", n, p.Currency, fleet[0].Currency, profile.ErrInvalid)
		}
		seen[n] = true
		fleet = append(fleet, p)
	}
	return fleet, nil
}

// Now is the service's clock.
func (s *Service) Now() time.Time { return s.cfg.Now() }

// Profile returns the default card profile (the fleet's first).
func (s *Service) Profile() profile.Profile { return s.profile }

// Fleet returns the card profiles the service serves.
func (s *Service) Fleet() []profile.Profile { return append([]profile.Profile(nil), s.fleet...) }

// Ticket is what the operator hands to a bridge: a session and its token.
type Ticket struct {
	SessionID uuid.UUID
	Token     string
	ExpiresAt time.Time
}

// CreateTopUp creates (or, for a replayed idempotency key, returns) a
// top-up; while it is payable a fresh bridge ticket comes with it.
func (s *Service) CreateTopUp(ctx context.Context, idempotencyKey string, req ledger.Request) (ledger.TopUp, *Ticket, bool, error) {
	norm, err := s.checkRequest(ctx, idempotencyKey, req)
	if err != nil {
		return ledger.TopUp{}, nil, false, err
	}
	// A new top-up comes with its session and token in the same commit;
	// a replayed key gets a fresh ticket the ordinary way.
	now := s.cfg.Now()
	tok, hash, err := s.newToken()
	if err != nil {
		return ledger.TopUp{}, nil, false, err
	}
	exp := now.Add(s.cfg.TokenTTL)
	t, sess, created, err := s.cfg.Ledger.CreateTopUpSession(ctx, norm, idempotencyKey, hash, exp, now)
	if err != nil {
		return ledger.TopUp{}, nil, false, err
	}
	if created {
		return t, &Ticket{SessionID: sess.ID, Token: tok, ExpiresAt: exp}, true, nil
	}
	var tk *Ticket
	if t.Status == ledger.StatusPending {
		tk, err = s.ticket(ctx, t.Tenant, ledger.KindTopUp, t.ID)
		if err != nil {
			return ledger.TopUp{}, nil, false, err
		}
	}
	return t, tk, created, nil
}

// checkRequest validates a top-up request and its idempotency key and
// returns the normalised request.
func (s *Service) checkRequest(ctx context.Context, idempotencyKey string, req ledger.Request) (ledger.Request, error) {
	if err := ledger.ValidateIdempotencyKey(idempotencyKey); err != nil {
		return ledger.Request{}, err
	}
	norm, err := req.Normalize()
	if err != nil {
		return ledger.Request{}, err
	}
	max := s.maxAmount()
	if norm.Scheme != "" {
		p, err := s.scheme(norm.Scheme)
		if err != nil {
			return ledger.Request{}, err
		}
		max = p.MaxAmount()
	}
	if norm.Currency != s.profile.Currency {
		return ledger.Request{}, fmt.Errorf("%s, profile %s uses %s: %w", norm.Currency, s.profile.Name, s.profile.Currency, ErrCurrency)
	}
	if norm.Amount > max {
		return ledger.Request{}, fmt.Errorf("amount %d above %d: %w", norm.Amount, max, ErrAmountLimit)
	}
	if norm.CardUID != "" {
		if err := s.refuseBlocked(ctx, norm.Tenant, norm.CardUID); err != nil {
			return ledger.Request{}, err
		}
	}
	return norm, nil
}

// scheme returns the fleet's profile a top-up request names.
func (s *Service) scheme(name string) (*profile.Profile, error) {
	for i := range s.fleet {
		if s.fleet[i].Name == name {
			return &s.fleet[i], nil
		}
	}
	return nil, fmt.Errorf("profile %q is not one this server serves: %w", name, profile.ErrUnknownProfile)
}

// GetTopUp returns a top-up.
func (s *Service) GetTopUp(ctx context.Context, id uuid.UUID) (ledger.TopUp, error) {
	return s.cfg.Ledger.GetTopUp(ctx, id)
}

// TopUpTicket issues a fresh bridge ticket for a pending, in_doubt or
// failed top-up of the default tenant (a failed one returns to pending).
func (s *Service) TopUpTicket(ctx context.Context, id uuid.UUID) (*Ticket, error) {
	return s.TenantTopUpTicket(ctx, ledger.DefaultTenant, id)
}

// TenantTopUpTicket issues a fresh bridge ticket for tenant's top-up; the
// earlier unused tickets of the top-up stop working. Another tenant's
// top-up is ErrNotFound.
func (s *Service) TenantTopUpTicket(ctx context.Context, tenant string, id uuid.UUID) (*Ticket, error) {
	if err := s.readyForSession(ctx, tenant, id); err != nil {
		return nil, err
	}
	return s.ticket(ctx, tenant, ledger.KindTopUp, id)
}

// readyForSession checks that tenant's top-up may get a new session (a
// failed one returns to pending).
func (s *Service) readyForSession(ctx context.Context, tenant string, id uuid.UUID) error {
	t, err := s.TenantTopUp(ctx, tenant, id)
	if err != nil {
		return err
	}
	if t.Resolution != "" {
		return fmt.Errorf("top-up %s was resolved by an operator: %w", id, ErrNotPayable)
	}
	switch t.Status {
	case ledger.StatusPending, ledger.StatusInDoubt, ledger.StatusInProgress:
		// in_progress: a session may have died holding it; the new session
		// waits for the card lock and resolves it from the card.
	case ledger.StatusFailed:
		now := s.cfg.Now()
		if _, err := s.cfg.Ledger.Transition(ctx, ledger.Transition{TopUpID: id, From: ledger.StatusFailed, To: ledger.StatusPending, ExpiresAt: now.Add(s.cfg.TopUpTTL), Now: now}); err != nil {
			return err
		}
	default:
		return fmt.Errorf("top-up %s is %s: %w", id, t.Status, ErrNotPayable)
	}
	return nil
}

// BalanceTicket opens a read-only balance lookup session of the default
// tenant.
func (s *Service) BalanceTicket(ctx context.Context) (*Ticket, error) {
	return s.TenantBalanceTicket(ctx, ledger.DefaultTenant)
}

// TenantBalanceTicket opens a read-only balance lookup session of tenant.
func (s *Service) TenantBalanceTicket(ctx context.Context, tenant string) (*Ticket, error) {
	return s.ticket(ctx, tenant, ledger.KindBalance, uuid.Nil)
}

// GetSession returns a session and its outcome.
func (s *Service) GetSession(ctx context.Context, id uuid.UUID) (ledger.Session, error) {
	return s.cfg.Ledger.GetSession(ctx, id)
}

// CardTopUps returns a card's ledger history, newest first.
func (s *Service) CardTopUps(ctx context.Context, uid string) ([]ledger.TopUp, error) {
	norm, err := ledger.NormalizeCardUID(uid)
	if err != nil {
		return nil, err
	}
	return s.cfg.Ledger.ListTopUpsByCard(ctx, norm)
}

// OpenSession consumes a bridge token (once) and returns its session.
// Every refusal wraps ErrToken.
func (s *Service) OpenSession(ctx context.Context, token string) (ledger.Session, error) {
	if token == "" || len(token) > 128 {
		return ledger.Session{}, fmt.Errorf("missing or malformed token: %w", ErrToken)
	}
	sess, err := s.cfg.Ledger.ConsumeToken(ctx, hashToken(token), s.cfg.Now())
	switch {
	case errors.Is(err, ledger.ErrTokenUnknown), errors.Is(err, ledger.ErrTokenExpired),
		errors.Is(err, ledger.ErrTokenUsed), errors.Is(err, ledger.ErrSessionClosed):
		return ledger.Session{}, fmt.Errorf("%w: %w", err, ErrToken)
	case err != nil:
		return ledger.Session{}, err
	}
	return sess, nil
}

// Ping checks the ledger, for readiness.
func (s *Service) Ping(ctx context.Context) error { return s.cfg.Ledger.Ping(ctx) }

// ticket opens a session with a fresh token; for a top-up it then revokes
// the top-up's earlier unused tokens, so at most one token per top-up
// works at a time.
func (s *Service) ticket(ctx context.Context, tenant string, kind ledger.SessionKind, topUpID uuid.UUID) (*Ticket, error) {
	now := s.cfg.Now()
	sess, err := s.cfg.Ledger.CreateTenantSession(ctx, tenant, kind, topUpID, now)
	if err != nil {
		return nil, err
	}
	tok, hash, err := s.newToken()
	if err != nil {
		return nil, err
	}
	exp := now.Add(s.cfg.TokenTTL)
	if err := s.cfg.Ledger.IssueToken(ctx, sess.ID, hash, exp); err != nil {
		return nil, err
	}
	if kind == ledger.KindTopUp {
		if _, err := s.cfg.Ledger.RevokeTokens(ctx, topUpID, sess.ID, now); err != nil {
			return nil, fmt.Errorf("revoke earlier tokens: %w", err)
		}
	}
	return &Ticket{SessionID: sess.ID, Token: tok, ExpiresAt: exp}, nil
}

// newToken returns a fresh bridge token and its stored digest.
func (s *Service) newToken() (string, []byte, error) {
	raw := make([]byte, 32)
	if _, err := io.ReadFull(s.cfg.Rand, raw); err != nil {
		return "", nil, fmt.Errorf("token randomness: %w", err)
	}
	tok := base64.RawURLEncoding.EncodeToString(raw)
	clear(raw)
	return tok, hashToken(tok), nil
}

func hashToken(tok string) []byte {
	sum := sha256.Sum256([]byte(tok))
	return sum[:]
}

// Abandon records that a session ended before any card work (bad hello,
// silent bridge, failed upgrade) for the given reason.
func (s *Service) Abandon(ctx context.Context, sess ledger.Session, reason Reason) {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := s.cfg.Ledger.FinishSession(wctx, sess.ID, ledger.SessionOutcome{OK: false, ErrorCode: string(reason)}, s.cfg.Now()); err != nil && !errors.Is(err, ledger.ErrSessionClosed) {
		s.ledgerError()
		s.cfg.Log.Warn("record abandoned session", zap.String("session", sess.ID.String()), zap.Error(err))
	}
}
