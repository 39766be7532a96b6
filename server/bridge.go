package server

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/protocol"
	"github.com/desfire-relay/relay/server/relay"
	"github.com/desfire-relay/relay/transaction"
	"github.com/desfire-relay/relay/transaction/ledger"
)

// bridge serves GET /v1/bridge. Everything that can be checked without
// the ledger is checked first (subprotocol, a well-formed WebSocket
// upgrade, where the token travels, the per-address socket bound, free
// capacity), so a request that cannot become a session never burns its
// token; the token is consumed only then, and the session slot taken.
func (s *Server) bridge(w http.ResponseWriter, r *http.Request) {
	if !offersSubprotocol(r) {
		s.metrics.bridgeRefused.WithLabelValues("subprotocol").Inc()
		writeError(w, http.StatusBadRequest, codeSubprotocolRequired, "the bridge must offer the "+protocol.Subprotocol+" subprotocol")
		return
	}
	if err := checkUpgrade(r); err != nil {
		s.metrics.bridgeRefused.WithLabelValues("upgrade").Inc()
		w.Header().Set("Upgrade", "websocket")
		w.Header().Set("Sec-WebSocket-Version", "13")
		writeError(w, http.StatusUpgradeRequired, codeUpgradeRequired, err.Error())
		return
	}
	token, err := s.bridgeToken(r)
	if err != nil {
		s.metrics.bridgeRefused.WithLabelValues("token_in_query").Inc()
		writeError(w, http.StatusBadRequest, codeTokenInQuery, err.Error())
		return
	}
	if token == "" {
		s.metrics.bridgeRefused.WithLabelValues("token").Inc()
		writeError(w, http.StatusUnauthorized, codeUnauthorized, "missing bridge token (Authorization: Bearer, or the "+protocol.TokenSubprotocolPrefix+"<token> subprotocol)")
		return
	}
	client := info(r).Client
	if !s.bridges.acquire(client, s.o.Limits.BridgesPerAddr) {
		s.metrics.rateLimited.WithLabelValues("bridges").Inc()
		tooMany(w, time.Second, "too many open bridge connections from this address")
		return
	}
	defer s.bridges.release(client)
	if !s.enter() {
		s.metrics.bridgeRefused.WithLabelValues("draining").Inc()
		writeError(w, http.StatusServiceUnavailable, codeUnavailable, "server is shutting down")
		return
	}
	defer s.sessions.Done()
	if len(s.slots) >= cap(s.slots) {
		s.metrics.bridgeRefused.WithLabelValues("capacity").Inc()
		writeError(w, http.StatusServiceUnavailable, codeUnavailable, "too many open sessions")
		return
	}
	sess, err := s.o.Service.OpenSession(r.Context(), token)
	if err != nil {
		if errors.Is(err, transaction.ErrToken) && s.provisionBridge(w, r, token) {
			return // a provisioning session's token (server/provision.go)
		}
		if errors.Is(err, transaction.ErrToken) {
			s.metrics.bridgeRefused.WithLabelValues("token").Inc()
			writeError(w, http.StatusUnauthorized, codeUnauthorized, "missing, unknown, expired, used or replaced bridge token")
			return
		}
		s.metrics.ledgerErrors.Inc()
		s.log.Error("open session", zap.Error(err))
		writeError(w, http.StatusServiceUnavailable, codeUnavailable, "ledger unavailable")
		return
	}
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	default:
		// Lost the race for the last slot after the check above.
		s.metrics.bridgeRefused.WithLabelValues("capacity").Inc()
		s.o.Service.Abandon(context.WithoutCancel(r.Context()), sess, transaction.ReasonInternal)
		writeError(w, http.StatusServiceUnavailable, codeUnavailable, "too many open sessions")
		return
	}
	conn, err := s.acceptBridge(w, r, protocol.Subprotocol)
	if err != nil {
		s.log.Info("bridge upgrade failed", zap.String("session", sess.ID.String()), zap.Error(err))
		s.o.Service.Abandon(context.WithoutCancel(r.Context()), sess, transaction.ReasonInternal)
		return
	}
	s.runBridgeSocket(r, conn, func(ctx context.Context, conn *relay.Conn) (websocket.StatusCode, string) {
		return s.serveSession(ctx, conn, sess, nil)
	})
}

func offersSubprotocol(r *http.Request) bool {
	for _, p := range subprotocols(r) {
		if p == protocol.Subprotocol {
			return true
		}
	}
	return false
}

