package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/desfire/ntag424"
	"github.com/desfire-relay/relay/protocol"
	"github.com/desfire-relay/relay/server/relay"
	"github.com/desfire-relay/relay/transaction"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/profile"
	"github.com/desfire-relay/relay/transaction/provision"
)

// ProvisionOptions switch the provisioning session kinds on (issue 14):
// POST /v1/sessions with kind provision_ntag424, the bridge endpoint for
// their tokens, and GET /v1/sessions/{id} for their outcome.
type ProvisionOptions struct {
	// Env runs the scripts (ledger, keys, locker).
	Env *provision.Env
	// Sessions stores the sessions and their bridge tokens.
	Sessions ledger.ProvisionSessions
	// TokenTTL is a bridge token's lifetime (5 minutes when zero).
	TokenTTL time.Duration
	// Rand makes tokens (crypto/rand when nil).
	Rand io.Reader
	// Profiles are the card profiles an issue session may name.
	Profiles profile.Set
}

// sessionBody is the body of POST /v1/sessions: kind, and for
// provision_ntag424 the personalisation request.
type sessionBody struct {
	Kind       string `json:"kind"`
	Template   string `json:"template,omitempty"`
	KeyVersion *int   `json:"key_version,omitempty"`
	Lock       bool   `json:"lock,omitempty"`
	// RandomID and UID are provision_ntag424 options.
	RandomID  bool             `json:"random_id,omitempty"`
	TagTamper bool             `json:"tag_tamper,omitempty"`
	UID       string           `json:"uid,omitempty"`
	Offsets   *ntag424.Offsets `json:"offsets,omitempty"`
	// SUNTemplate registers the provisioned tag under a SUN template.
	SUNTemplate string `json:"sun_template,omitempty"`
	// Profile and Initial are the issue request.
	Profile string `json:"profile,omitempty"`
	Initial *int32 `json:"initial,omitempty"`
	// ReaderID addresses a balance or top-up session to a registered
	// reader's agent (server/agent.go); TopUpID names the top-up (or
	// reversal) of a "topup" session, which only a reader can carry here.
	ReaderID *string `json:"reader_id,omitempty"`
	TopUpID  *string `json:"topup_id,omitempty"`
}

// isProvisionKind reports the session kinds served here.
func isProvisionKind(kind string) bool {
	return kind == provision.KindNTAG424 || kind == provision.KindIssue
}

// provisionParams validates a session body into the stored request.
func (s *Server) provisionParams(ctx context.Context, body sessionBody) ([]byte, error) {
	po := s.o.Provision
	ver := byte(0) // the current version the key provider holds
	if body.KeyVersion != nil {
		if *body.KeyVersion < 1 || *body.KeyVersion > 255 {
			return nil, fmt.Errorf("key_version must be 1..255: %w", provision.ErrInvalid)
		}
		ver = byte(*body.KeyVersion)
	}
	if body.Kind == provision.KindIssue {
		if body.Template != "" || body.Lock || body.RandomID || body.UID != "" || body.Offsets != nil || body.SUNTemplate != "" || body.TagTamper {
			return nil, fmt.Errorf("template, lock, random_id, tag_tamper, uid and sun_template belong to provision_ntag424: %w", provision.ErrInvalid)
		}
		req := provision.IssueRequest{Profile: body.Profile, KeyVersion: ver}
		if body.Initial != nil {
			req.Initial = *body.Initial
		}
		plan, err := provision.PlanIssue(ctx, po.Env.Keys, po.Profiles, req)
		if err != nil {
			return nil, err
		}
		return json.Marshal(plan.Req)
	}
	if body.Profile != "" || body.Initial != nil {
		return nil, fmt.Errorf("profile and initial belong to issue: %w", provision.ErrInvalid)
	}
	if body.SUNTemplate != "" && !s.hasSUNTemplate(body.SUNTemplate) {
		return nil, fmt.Errorf("sun_template %q is not a SUN template of this server: %w", sanitize(body.SUNTemplate), provision.ErrInvalid)
	}
	req := provision.NTAG424Request{Template: body.Template, Lock: body.Lock, KeyVersion: ver, RandomID: body.RandomID, UID: body.UID,
		TagTamper: body.TagTamper, Offsets: body.Offsets, SUNTemplate: body.SUNTemplate}
	plan, err := provision.PlanNTAG424(ctx, po.Env.Keys, req)
	if err != nil {
		return nil, err
	}
	return json.Marshal(plan.Req)
}

