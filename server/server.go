package server

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/desfire-relay/relay/transaction"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/profile"
)

//go:embed api/openapi.yaml
var openAPI []byte

// OpenAPI returns the operator API document served at /openapi.yaml.
func OpenAPI() []byte { return openAPI }

// Options configure a Server.
type Options struct {
	// Service runs sessions and operator operations.
	Service *transaction.Service
	// Outbox, when webhooks are configured, serves the events and
	// redelivery routes (nil: they answer webhooks_disabled).
	Outbox ledger.Outbox
	// APIKeyHashes are the SHA-256 digests (hex) of accepted API keys of
	// the default tenant (the embedded single-key setup).
	APIKeyHashes []string
	// APIKeys are accepted API keys with their tenants (added to
	// APIKeyHashes); SetKeys replaces both at run time.
	APIKeys []APIKey
	// Limits bound bodies, request rates and bridge sockets per client.
	Limits Limits
	// AllowTokenInQuery accepts a bridge token as ?token= (proxies log
	// URLs: only for bridges that cannot set a header or subprotocol).
	AllowTokenInQuery bool
	// HSTS sends Strict-Transport-Security (when the server or its proxy
	// serves TLS).
	HSTS bool
	// Pprof adds /debug/pprof/ to the admin handler.
	Pprof bool
	// ExchangeTimeout bounds each bridge exchange; SessionTimeout a session.
	ExchangeTimeout, SessionTimeout time.Duration
	// RetapWait bounds the wait for a card presented again after it left
	// the field, for bridges with the retap feature (default 20 s; the
	// session deadline bounds it too).
	RetapWait time.Duration
	// MaxSessions bounds open bridge sessions (503 beyond).
	MaxSessions int
	// Ready checks dependencies for /readyz (the ledger is always checked).
	Ready []func(context.Context) error
	Log   *zap.Logger
	// Metrics (nil: a new set).
	Metrics *Metrics
	// SUN configures the public SUN verify endpoint and GET /v1/tags/{uid}.
	SUN SUNOptions
	// AgentPoll is how often an idle agent connection looks in the ledger
	// for sessions addressed to its reader from another node (default 1 s;
	// sessions created on the same node wake it at once).
	AgentPoll time.Duration
	// ConsoleKey signs the support console's session cookies and CSRF
	// tokens (at least 32 bytes; the same on every node so a login works
	// on all of them). Unset: a random key per process.
	ConsoleKey []byte
	// Provision, when set, serves the provisioning session kinds
	// (server/provision.go).
	Provision *ProvisionOptions
}

// DefaultMaxSessions bounds open bridge sessions when Options.MaxSessions
// is unset (relayd's max-sessions defaults to it too).
const DefaultMaxSessions = 20000

// Server serves the operator API and the bridge endpoint.
type Server struct {
	o     Options
	keys  keyring
	mux   *http.ServeMux
	admin *http.ServeMux

	addrLimit, keyLimit, authFail *limiterSet
	bridges                       counterSet

	metrics  *Metrics
	log      *zap.Logger
	slots    chan struct{}
	sunOnce  sync.Once
	sunH     *sunHandler
	sessions sync.WaitGroup
	agents   agentHub
	// api holds the operator API handlers by route pattern, for the
	// console (server/console.go), which calls them in process.
	api map[string]http.HandlerFunc
	// consoleKey signs console cookies (server/console.go).
	consoleKey []byte

	mu       sync.Mutex // guards draining and cancels
	draining bool
	cancels  map[*context.CancelFunc]struct{}
}

// New builds the handler tree.
func New(o Options) *Server {
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics()
	}
	if o.MaxSessions <= 0 {
		o.MaxSessions = DefaultMaxSessions
	}
	if o.ExchangeTimeout <= 0 {
		o.ExchangeTimeout = 5 * time.Second
	}
	if o.RetapWait <= 0 {
		o.RetapWait = 20 * time.Second
	}
	if o.AgentPoll <= 0 {
		o.AgentPoll = time.Second
	}
	if o.SessionTimeout <= 0 {
		o.SessionTimeout = time.Minute
	}
	o.Limits = o.Limits.withDefaults()
	s := &Server{o: o, mux: http.NewServeMux(), admin: http.NewServeMux(), metrics: o.Metrics, log: o.Log,
		slots: make(chan struct{}, o.MaxSessions), cancels: map[*context.CancelFunc]struct{}{},
		addrLimit: newLimiterSet(o.Limits.AddrRate, o.Limits.AddrBurst),
		keyLimit:  newLimiterSet(o.Limits.KeyRate, o.Limits.KeyBurst),
		authFail:  newLimiterSet(o.Limits.AuthFailRate, o.Limits.AuthFailBurst)}
	s.keys.set(append(LegacyKeys(o.APIKeyHashes), o.APIKeys...))
	s.consoleKey = o.ConsoleKey
	if len(s.consoleKey) < 32 {
		s.consoleKey = make([]byte, 32)
		_, _ = rand.Read(s.consoleKey)
	}
	s.routes()
	s.registerGauges()
	return s
}