// subprotocols lists the offered WebSocket subprotocols.
func subprotocols(r *http.Request) []string {
	var out []string
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(h, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// checkUpgrade refuses a request that is not a well-formed WebSocket
// handshake (RFC 6455 section 4.2.1) before anything is spent on it.
func checkUpgrade(r *http.Request) error {
	if !headerHasToken(r.Header, "Connection", "upgrade") {
		return errors.New(`not a WebSocket upgrade: "Connection: Upgrade" missing`)
	}
	if !headerHasToken(r.Header, "Upgrade", "websocket") {
		return errors.New(`not a WebSocket upgrade: "Upgrade: websocket" missing`)
	}
	if r.Header.Get("Sec-WebSocket-Version") != "13" {
		return errors.New("Sec-WebSocket-Version must be 13")
	}
	key, err := base64.StdEncoding.DecodeString(r.Header.Get("Sec-WebSocket-Key"))
	if err != nil || len(key) != 16 {
		return errors.New("Sec-WebSocket-Key must be 16 bytes in base64")
	}
	return nil
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// bridgeToken finds the bridge token: the Authorization header, else a
// desfire-relay.token.<token> subprotocol, else (only when the server
// allows it) the token query parameter. A token in the query of a server
// that does not allow it is an error, so it is never silently ignored.
func (s *Server) bridgeToken(r *http.Request) (string, error) {
	inQuery := r.URL.Query().Has("token")
	if inQuery && !s.o.AllowTokenInQuery {
		return "", errors.New("the bridge token goes in the Authorization header or the " + protocol.TokenSubprotocolPrefix + "<token> subprotocol; this server refuses ?token=")
	}
	if t := bearer(r); t != "" {
		return t, nil
	}
	for _, p := range subprotocols(r) {
		if t, ok := strings.CutPrefix(p, protocol.TokenSubprotocolPrefix); ok {
			return t, nil
		}
	}
	if inQuery {
		return r.URL.Query().Get("token"), nil
	}
	return "", nil
}

// serveSession runs hello → ready → card → card work → result and
// returns the close code. readerID is the 16-byte DESFire reader ID of the
// registered reader the session runs on (nil: none).
func (s *Server) serveSession(ctx context.Context, conn *relay.Conn, sess ledger.Session, readerID []byte) (websocket.StatusCode, string) {
	log := s.log.With(zap.String("session", sess.ID.String()))
	fail := func(err error) (websocket.StatusCode, string) {
		code, reason := closeFor(err)
		log.Info("bridge session ended", zap.Int("close", int(code)), zap.Error(err))
		s.o.Service.Abandon(ctx, sess, reasonFor(err))
		return code, reason
	}
	hello, card, err := s.awaitCard(ctx, conn, protocol.Ready{SessionID: sess.ID.String(), Kind: sess.Kind.String(), Prompt: "Tap your card and hold it still"})
	if errors.Is(err, errCancelled) {
		return s.sendResult(ctx, conn, transaction.Result{Kind: sess.Kind.String(), Reason: transaction.ReasonCancelled}, sess, true)
	}
	if err != nil {
		return fail(err)
	}
	sb := &sessionBridge{conn: conn, batch: hello.HasFeature(protocol.FeatureBatch), ctx: ctx}
	var opts transaction.RunOptions
	if len(readerID) == 16 {
		opts.ReaderID = [16]byte(readerID) // CommitReaderID on this reader
	}
	var b transaction.Bridge = sb
	if hello.HasFeature(protocol.FeatureRetap) {
		b = &retapBridge{sessionBridge: sb, wait: s.o.RetapWait}
	}
	res := s.o.Service.RunWith(ctx, sess, fmt.Sprintf("%X", []byte(card.UID)), b, opts)
	s.metrics.exchanges.Observe(float64(res.Exchanges))
	if f := conn.Fault(); f != nil {
		code, reason := closeFor(f)
		log.Info("bridge session ended by a fault", zap.Int("close", int(code)), zap.Error(f))
		return code, reason
	}
	return s.sendResult(ctx, conn, res, sess, false)
}

func (s *Server) sendResult(ctx context.Context, conn *relay.Conn, res transaction.Result, sess ledger.Session, record bool) (websocket.StatusCode, string) {
	if record {
		s.o.Service.Abandon(ctx, sess, res.Reason)
	}
	msg := protocol.Result{Type: protocol.TypeResult, OK: res.OK && res.Reason == "", Kind: res.Kind, SessionID: sess.ID.String(),
		Status: res.Status, Currency: res.Currency, Balance: res.Balance, CardUID: res.CardUID}
	if res.Kind == "topup" {
		msg.TopUpID = res.TopUpID
		amt := res.Amount
		msg.Amount = &amt
	}
	for _, r := range res.Records {
		msg.Records = append(msg.Records, protocol.Record{Kind: r.Kind, Timestamp: r.Timestamp, Amount: r.Amount, Raw: r.Ref})
	}
	if !msg.OK {
		code := wireCode(res.Reason)
		msg.Error = &protocol.ErrorBody{Code: code, Message: userMessage(code)}
	}
	if err := conn.Send(ctx, msg); err != nil {
		return websocket.StatusInternalError, "result not delivered"
	}
	return websocket.StatusNormalClosure, ""
}

// closeFor maps a session-ending error to a close code.
func closeFor(err error) (websocket.StatusCode, string) {
	switch {
	case errors.Is(err, protocol.ErrProtocol):
		return protocol.CloseProtocol, "protocol violation"
	case errors.Is(err, relay.ErrTooSlow), errors.Is(err, context.DeadlineExceeded):
		return protocol.CloseTooSlow, "too slow"
	case errors.Is(err, relay.ErrClosed):
		return websocket.StatusNormalClosure, ""
	}
	return protocol.CloseInternal, "server error"
}

// reasonFor classifies a transport error that ended a session before
// any card work (the domain's errors go through transaction.ReasonOf).
func reasonFor(err error) transaction.Reason {
	switch {
	case errors.Is(err, relay.ErrTooSlow):
		return transaction.ReasonTimeout
	case errors.Is(err, protocol.ErrProtocol):
		return transaction.ReasonProtocol
	}
	return transaction.ReasonInternal
}

// sessionBridge adapts a relay.Conn to transaction.Bridge.
type sessionBridge struct {
	conn  *relay.Conn
	batch bool
	ctx   context.Context
}

func (b *sessionBridge) Transport() desfire.Transport {
	if b.batch {
		return b.conn
	}
	return relay.Plain{C: b.conn}
}

// Prompt implements transaction.Bridge: the contract's `prompt`, worded
// here.
// A progress prompt always precedes more server work and a message (the
// next transceive or the result), so it is held back to leave with that
// message in one write.
func (b *sessionBridge) Prompt(p transaction.Prompt, progress float64) {
	_ = b.conn.SendLater(b.ctx, protocol.Prompt{Type: protocol.TypePrompt, Text: promptText(p), Progress: &progress})
}

// retapMargin is the part of the session deadline kept for finishing
// after the card is presented again (a settling read and the result).
const retapMargin = 3 * time.Second

// retapBridge is the bridge of a session whose bridge announced the
// retap feature: it can be asked for the card again.
type retapBridge struct {
	*sessionBridge
	wait time.Duration
}

// AwaitCard implements transaction.Retapper: it asks the bridge for the
// card again and waits for a `card` message, at most b.wait and leaving
// retapMargin of the session's deadline to finish.
func (b *retapBridge) AwaitCard(ctx context.Context) (string, error) {
	progress := 0.0
	_ = b.conn.Send(b.ctx, protocol.Prompt{Type: protocol.TypePrompt, Text: promptText(transaction.PromptTapAgain), Progress: &progress})
	ctx, cancel := context.WithTimeout(ctx, b.wait)
	defer cancel()
	if dl, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl.Add(-retapMargin))
		defer cancel()
	}
	k, err := b.conn.AwaitCard(ctx)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%X", []byte(k.UID)), nil
}

// enter registers a new session unless the server is draining.
func (s *Server) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return false
	}
	s.sessions.Add(1)
	return true
}

func (s *Server) track(c *context.CancelFunc) {
	s.mu.Lock()
	s.cancels[c] = struct{}{}
	s.mu.Unlock()
}

func (s *Server) untrack(c *context.CancelFunc) {
	s.mu.Lock()
	delete(s.cancels, c)
	s.mu.Unlock()
}

// Drain stops new bridge sessions and waits for running ones until ctx
// ends; then it cancels the rest (the ledger already holds in_doubt for
// any commit they sent) and waits for them to finish recording.
func (s *Server) Drain(ctx context.Context) error {
	s.mu.Lock()
	s.draining = true
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.sessions.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	n := len(s.cancels)
	for c := range s.cancels {
		(*c)()
	}
	s.mu.Unlock()
	<-done
	return fmt.Errorf("%d sessions cancelled at the shutdown deadline", n)
}