// runProvision runs the stored request of ps against the card.
func (s *Server) runProvision(ctx context.Context, ps ledger.ProvisionSession, t desfire.Transport, uid []byte) provision.Result {
	po := s.o.Provision
	res := provision.Result{Kind: ps.Kind, CardUID: fmt.Sprintf("%X", uid)}
	fail := func(err error) provision.Result {
		res.Reason, res.Message = provision.ReasonOf(err), err.Error()
		return res
	}
	switch ps.Kind {
	case provision.KindIssue:
		var req provision.IssueRequest
		if err := json.Unmarshal(ps.Params, &req); err != nil {
			return fail(fmt.Errorf("stored request: %w", err))
		}
		plan, err := provision.PlanIssue(ctx, po.Env.Keys, po.Profiles, req)
		if err != nil {
			return fail(err)
		}
		return po.Env.IssueDESFire(ctx, t, uid, plan)
	default:
		var req provision.NTAG424Request
		if err := json.Unmarshal(ps.Params, &req); err != nil {
			return fail(fmt.Errorf("stored request: %w", err))
		}
		req.Tenant = ps.Tenant
		if req.UID == "" && ntag424.IsRandomID(uid) {
			req.UID = s.randomIDCandidate(ctx, ps.Tenant)
		}
		plan, err := provision.PlanNTAG424(ctx, po.Env.Keys, req)
		if err != nil {
			return fail(err)
		}
		return po.Env.ProvisionNTAG424(ctx, t, uid, plan)
	}
}

// randomIDCandidate finds the UID of a tag that shows a random ID when
// the request names none: the one tag of this tenant whose provisioning
// failed after its files were written with random_id requested (a tear
// around the SetConfiguration that switched the random ID on, the last
// step), among the tenant's latest failed sessions. It returns "" when
// there is not exactly one such tag; the session then asks for the UID.
// The candidate is only a guess: the script proves it by authenticating
// with that tag's key 0 and reading its UID under the session, and a
// wrong guess writes nothing (card_error).
func (s *Server) randomIDCandidate(ctx context.Context, tenant string) string {
	po := s.o.Provision
	list, err := po.Sessions.ListProvisionSessions(ctx, tenant, ledger.ProvisionSessionFilter{Status: "failed", Kind: provision.KindNTAG424, Limit: 50})
	if err != nil {
		s.log.Warn("random ID: list failed sessions", zap.Error(err))
		return ""
	}
	found := map[string]bool{}
	for _, ps := range list {
		var req provision.NTAG424Request
		if ps.CardUID == "" || found[ps.CardUID] || json.Unmarshal(ps.Params, &req) != nil || !req.RandomID {
			continue
		}
		rec, err := po.Env.Ledger.GetProvision(ctx, ps.CardUID)
		if err == nil && rec.Kind == ledger.ProvisionNTAG424 && rec.Step == ledger.StepFiles {
			found[ps.CardUID] = true
		}
	}
	if len(found) != 1 {
		return ""
	}
	for u := range found {
		return u
	}
	return ""
}

// createProvisionSession validates the request (every bad template,
// offset or key version is a 400 before any card is touched), stores the
// session and returns its bridge token.
func (s *Server) createProvisionSession(w http.ResponseWriter, r *http.Request, body sessionBody) {
	po := s.o.Provision
	if po == nil || po.Env == nil || po.Sessions == nil {
		writeError(w, http.StatusBadRequest, codeInvalid, "provisioning is not configured on this server")
		return
	}
	params, err := s.provisionParams(r.Context(), body)
	if errors.Is(err, provision.ErrInvalid) {
		writeError(w, http.StatusBadRequest, codeInvalid, sanitize(err.Error()))
		return
	}
	if err != nil {
		s.apiError(w, r, err)
		return
	}
	raw := make([]byte, 32)
	rnd := po.Rand
	if rnd == nil {
		rnd = rand.Reader
	}
	if _, err := io.ReadFull(rnd, raw); err != nil {
		s.apiError(w, r, fmt.Errorf("token randomness: %w", err))
		return
	}
	tok := base64.RawURLEncoding.EncodeToString(raw)
	ttl := po.TokenTTL
	if ttl <= 0 {
		ttl = 5 * time.Minute
	}
	now := time.Now()
	sum := sha256.Sum256([]byte(tok))
	ps, err := po.Sessions.CreateProvisionSession(r.Context(), who(r).Tenant, body.Kind, params, sum[:], now.Add(ttl), now)
	if err != nil {
		s.apiError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, ticketView{SessionID: ps.ID.String(), BridgeToken: tok, ExpiresAt: ps.ExpiresAt.UTC()})
}

// provisionSessionView is GET /v1/sessions/{id} of a provisioning session.
type provisionSessionView struct {
	ID      string          `json:"id"`
	Kind    string          `json:"kind"`
	Status  string          `json:"status"`
	CardUID string          `json:"card_uid,omitempty"`
	ErrCode string          `json:"error_code,omitempty"`
	Result  json.RawMessage `json:"result,omitempty"`
	Created time.Time       `json:"created_at"`
	Ended   *time.Time      `json:"ended_at,omitempty"`
}