// Metrics returns the server's collectors (for the transaction service).
func (s *Server) Metrics() *Metrics { return s.metrics }

// Handler is the public HTTP handler: the operator API and the bridge
// endpoint, behind the edge (request ids, rate limits, body bounds).
func (s *Server) Handler() http.Handler {
	h := s.observe(s.edge(s.mux))
	if !s.o.HSTS {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
		h.ServeHTTP(w, r)
	})
}

// AdminHandler serves metrics, the OpenAPI document, health and (when
// enabled) pprof, for a private listener.
func (s *Server) AdminHandler() http.Handler { return s.admin }

// handler is a route's handler as a method expression of Server.
type handler = func(*Server, http.ResponseWriter, *http.Request)

// operatorRoutes are the operator API: each behind an API key, rate limits
// and the audit log. This table is the one list of them: the mux, Routes
// and the console's in-process calls all read it.
var operatorRoutes = []struct {
	pattern string
	h       handler
}{
	{"POST /v1/topups", (*Server).createTopUp},
	{"GET /v1/topups", (*Server).listTopUps},
	{"GET /v1/topups/{id}", (*Server).getTopUp},
	{"POST /v1/topups/{id}/resolve", (*Server).resolveTopUp},
	{"POST /v1/topups/{id}/bridge-tokens", (*Server).topUpToken},
	{"GET /v1/topups/{id}/events", (*Server).topUpEvents},
	{"POST /v1/topups/{id}/reversal", (*Server).reverseTopUp},
	{"POST /v1/topups/{id}/cancel", (*Server).cancelTopUp},
	{"POST /v1/events/{id}/redeliver", (*Server).redeliverEvent},
	{"POST /v1/sessions", (*Server).createSession},
	{"GET /v1/sessions/{id}", (*Server).getSession},
	{"GET /v1/cards/{uid}/topups", (*Server).cardTopUps},
	{"PUT /v1/cards/{uid}/block", (*Server).blockCard},
	{"DELETE /v1/cards/{uid}/block", (*Server).unblockCard},
	{"GET /v1/cards/{uid}/block", (*Server).getCardBlock},
	{"GET /v1/exports/topups", (*Server).exportTopUps},
	{"GET /v1/tags/{uid}", (*Server).sunTag},
	{"GET /v1/provisioning/sessions", (*Server).listProvisionSessions},
	{"POST /v1/readers", (*Server).createReader},
	{"GET /v1/readers", (*Server).listReaders},
	{"GET /v1/readers/{id}", (*Server).getReader},
	{"DELETE /v1/readers/{id}", (*Server).deleteReader},
}

// openRoutes are the public routes without an API key: SUN verification
// for phones, the bridge and agent sockets (their own credentials) and
// the health probes.
var openRoutes = []struct {
	pattern string
	h       handler
}{
	{"GET /v1/sun/{template}", (*Server).sunVerify},
	{"GET /v1/bridge", (*Server).bridge},
	{"GET /v1/agent", (*Server).agent},
	{"GET /healthz", (*Server).healthz},
	{"GET /readyz", (*Server).readyz},
}

// Routes lists "METHOD /path" of every public route, for the OpenAPI test.
func Routes() []string {
	out := make([]string, 0, len(operatorRoutes)+len(openRoutes))
	for _, r := range operatorRoutes {
		out = append(out, r.pattern)
	}
	for _, r := range openRoutes {
		out = append(out, r.pattern)
	}
	return out
}

// AdminRoutes lists the routes of the admin listener (pprof aside).
func AdminRoutes() []string {
	return []string{"GET /metrics", "GET /openapi.yaml", "GET /healthz", "GET /readyz"}
}

