package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/desfire-relay/relay/transaction"
	"github.com/desfire-relay/relay/transaction/ledger"
)

//go:embed api/openapi.yaml
var openAPI []byte

// OpenAPI returns the operator API document served at /openapi.yaml.
func OpenAPI() []byte { return openAPI }

// Options configure a Server.
type Options struct {
	// Service runs sessions and operator operations.
	Service *transaction.Service
	// APIKeyHashes are the SHA-256 digests (hex) of accepted API keys.
	APIKeyHashes []string
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
	// Provision, when set, serves the provisioning session kinds
	// (server/provision.go).
	Provision *ProvisionOptions
}

// Server serves the operator API and the bridge endpoint.
type Server struct {
	o        Options
	keys     [][]byte
	mux      *http.ServeMux
	metrics  *Metrics
	log      *zap.Logger
	slots    chan struct{}
	sessions sync.WaitGroup

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
		o.MaxSessions = 10000
	}
	if o.ExchangeTimeout <= 0 {
		o.ExchangeTimeout = 5 * time.Second
	}
	if o.RetapWait <= 0 {
		o.RetapWait = 20 * time.Second
	}
	if o.SessionTimeout <= 0 {
		o.SessionTimeout = time.Minute
	}
	s := &Server{o: o, mux: http.NewServeMux(), metrics: o.Metrics, log: o.Log,
		slots: make(chan struct{}, o.MaxSessions), cancels: map[*context.CancelFunc]struct{}{}}
	for _, h := range o.APIKeyHashes {
		b, err := hex.DecodeString(h)
		if err == nil && len(b) == sha256.Size {
			s.keys = append(s.keys, b)
		}
	}
	s.routes()
	s.registerGauges()
	return s
}

// Metrics returns the server's collectors (for the transaction service).
func (s *Server) Metrics() *Metrics { return s.metrics }

// Handler is the server's HTTP handler.
func (s *Server) Handler() http.Handler { return s.mux }

// Routes lists "METHOD /path" of every route, for the OpenAPI test.
func Routes() []string {
	return []string{
		"POST /v1/topups", "GET /v1/topups", "GET /v1/topups/{id}", "POST /v1/topups/{id}/bridge-tokens",
		"POST /v1/topups/{id}/resolve",
		"POST /v1/sessions", "GET /v1/sessions/{id}", "GET /v1/cards/{uid}/topups",
		"GET /v1/bridge", "GET /healthz", "GET /readyz", "GET /metrics", "GET /openapi.yaml",
	}
}

func (s *Server) routes() {
	api := map[string]http.HandlerFunc{
		"POST /v1/topups":                    s.createTopUp,
		"GET /v1/topups":                     s.listTopUps,
		"GET /v1/topups/{id}":                s.getTopUp,
		"POST /v1/topups/{id}/resolve":       s.resolveTopUp,
		"POST /v1/topups/{id}/bridge-tokens": s.topUpToken,
		"POST /v1/sessions":                  s.createSession,
		"GET /v1/sessions/{id}":              s.getSession,
		"GET /v1/cards/{uid}/topups":         s.cardTopUps,
	}
	for pattern, h := range api {
		s.mux.Handle(pattern, s.auth(h))
	}
	s.mux.HandleFunc("GET /v1/bridge", s.bridge)
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	s.mux.HandleFunc("GET /openapi.yaml", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		w.Write(openAPI)
	})
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, codeNotFound, "no such route")
	})
}

// auth checks the operator API key against the stored digests in
// constant time.
func (s *Server) auth(next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := bearer(r)
		if key == "" {
			writeError(w, http.StatusUnauthorized, codeUnauthorized, "missing API key (Authorization: Bearer)")
			return
		}
		sum := sha256.Sum256([]byte(key))
		ok := 0
		for _, k := range s.keys {
			ok |= subtle.ConstantTimeCompare(sum[:], k)
		}
		if ok != 1 {
			writeError(w, http.StatusUnauthorized, codeUnauthorized, "unknown API key")
			return
		}
		// The key's id is the start of its digest: enough to tell keys
		// apart in the ledger and logs, useless to an attacker.
		id := "key:" + hex.EncodeToString(sum[:6])
		next(w, r.WithContext(context.WithValue(r.Context(), keyIDKey{}, id)))
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
	case errors.As(err, &vErr), errors.Is(err, ledger.ErrInvalid):
		writeError(w, http.StatusBadRequest, codeInvalid, sanitize(err.Error()))
	case errors.Is(err, transaction.ErrCurrency):
		writeError(w, http.StatusBadRequest, codeCurrencyMismatch, sanitize(err.Error()))
	case errors.Is(err, transaction.ErrAmountLimit):
		writeError(w, http.StatusBadRequest, codeAmountLimit, sanitize(err.Error()))
	case errors.Is(err, ledger.ErrNotFound):
		writeError(w, http.StatusNotFound, codeNotFound, "not found")
	case errors.Is(err, ledger.ErrIdempotencyConflict):
		writeError(w, http.StatusConflict, codeIdempotency, "this Idempotency-Key was used with a different request")
	case errors.Is(err, transaction.ErrNotPayable), errors.Is(err, ledger.ErrInvalidTransition), errors.Is(err, ledger.ErrConflict):
		writeError(w, http.StatusConflict, codeNotPayable, sanitize(err.Error()))
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
	ID            string     `json:"id"`
	Status        string     `json:"status"`
	Amount        int64      `json:"amount"`
	Currency      string     `json:"currency"`
	CardUID       string     `json:"card_uid,omitempty"`
	Reference     string     `json:"reference,omitempty"`
	BalanceBefore *int64     `json:"balance_before,omitempty"`
	BalanceAfter  *int64     `json:"balance_after,omitempty"`
	TMAC          *tmacView  `json:"tmac,omitempty"`
	Attempts      int        `json:"attempts"`
	CreatedAt     time.Time  `json:"created_at"`
	UpdatedAt     time.Time  `json:"updated_at"`
	ExpiresAt     time.Time  `json:"expires_at"`
	AppliedAt     *time.Time `json:"applied_at,omitempty"`
	// Resolution is set when an operator decided the outcome.
	Resolution *resolutionInfo `json:"resolution,omitempty"`
	// Ticket fields, on create.
	BridgeToken          string     `json:"bridge_token,omitempty"`
	BridgeTokenExpiresAt *time.Time `json:"bridge_token_expires_at,omitempty"`
	SessionID            string     `json:"session_id,omitempty"`
}