// getProvisionSession answers GET /v1/sessions/{id} for a provisioning
// session; ok is false when id is not one.
func (s *Server) getProvisionSession(w http.ResponseWriter, r *http.Request, id uuid.UUID) bool {
	po := s.o.Provision
	if po == nil || po.Sessions == nil {
		return false
	}
	ps, err := po.Sessions.GetProvisionSession(r.Context(), id)
	if errors.Is(err, ledger.ErrNotFound) || (err == nil && ps.Tenant != who(r).Tenant) {
		// Another tenant's session does not exist for this key.
		return false
	}
	if err != nil {
		s.apiError(w, r, err)
		return true
	}
	writeJSON(w, http.StatusOK, viewProvisionSession(ps))
	return true
}

func viewProvisionSession(ps ledger.ProvisionSession) provisionSessionView {
	v := provisionSessionView{ID: ps.ID.String(), Kind: ps.Kind, Status: ps.Status, CardUID: ps.CardUID, ErrCode: storedCode(ps.ErrorCode),
		Created: ps.CreatedAt.UTC(), Ended: ps.EndedAt}
	if len(ps.Result) > 0 {
		v.Result = ps.Result
	}
	return v
}

// provisionSessionList is GET /v1/provisioning/sessions: the caller's
// tenant's sessions, newest first; next_before pages on.
type provisionSessionList struct {
	Sessions   []provisionSessionView `json:"sessions"`
	NextBefore *time.Time             `json:"next_before,omitempty"`
}

// listProvisionSessions answers GET /v1/provisioning/sessions?status=&kind=&before=&limit=
// for operators: their tenant's provisioning sessions with outcome,
// card UID, error code and exchange counts (in result).
func (s *Server) listProvisionSessions(w http.ResponseWriter, r *http.Request) {
	po := s.o.Provision
	if po == nil || po.Sessions == nil {
		writeError(w, http.StatusNotFound, codeNotFound, "provisioning is not configured on this server")
		return
	}
	q := r.URL.Query()
	f := ledger.ProvisionSessionFilter{Status: q.Get("status"), Kind: q.Get("kind")}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > ledger.MaxProvisionSessionPage {
			writeError(w, http.StatusBadRequest, codeInvalid, fmt.Sprintf("limit must be 1..%d", ledger.MaxProvisionSessionPage))
			return
		}
		f.Limit = n
	}
	if v := q.Get("before"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			writeError(w, http.StatusBadRequest, codeInvalid, "before must be an RFC 3339 time")
			return
		}
		f.Before = t
	}
	list, err := po.Sessions.ListProvisionSessions(r.Context(), who(r).Tenant, f)
	if errors.Is(err, ledger.ErrInvalid) {
		writeError(w, http.StatusBadRequest, codeInvalid, sanitize(err.Error()))
		return
	}
	if err != nil {
		s.apiError(w, r, err)
		return
	}
	out := provisionSessionList{Sessions: make([]provisionSessionView, 0, len(list))}
	for _, ps := range list {
		out.Sessions = append(out.Sessions, viewProvisionSession(ps))
	}
	limit := f.Limit
	if limit == 0 {
		limit = 100
	}
	if len(list) == limit {
		next := list[len(list)-1].CreatedAt.UTC()
		out.NextBefore = &next
	}
	writeJSON(w, http.StatusOK, out)
}

// provisionBridge serves a bridge whose token the top-up path refused,
// when it belongs to a provisioning session (top-up sessions pay nothing
// for provisioning). It returns false, having written nothing, when the
// token is not a provisioning token.
func (s *Server) provisionBridge(w http.ResponseWriter, r *http.Request, token string) bool {
	po := s.o.Provision
	if po == nil || po.Env == nil || po.Sessions == nil || token == "" || len(token) > 128 {
		return false
	}
	sum := sha256.Sum256([]byte(token))
	ps, err := po.Sessions.ConsumeProvisionToken(r.Context(), sum[:], time.Now())
	switch {
	case errors.Is(err, ledger.ErrTokenUnknown):
		return false
	case errors.Is(err, ledger.ErrTokenUsed), errors.Is(err, ledger.ErrTokenExpired):
		s.metrics.bridgeRefused.WithLabelValues("token").Inc()
		writeError(w, http.StatusUnauthorized, codeUnauthorized, "missing, unknown, expired or used bridge token")
		return true
	case err != nil:
		s.metrics.ledgerErrors.Inc()
		s.log.Error("open provisioning session", zap.Error(err))
		writeError(w, http.StatusServiceUnavailable, codeUnavailable, "ledger unavailable")
		return true
	}
	finish := func(ctx context.Context, res provision.Result) {
		s.metrics.SessionOutcome(ps.Kind, string(res.Reason))
		out, _ := json.Marshal(provisionResultView(res))
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := po.Sessions.FinishProvisionSession(wctx, ps.ID, res.OK, res.CardUID, string(res.Reason), out, time.Now()); err != nil && !errors.Is(err, ledger.ErrSessionClosed) {
			s.log.Warn("record provisioning session", zap.String("session", ps.ID.String()), zap.Error(err))
		}
	}
	conn, err := s.acceptBridge(w, r, protocol.Subprotocol)
	if err != nil {
		finish(r.Context(), provision.Result{Kind: ps.Kind, Reason: transaction.ReasonInternal})
		return true
	}
	s.runBridgeSocket(r, conn, func(ctx context.Context, conn *relay.Conn) (websocket.StatusCode, string) {
		return s.serveProvision(ctx, conn, ps, finish)
	})
	return true
}

