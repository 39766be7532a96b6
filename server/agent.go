package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"

	"github.com/desfire-relay/relay/protocol"
	"github.com/desfire-relay/relay/server/relay"
	"github.com/desfire-relay/relay/transaction"
	"github.com/desfire-relay/relay/transaction/ledger"
)

// Agent mode (docs/PROTOCOL.md): a registered reader keeps one WebSocket
// to GET /v1/agent, authenticated by its agent credential. Sessions
// addressed to the reader wait in the ledger; the node holding the
// reader's connection claims them one at a time (on a local notification
// at once, else at the next poll, so a session created on another node
// arrives within AgentPoll) and runs each over the connection exactly as a
// bridge session, after a `session` offer.

// agentHub wakes the agent connections of this node when a session is
// addressed to their reader here.
type agentHub struct {
	mu    sync.Mutex // guards conns
	conns map[string]map[chan struct{}]struct{}
}

func agentKey(tenant, reader string) string { return tenant + "\x00" + reader }

func (h *agentHub) add(key string) chan struct{} {
	c := make(chan struct{}, 1)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.conns == nil {
		h.conns = map[string]map[chan struct{}]struct{}{}
	}
	if h.conns[key] == nil {
		h.conns[key] = map[chan struct{}]struct{}{}
	}
	h.conns[key][c] = struct{}{}
	return c
}

func (h *agentHub) remove(key string, c chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.conns[key], c)
	if len(h.conns[key]) == 0 {
		delete(h.conns, key)
	}
}

func (h *agentHub) notify(key string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.conns[key] {
		select {
		case c <- struct{}{}:
		default:
		}
	}
}

// agent serves GET /v1/agent.
func (s *Server) agent(w http.ResponseWriter, r *http.Request) {
	rd, ok := s.acceptAgent(w, r)
	if !ok {
		return
	}
	client := info(r).Client
	defer s.bridges.release(client)
	conn, err := s.acceptBridge(w, r, protocol.AgentSubprotocol)
	if err != nil {
		s.log.Info("agent upgrade failed", zap.String("reader", rd.ID), zap.Error(err))
		return
	}
	a := &agentConn{s: s, conn: conn, reader: rd, id: randomID(), log: s.log.With(zap.String("reader", rd.ID), zap.String("tenant", rd.Tenant))}
	code, reason := a.serve(context.WithoutCancel(r.Context()))
	_ = conn.Close(code, reason)
}

// acceptAgent checks everything before the upgrade: the subprotocol, a
// well-formed handshake, the credential (refusals count against the
// address like refused API keys) and the per-address socket bound.
func (s *Server) acceptAgent(w http.ResponseWriter, r *http.Request) (ledger.Reader, bool) {
	if !offers(r, protocol.AgentSubprotocol) {
		writeError(w, http.StatusBadRequest, codeSubprotocolRequired, "the agent must offer the "+protocol.AgentSubprotocol+" subprotocol")
		return ledger.Reader{}, false
	}
	if err := checkUpgrade(r); err != nil {
		w.Header().Set("Upgrade", "websocket")
		w.Header().Set("Sec-WebSocket-Version", "13")
		writeError(w, http.StatusUpgradeRequired, codeUpgradeRequired, err.Error())
		return ledger.Reader{}, false
	}
	client, now := info(r).Client, time.Now()
	if empty, retry := s.authFail.empty(client, now); empty {
		s.metrics.rateLimited.WithLabelValues("auth_failures").Inc()
		tooMany(w, retry, "too many refused credentials from this address")
		return ledger.Reader{}, false
	}
	rd, err := s.o.Service.AuthenticateAgent(r.Context(), bearer(r))
	switch {
	case errors.Is(err, transaction.ErrAgentCredential):
		s.authFail.take(client, now)
		writeError(w, http.StatusUnauthorized, codeUnauthorized, "missing or unknown agent credential (Authorization: Bearer)")
		return ledger.Reader{}, false
	case errors.Is(err, transaction.ErrNoReaders):
		writeError(w, http.StatusNotFound, codeNotFound, "this server's ledger has no registered readers")
		return ledger.Reader{}, false
	case err != nil:
		s.metrics.ledgerErrors.Inc()
		s.log.Error("agent credential", zap.Error(err))
		writeError(w, http.StatusServiceUnavailable, codeUnavailable, "ledger unavailable")
		return ledger.Reader{}, false
	}
	if s.isDraining() {
		writeError(w, http.StatusServiceUnavailable, codeUnavailable, "server is shutting down")
		return ledger.Reader{}, false
	}
	if !s.bridges.acquire(client, s.o.Limits.BridgesPerAddr) {
		s.metrics.rateLimited.WithLabelValues("bridges").Inc()
		tooMany(w, time.Second, "too many open bridge connections from this address")
		return ledger.Reader{}, false
	}
	return rd, true
}

func offers(r *http.Request, proto string) bool {
	for _, p := range subprotocols(r) {
		if p == proto {
			return true
		}
	}
	return false
}

