package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/coder/websocket"

	"github.com/desfire-relay/relay/protocol"
	"github.com/desfire-relay/relay/server/relay"
)

// errCancelled: the bridge sent cancel before presenting a card.
var errCancelled = errors.New("server: bridge cancelled before a card")

// acceptBridge upgrades a bridge (or agent) request to a WebSocket of
// the given subprotocol, feeding the exchange metrics.
func (s *Server) acceptBridge(w http.ResponseWriter, r *http.Request, subprotocol string) (*relay.Conn, error) {
	conn, err := relay.Accept(w, r, &websocket.AcceptOptions{
		Subprotocols:    []string{subprotocol},
		OriginPatterns:  []string{"*"}, // bridges and agents authenticate with a token or credential, not cookies
		CompressionMode: websocket.CompressionDisabled,
	}, s.o.ExchangeTimeout)
	if err != nil {
		return nil, err
	}
	conn.OnExchange = func(d time.Duration) { s.metrics.exchangeLatency.Observe(d.Seconds()) }
	conn.OnGap = func(d time.Duration) { s.metrics.serverGap.Observe(d.Seconds()) }
	return conn, nil
}

// runBridgeSocket serves one session on an upgraded bridge socket: under
// the session deadline (cancelled on shutdown), counted as active, with
// the exchange metrics, and closed with the code serve returns.
func (s *Server) runBridgeSocket(r *http.Request, conn *relay.Conn, serve func(context.Context, *relay.Conn) (websocket.StatusCode, string)) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), s.o.SessionTimeout)
	defer cancel()
	s.track(&cancel)
	defer s.untrack(&cancel)
	s.metrics.sessionsActive.Inc()
	defer s.metrics.sessionsActive.Dec()
	code, reason := serve(ctx, conn)
	_ = conn.Close(code, reason)
}

// awaitCard runs the opening of every bridge session: hello (within one
// exchange timeout), ready with prompt, then the card (in hello or a card
// message). It returns errCancelled when the bridge cancels first, and a
// protocol.ErrProtocol error for any other message.
func (s *Server) awaitCard(ctx context.Context, conn *relay.Conn, ready protocol.Ready) (*protocol.Hello, *protocol.Card, error) {
	helloCtx, cancel := context.WithTimeout(ctx, s.o.ExchangeTimeout)
	m, err := conn.Next(helloCtx)
	cancel()
	if err != nil {
		return nil, nil, err
	}
	if m.Type != protocol.TypeHello {
		return nil, nil, fmt.Errorf("first message is %s, not hello: %w", m.Type, protocol.ErrProtocol)
	}
	hello := m.Hello
	ready.Type = protocol.TypeReady
	if err := conn.Send(ctx, ready); err != nil {
		return nil, nil, err
	}
	card := hello.Card
	for card == nil {
		m, err := conn.Next(ctx)
		if err != nil {
			return nil, nil, err
		}
		switch m.Type {
		case protocol.TypeCard:
			card = m.Card
		case protocol.TypeCancel:
			return hello, nil, errCancelled
		default:
			return nil, nil, fmt.Errorf("%s before a card: %w", m.Type, protocol.ErrProtocol)
		}
	}
	return hello, card, nil
}