// serveProvision runs hello → ready → card → script → result.
func (s *Server) serveProvision(ctx context.Context, conn *relay.Conn, ps ledger.ProvisionSession, finish func(context.Context, provision.Result)) (websocket.StatusCode, string) {
	log := s.log.With(zap.String("session", ps.ID.String()), zap.String("kind", ps.Kind))
	fail := func(err error) (websocket.StatusCode, string) {
		code, reason := closeFor(err)
		log.Info("provisioning session ended", zap.Int("close", int(code)), zap.Error(err))
		finish(ctx, provision.Result{Kind: ps.Kind, Reason: reasonFor(err), Message: "session ended before the card work"})
		return code, reason
	}
	hello, card, err := s.awaitCard(ctx, conn, protocol.Ready{SessionID: ps.ID.String(), Kind: ps.Kind, Prompt: "Hold the tag still until it is done"})
	if errors.Is(err, errCancelled) {
		res := provision.Result{Kind: ps.Kind, Reason: transaction.ReasonCancelled, Message: "Cancelled."}
		return s.sendProvisionResult(ctx, conn, ps, res, finish)
	}
	if err != nil {
		return fail(err)
	}
	b := &sessionBridge{conn: conn, batch: hello.HasFeature(protocol.FeatureBatch), ctx: ctx}
	res := s.runProvision(ctx, ps, b.Transport(), []byte(card.UID))
	s.metrics.exchanges.Observe(float64(res.Exchanges))
	if f := conn.Fault(); f != nil {
		finish(ctx, res)
		code, reason := closeFor(f)
		log.Info("provisioning session ended by a fault", zap.Int("close", int(code)), zap.Error(f))
		return code, reason
	}
	return s.sendProvisionResult(ctx, conn, ps, res, finish)
}

func (s *Server) sendProvisionResult(ctx context.Context, conn *relay.Conn, ps ledger.ProvisionSession, res provision.Result, finish func(context.Context, provision.Result)) (websocket.StatusCode, string) {
	finish(ctx, res)
	msg := protocol.Result{Type: protocol.TypeResult, OK: res.OK && res.Reason == "", Kind: ps.Kind, SessionID: ps.ID.String(), CardUID: res.CardUID}
	if !msg.OK {
		msg.Error = &protocol.ErrorBody{Code: wireCode(res.Reason), Message: res.Message}
	}
	if err := conn.Send(ctx, msg); err != nil {
		return websocket.StatusInternalError, "result not delivered"
	}
	return websocket.StatusNormalClosure, ""
}

// provisionResult is the stored result of a provisioning session.
type provisionResult struct {
	OK          bool     `json:"ok"`
	Kind        string   `json:"kind"`
	CardUID     string   `json:"card_uid,omitempty"`
	Step        string   `json:"step,omitempty"`
	KeysChanged []int    `json:"keys_changed,omitempty"`
	Resumed     bool     `json:"resumed,omitempty"`
	Created     []string `json:"created,omitempty"`
	Exchanges   int      `json:"exchanges"`
	Code        string   `json:"error_code,omitempty"`
	Message     string   `json:"message,omitempty"`
}

func provisionResultView(r provision.Result) provisionResult {
	v := provisionResult{OK: r.OK, Kind: r.Kind, CardUID: r.CardUID, Step: string(r.Step), Resumed: r.Resumed, Created: r.Created,
		Exchanges: r.Exchanges, Code: wireCode(r.Reason), Message: sanitize(r.Message)}
	for _, k := range r.KeysChanged {
		v.KeysChanged = append(v.KeysChanged, int(k))
	}
	return v
}

// hasSUNTemplate reports whether the SUN verifier has a template name and
// provisioning can register tags for it.
func (s *Server) hasSUNTemplate(name string) bool {
	if s.o.SUN.Verifier == nil || s.o.Provision.Env.SUN == nil {
		return false
	}
	return slices.Contains(s.o.SUN.Verifier.Templates(), name)
}