func (s *Server) isDraining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.draining
}

func randomID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// agentConn is one reader's agent connection.
type agentConn struct {
	s      *Server
	conn   *relay.Conn
	reader ledger.Reader
	id     string // this connection, for the presence lease
	log    *zap.Logger
}

// serve keeps the presence lease, claims the reader's sessions and runs
// them, until the agent leaves, misbehaves or the server drains.
func (a *agentConn) serve(ctx context.Context) (websocket.StatusCode, string) {
	key := agentKey(a.reader.Tenant, a.reader.ID)
	wake := a.s.agents.add(key)
	defer a.s.agents.remove(key, wake)
	if err := a.s.o.Service.AgentAlive(ctx, a.reader, a.id); err != nil {
		a.log.Warn("agent presence", zap.Error(err))
		return protocol.CloseInternal, "server error"
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := a.s.o.Service.AgentGone(dctx, a.reader, a.id); err != nil {
			a.log.Warn("agent presence", zap.Error(err))
		}
	}()
	a.log.Info("agent connected")
	heartbeat := time.NewTicker(transaction.AgentHeartbeat)
	defer heartbeat.Stop()
	poll := time.NewTicker(a.s.o.AgentPoll)
	defer poll.Stop()
	for {
		if a.conn.Waiting() {
			return protocol.CloseProtocol, "protocol violation"
		}
		if a.s.isDraining() {
			return websocket.StatusGoingAway, "server is shutting down"
		}
		sess, ok, err := a.s.o.Service.ClaimReaderSession(ctx, a.reader)
		if err != nil {
			a.log.Warn("claim reader session", zap.Error(err))
		}
		if ok {
			if code, reason := a.run(ctx, sess); code != websocket.StatusNormalClosure {
				return code, reason
			}
			continue
		}
		select {
		case <-a.conn.Ended():
			return websocket.StatusNormalClosure, ""
		case <-wake:
			// Woken here: a session for the reader, or the reader deleted.
			if code, reason, ok := a.renew(ctx); !ok {
				return code, reason
			}
		case <-poll.C:
		case <-heartbeat.C:
			if code, reason, ok := a.heartbeat(ctx); !ok {
				return code, reason
			}
		}
	}
}

// heartbeat renews the presence lease and checks the agent answers.
func (a *agentConn) heartbeat(ctx context.Context) (websocket.StatusCode, string, bool) {
	pctx, cancel := context.WithTimeout(ctx, a.s.o.ExchangeTimeout)
	defer cancel()
	if err := a.conn.Ping(pctx); err != nil {
		return protocol.CloseTooSlow, "too slow", false
	}
	return a.renew(ctx)
}

// renew renews the presence lease; a deleted reader ends the connection.
func (a *agentConn) renew(ctx context.Context) (websocket.StatusCode, string, bool) {
	if err := a.s.o.Service.AgentAlive(ctx, a.reader, a.id); err != nil {
		a.log.Warn("agent presence", zap.Error(err))
		if errors.Is(err, ledger.ErrNotFound) {
			return websocket.StatusPolicyViolation, "reader deleted", false
		}
	}
	return 0, "", true
}

// run offers one claimed session to the agent and runs it like a bridge
// session; it returns StatusNormalClosure when the connection may carry
// the next one.
func (a *agentConn) run(ctx context.Context, sess ledger.Session) (websocket.StatusCode, string) {
	s := a.s
	if !s.enter() {
		s.o.Service.Abandon(ctx, sess, transaction.ReasonInternal)
		return websocket.StatusGoingAway, "server is shutting down"
	}
	defer s.sessions.Done()
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	default:
		s.metrics.bridgeRefused.WithLabelValues("capacity").Inc()
		s.o.Service.Abandon(ctx, sess, transaction.ReasonInternal)
		return websocket.StatusNormalClosure, ""
	}
	sctx, cancel := context.WithTimeout(ctx, s.o.SessionTimeout)
	defer cancel()
	s.track(&cancel)
	defer s.untrack(&cancel)
	s.metrics.sessionsActive.Inc()
	defer s.metrics.sessionsActive.Dec()
	a.log.Info("agent session", zap.String("session", sess.ID.String()), zap.String("kind", sess.Kind.String()))
	if err := a.conn.Send(sctx, protocol.SessionOffer{Type: protocol.TypeSession, SessionID: sess.ID.String(), Kind: sess.Kind.String()}); err != nil {
		s.o.Service.Abandon(sctx, sess, transaction.ReasonInternal)
		return protocol.CloseInternal, "offer not delivered"
	}
	code, reason := s.serveSession(sctx, a.conn, sess, a.reader.DESFireReaderID)
	if code == websocket.StatusNormalClosure && a.conn.Fault() != nil {
		return closeFor(a.conn.Fault())
	}
	return code, reason
}

// notifyReader wakes this node's agent connections of the reader.
func (s *Server) notifyReader(tenant, reader string) { s.agents.notify(agentKey(tenant, reader)) }