func viewTopUp(t ledger.TopUp) topUpView {
	v := topUpView{ID: t.ID.String(), Status: t.Status.String(), Amount: t.Amount, Currency: t.Currency,
		CardUID: t.CardUID, Reference: t.Reference, BalanceBefore: t.BalanceBefore, BalanceAfter: t.BalanceAfter,
		Attempts: t.Attempts, CreatedAt: t.CreatedAt.UTC(), UpdatedAt: t.UpdatedAt.UTC(), ExpiresAt: t.ExpiresAt.UTC(), AppliedAt: t.AppliedAt}
	if t.TMC != nil && len(t.TMV) > 0 {
		v.TMAC = &tmacView{Counter: *t.TMC, Value: strings.ToUpper(hex.EncodeToString(t.TMV))}
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
	t, tk, created, err := s.o.Service.CreateTopUp(r.Context(), key, ledger.Request{Amount: *body.Amount, Currency: body.Currency, CardUID: body.CardUID, Reference: body.Reference})
	if err != nil {
		s.apiError(w, r, err)
		return
	}
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
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
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
	t, err := s.o.Service.GetTopUp(r.Context(), id)
	if err != nil {
		s.apiError(w, r, err)
		return
	}
	v := viewTopUp(t)
	s.addResolutions(r.Context(), &v)
	writeJSON(w, http.StatusOK, v)
}

func (s *Server) topUpToken(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	tk, err := s.o.Service.TopUpTicket(r.Context(), id)
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
	if isProvisionKind(body.Kind) {
		s.createProvisionSession(w, r, body)
		return
	}
	if body.Kind != "balance" || body.Template != "" || body.KeyVersion != nil || body.Lock || body.Profile != "" || body.Initial != nil || body.RandomID || body.UID != "" || body.Offsets != nil {
		writeError(w, http.StatusBadRequest, codeInvalid, `kind must be "balance", "issue" or "provision_ntag424" (top-up sessions come with POST /v1/topups); the other fields belong to the provisioning kinds`)
		return
	}
	tk, err := s.o.Service.BalanceTicket(r.Context())
	if err != nil {
		s.apiError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, viewTicket(tk))
}

type sessionView struct {
	ID       string               `json:"id"`
	Kind     string               `json:"kind"`
	Status   string               `json:"status"`
	TopUpID  string               `json:"topup_id,omitempty"`
	CardUID  string               `json:"card_uid,omitempty"`
	Balance  *int64               `json:"balance,omitempty"`
	Currency string               `json:"currency,omitempty"`
	Records  []transaction.Record `json:"records,omitempty"`
	ErrCode  string               `json:"error_code,omitempty"`
	Created  time.Time            `json:"created_at"`
	Ended    *time.Time           `json:"ended_at,omitempty"`
}

func (s *Server) getSession(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	sess, err := s.o.Service.GetSession(r.Context(), id)
	if errors.Is(err, ledger.ErrNotFound) && s.getProvisionSession(w, r, id) {
		return
	}
	if err != nil {
		s.apiError(w, r, err)
		return
	}
	v := sessionView{ID: sess.ID.String(), Kind: sess.Kind.String(), Status: sess.Status.String(),
		CardUID: sess.Outcome.CardUID, Balance: sess.Outcome.Balance, ErrCode: sess.Outcome.ErrorCode,
		Created: sess.CreatedAt.UTC(), Ended: sess.EndedAt}
	if sess.TopUpID != uuid.Nil {
		v.TopUpID = sess.TopUpID.String()
	}
	if v.Balance != nil {
		v.Currency = s.o.Service.Profile().Currency
	}
	if len(sess.Outcome.Records) > 0 {
		_ = json.Unmarshal(sess.Outcome.Records, &v.Records)
	}
	writeJSON(w, http.StatusOK, v)
}

func (s *Server) cardTopUps(w http.ResponseWriter, r *http.Request) {
	ts, err := s.o.Service.CardTopUps(r.Context(), r.PathValue("uid"))
	if err != nil {
		s.apiError(w, r, err)
		return
	}
	uid, _ := ledger.NormalizeCardUID(r.PathValue("uid"))
	out := struct {
		CardUID string      `json:"card_uid"`
		TopUps  []topUpView `json:"topups"`
	}{CardUID: uid, TopUps: []topUpView{}}
	for _, t := range ts {
		out.TopUps = append(out.TopUps, viewTopUp(t))
	}
	writeJSON(w, http.StatusOK, out)
}