// healthz answers the liveness probe.
func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// sunVerify and sunTag serve the SUN routes (server/sun.go).
func (s *Server) sunVerify(w http.ResponseWriter, r *http.Request) { s.sun().verify(w, r) }
func (s *Server) sunTag(w http.ResponseWriter, r *http.Request)    { s.sun().tag(w, r) }

func (s *Server) routes() {
	s.sun() // its metrics are registered from the start
	s.api = make(map[string]http.HandlerFunc, len(operatorRoutes))
	for _, r := range operatorRoutes {
		h := func(w http.ResponseWriter, req *http.Request) { r.h(s, w, req) }
		s.api[r.pattern] = h
		s.mux.Handle(r.pattern, s.operator(r.pattern, h))
	}
	for _, r := range openRoutes {
		s.mux.HandleFunc(r.pattern, func(w http.ResponseWriter, req *http.Request) { r.h(s, w, req) })
	}
	s.consoleRoutes()
	s.mux.HandleFunc("/", noRoute(s.mux))

	s.admin.HandleFunc("GET /healthz", s.healthz)
	s.admin.HandleFunc("GET /readyz", s.readyz)
	s.admin.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	s.admin.HandleFunc("GET /openapi.yaml", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		w.Write(openAPI)
	})
	if s.o.Pprof {
		s.admin.HandleFunc("GET /debug/pprof/", pprof.Index)
		s.admin.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		s.admin.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		s.admin.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		s.admin.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	s.admin.HandleFunc("/", noRoute(s.admin))
}

// operator wraps an operator API handler: the per-address limit on
// refused keys, the API key check (every stored digest compared in
// constant time), the per-key rate limit and the audit line.
func (s *Server) operator(action string, next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w}
		defer func() { s.audit(r, action, rec.status) }()
		ri, now := info(r), time.Now()
		if empty, retry := s.authFail.empty(ri.Client, now); empty {
			s.metrics.rateLimited.WithLabelValues("auth_failures").Inc()
			tooMany(rec, retry, "too many refused API keys from this address")
			return
		}
		key := bearer(r)
		if key == "" {
			s.authFail.take(ri.Client, now)
			writeError(rec, http.StatusUnauthorized, codeUnauthorized, "missing API key (Authorization: Bearer)")
			return
		}
		k, ok, expired := s.keys.lookup(key, now)
		if !ok {
			s.authFail.take(ri.Client, now)
			msg := "unknown API key"
			if expired {
				msg = "expired API key"
			}
			writeError(rec, http.StatusUnauthorized, codeUnauthorized, msg)
			return
		}
		r = r.WithContext(withPrincipal(r.Context(), principal{KeyID: k.ID, Tenant: k.Tenant}))
		if ok, retry := s.keyLimit.take(k.ID, now); !ok {
			s.metrics.rateLimited.WithLabelValues("key").Inc()
			tooMany(rec, retry, "too many requests with this API key")
			return
		}
		next(rec, r)
	})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	checks := append([]func(context.Context) error{s.o.Service.Ping}, s.o.Ready...)
	for _, c := range checks {
		if err := c(ctx); err != nil {
			writeError(w, http.StatusServiceUnavailable, codeUnavailable, "dependency not ready")
			return
		}
	}
	s.mu.Lock()
	draining := s.draining
	s.mu.Unlock()
	if draining {
		writeError(w, http.StatusServiceUnavailable, codeUnavailable, "shutting down")
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// apiError answers an error from the transaction layer.
func (s *Server) apiError(w http.ResponseWriter, r *http.Request, err error) {
	var vErr *ledger.ValidationError
	var be *errBody
	switch {
	case errors.As(err, &be):
		writeError(w, be.status, be.code, be.msg)
	case errors.As(err, &vErr):
		writeError(w, http.StatusBadRequest, codeInvalid, sanitize(vErr.Field+": "+vErr.Reason))
	case errors.Is(err, ledger.ErrInvalid), errors.Is(err, profile.ErrUnknownProfile):
		writeError(w, http.StatusBadRequest, codeInvalid, publicError(err))
	case errors.Is(err, transaction.ErrCurrency):
		writeError(w, http.StatusBadRequest, codeCurrencyMismatch, publicError(err))
	case errors.Is(err, transaction.ErrAmountLimit):
		writeError(w, http.StatusBadRequest, codeAmountLimit, publicError(err))
	case errors.Is(err, ledger.ErrNotFound):
		writeError(w, http.StatusNotFound, codeNotFound, "not found")
	case errors.Is(err, ledger.ErrNotReversible):
		writeError(w, http.StatusConflict, codeNotReversible, sanitize(err.Error()))
	case errors.Is(err, ledger.ErrIdempotencyConflict):
		writeError(w, http.StatusConflict, codeIdempotency, "this Idempotency-Key was used with a different request")
	case errors.Is(err, transaction.ErrCardBlocked):
		writeError(w, http.StatusConflict, codeCardBlocked, "the card is blocked")
	case errors.Is(err, transaction.ErrNotCancellable):
		writeError(w, http.StatusConflict, codeNotCancellable, publicError(err))
	case errors.Is(err, transaction.ErrNotPayable), errors.Is(err, ledger.ErrInvalidTransition), errors.Is(err, ledger.ErrConflict):
		writeError(w, http.StatusConflict, codeNotPayable, publicError(err))
	default:
		s.log.Error("operator API", zap.String("path", r.URL.Path), zap.Error(err))
		writeError(w, http.StatusInternalServerError, codeInternal, "internal error")
	}
}

type tmacView struct {
	Counter uint32 `json:"counter"`
	Value   string `json:"value"`
}

type topUpView struct {
	ID            string    `json:"id"`
	Status        string    `json:"status"`
	Amount        int64     `json:"amount"`
	Currency      string    `json:"currency"`
	CardUID       string    `json:"card_uid,omitempty"`
	Reference     string    `json:"reference,omitempty"`
	BalanceBefore *int64    `json:"balance_before,omitempty"`
	BalanceAfter  *int64    `json:"balance_after,omitempty"`
	TMAC          *tmacView `json:"tmac,omitempty"`
	Attempts      int       `json:"attempts"`
	// Profile is the card profile the last session used (mixed fleets).
	Profile string `json:"profile,omitempty"`
	// ReaderID and PrevReaderID (hex) are the Transaction MAC Reader IDs
	// the verified Transaction MAC covers: the one the top-up committed
	// and the one of the card's previous transaction.
	ReaderID     string `json:"reader_id,omitempty"`
	PrevReaderID string `json:"prev_reader_id,omitempty"`
	// Scheme is the card profile the request named.
	Scheme string `json:"requested_profile,omitempty"`
	// Kind is "credit" or "reversal"; Reverses names the credit a
	// reversal takes back.
	Kind      string     `json:"kind"`
	Reverses  string     `json:"reverses,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
	UpdatedAt time.Time  `json:"updated_at"`
	ExpiresAt time.Time  `json:"expires_at"`
	AppliedAt *time.Time `json:"applied_at,omitempty"`
	// Resolution is set when an operator decided the outcome.
	Resolution *resolutionInfo `json:"resolution,omitempty"`
	// Cancellation is set when an operator cancelled the top-up.
	Cancellation *cancellationView `json:"cancellation,omitempty"`
	// Ticket fields, on create.
	BridgeToken          string     `json:"bridge_token,omitempty"`
	BridgeTokenExpiresAt *time.Time `json:"bridge_token_expires_at,omitempty"`
	SessionID            string     `json:"session_id,omitempty"`
	// SessionReaderID is the registered reader SessionID was dispatched
	// to (POST /v1/topups with reader_id).
	SessionReaderID string `json:"session_reader_id,omitempty"`
}

func viewTopUp(t ledger.TopUp) topUpView {
	v := topUpView{ID: t.ID.String(), Status: t.Status.String(), Amount: t.Amount, Currency: t.Currency,
		CardUID: t.CardUID, Reference: t.Reference, BalanceBefore: t.BalanceBefore, BalanceAfter: t.BalanceAfter,
		Attempts: t.Attempts, Profile: t.Profile, CreatedAt: t.CreatedAt.UTC(), UpdatedAt: t.UpdatedAt.UTC(), ExpiresAt: t.ExpiresAt.UTC(), AppliedAt: t.AppliedAt}
	v.Kind = string(t.Kind)
	if v.Kind == "" {
		v.Kind = string(ledger.TopUpCredit)
	}
	if t.Reverses != uuid.Nil {
		v.Reverses = t.Reverses.String()
	}
	if t.TMC != nil && len(t.TMV) > 0 {
		v.TMAC = &tmacView{Counter: *t.TMC, Value: strings.ToUpper(hex.EncodeToString(t.TMV))}
	}
	v.Scheme = t.Scheme
	if len(t.ReaderID) > 0 {
		v.ReaderID = strings.ToUpper(hex.EncodeToString(t.ReaderID))
		v.PrevReaderID = strings.ToUpper(hex.EncodeToString(t.PrevReaderID))
	}
	if t.Resolution != "" {
		v.Resolution = &resolutionInfo{Kind: t.Resolution, CardChecked: t.ResolutionChecked, Conflict: t.Conflict}
	}
	return v
}

// resolutionInfo tells how an operator resolved a top-up and what the
// card's log later proved.
type resolutionInfo struct {
	Kind string `json:"kind"`
	// CardChecked: a later authenticated read of the card's top-up log
	// was compared with the decision; Conflict says how they disagree.
	CardChecked bool             `json:"card_checked"`
	Conflict    string           `json:"conflict,omitempty"`
	History     []resolutionView `json:"history,omitempty"`
}

type ticketView struct {
	SessionID   string    `json:"session_id"`
	BridgeToken string    `json:"bridge_token"`
	ExpiresAt   time.Time `json:"expires_at"`
}

func viewTicket(t *transaction.Ticket) ticketView {
	return ticketView{SessionID: t.SessionID.String(), BridgeToken: t.Token, ExpiresAt: t.ExpiresAt.UTC()}
}

type createTopUpBody struct {
	Amount    *int64 `json:"amount"`
	Currency  string `json:"currency"`
	CardUID   string `json:"card_uid"`
	Reference string `json:"reference"`
	// Profile optionally names the card profile (scheme) of the top-up.
	Profile string `json:"profile"`
	// ReaderID optionally dispatches the top-up's session to a registered
	// reader's agent instead of handing out a bridge token.
	ReaderID *string `json:"reader_id"`
}

func (s *Server) createTopUp(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get("Idempotency-Key")
	if key == "" {
		writeError(w, http.StatusBadRequest, codeInvalid, "Idempotency-Key header is required")
		return
	}
	var body createTopUpBody
	if err := decodeBody(w, r, &body); err != nil {
		s.apiError(w, r, err)
		return
	}
	if body.Amount == nil {
		writeError(w, http.StatusBadRequest, codeInvalid, "amount is required")
		return
	}
	req := ledger.Request{Amount: *body.Amount, Currency: body.Currency,
		CardUID: body.CardUID, Reference: body.Reference, Scheme: body.Profile, Tenant: who(r).Tenant}
	if body.ReaderID != nil {
		s.createReaderTopUp(w, r, key, req, *body.ReaderID)
		return
	}
	t, tk, created, err := s.o.Service.CreateTopUp(r.Context(), key, req)
	if err != nil {
		s.apiError(w, r, err)
		return
	}
	setObject(r, t.ID.String())
	writeTicketed(w, t, tk, created)
}

// writeTicketed answers with a top-up and, while it is payable, the
// bridge ticket that came with it: 201 when it was created, 200 for an
// existing one.
func writeTicketed(w http.ResponseWriter, t ledger.TopUp, tk *transaction.Ticket, created bool) {
	v := viewTopUp(t)
	if tk != nil {
		exp := tk.ExpiresAt.UTC()
		v.BridgeToken, v.BridgeTokenExpiresAt, v.SessionID = tk.Token, &exp, tk.SessionID.String()
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	writeJSON(w, status, v)
}

func pathID(w http.ResponseWriter, r *http.Request) (uuid.UUID, bool) {
	v := r.PathValue("id")
	id, err := uuid.Parse(v)
	if err != nil || len(v) != 36 { // the canonical form only
		writeError(w, http.StatusBadRequest, codeInvalid, "id must be a UUID")
		return uuid.Nil, false
	}
	return id, true
}

func (s *Server) getTopUp(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	t, err := s.o.Service.TenantTopUp(r.Context(), who(r).Tenant, id)
	if err != nil {
		s.apiError(w, r, err)
		return
	}
	v := viewTopUp(t)
	s.addResolutions(r.Context(), &v)
	s.addCancellation(r, &v)
	writeJSON(w, http.StatusOK, v)
}

func (s *Server) topUpToken(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	tk, err := s.o.Service.TenantTopUpTicket(r.Context(), who(r).Tenant, id)
	if err != nil {
		s.apiError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, viewTicket(tk))
}

func (s *Server) createSession(w http.ResponseWriter, r *http.Request) {
	var body sessionBody
	if err := decodeBody(w, r, &body); err != nil {
		s.apiError(w, r, err)
		return
	}
	if body.ReaderID != nil || body.TopUpID != nil {
		s.createReaderSession(w, r, body)
		return
	}
	if isProvisionKind(body.Kind) {
		s.createProvisionSession(w, r, body)
		return
	}
	if body.Kind != "balance" || body.Template != "" || body.KeyVersion != nil || body.Lock || body.Profile != "" || body.Initial != nil || body.RandomID || body.UID != "" || body.Offsets != nil {
		writeError(w, http.StatusBadRequest, codeInvalid, `kind must be "balance", "issue" or "provision_ntag424" (top-up sessions come with POST /v1/topups); the other fields belong to the provisioning kinds`)
		return
	}
	tk, err := s.o.Service.TenantBalanceTicket(r.Context(), who(r).Tenant)
	if err != nil {
		s.apiError(w, r, err)
		return
	}
	setObject(r, tk.SessionID.String())
	writeJSON(w, http.StatusCreated, viewTicket(tk))
}

// sessionRecord is one card log entry of a balance lookup in
// GET /v1/sessions/{id}.
type sessionRecord struct {
	Kind      string `json:"kind"` // "topup" or "usage"
	Timestamp uint32 `json:"timestamp"`
	Amount    int64  `json:"amount"`
	Ref       string `json:"ref,omitempty"`
}

// viewRecords is recs as GET /v1/sessions/{id} shows them.
func viewRecords(recs []ledger.BalanceRecord) []sessionRecord {
	out := make([]sessionRecord, 0, len(recs))
	for _, r := range recs {
		out = append(out, sessionRecord(r))
	}
	return out
}

type sessionView struct {
	ID       string          `json:"id"`
	Kind     string          `json:"kind"`
	Status   string          `json:"status"`
	TopUpID  string          `json:"topup_id,omitempty"`
	CardUID  string          `json:"card_uid,omitempty"`
	Balance  *int64          `json:"balance,omitempty"`
	Currency string          `json:"currency,omitempty"`
	Records  []sessionRecord `json:"records,omitempty"`
	ErrCode  string          `json:"error_code,omitempty"`
	Created  time.Time       `json:"created_at"`
	Ended    *time.Time      `json:"ended_at,omitempty"`
}

func (s *Server) getSession(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	sess, err := s.o.Service.TenantSession(r.Context(), who(r).Tenant, id)
	if errors.Is(err, ledger.ErrNotFound) && s.getProvisionSession(w, r, id) {
		return
	}
	if err != nil {
		s.apiError(w, r, err)
		return
	}
	v := sessionView{ID: sess.ID.String(), Kind: sess.Kind.String(), Status: sess.Status.String(),
		CardUID: sess.Outcome.CardUID, Balance: sess.Outcome.Balance, ErrCode: storedCode(sess.Outcome.ErrorCode),
		Created: sess.CreatedAt.UTC(), Ended: sess.EndedAt}
	if sess.TopUpID != uuid.Nil {
		v.TopUpID = sess.TopUpID.String()
	}
	if v.Balance != nil {
		v.Currency = s.o.Service.Profile().Currency
	}
	if recs, err := ledger.DecodeRecords(sess.Outcome.Records); err == nil {
		v.Records = viewRecords(recs)
	}
	writeJSON(w, http.StatusOK, v)
}

// cardTopUps answers GET /v1/cards/{uid}/topups: the card's top-ups,
// newest first, in pages (limit, cursor) like GET /v1/topups.
func (s *Server) cardTopUps(w http.ResponseWriter, r *http.Request) {
	uid, ok := pathUID(w, r)
	if !ok {
		return
	}
	f, err := parseFilter(r, s.o.Service.Now(), pageFilters)
	if err != nil {
		writeError(w, http.StatusBadRequest, codeInvalid, err.Error())
		return
	}
	f.Tenant, f.CardUID, f.NewestFirst = who(r).Tenant, uid, true
	ts, err := s.o.Service.ListTopUps(r.Context(), f)
	if err != nil {
		s.apiError(w, r, err)
		return
	}
	out := struct {
		CardUID    string      `json:"card_uid"`
		TopUps     []topUpView `json:"topups"`
		NextCursor string      `json:"next_cursor,omitempty"`
	}{CardUID: uid, TopUps: []topUpView{}}
	for _, t := range ts {
		out.TopUps = append(out.TopUps, viewTopUp(t))
	}
	if len(ts) == f.Limit {
		last := ts[len(ts)-1]
		out.NextCursor = encodeCursor(last.CreatedAt, last.ID)
	}
	writeJSON(w, http.StatusOK, out)
}
