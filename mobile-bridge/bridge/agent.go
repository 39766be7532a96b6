package bridge

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/protocol"
)

// AgentOptions configure a registered reader's agent connection (agent
// mode, docs/PROTOCOL.md): one WebSocket to the server that carries the
// sessions addressed to the reader, one after the other.
type AgentOptions struct {
	// URL is the agent endpoint, e.g. ws://127.0.0.1:8080/v1/agent.
	URL string
	// Credential is the reader's agent credential (POST /v1/readers).
	Credential string
	// Name, Version and Platform describe the bridge in each hello.
	Name, Version, Platform string
	// Batch announces the batch feature.
	Batch bool
	// OnPrompt shows server prompts (nil: ignored).
	OnPrompt func(text string, progress *float64)
	// OnSession observes the end of each session: its report and, when it
	// did not succeed, the error (nil: ignored).
	OnSession func(rep *Report, err error)
	// HTTPClient dials the WebSocket (nil: default).
	HTTPClient *http.Client
	// CommandTimeout bounds each APDU to the card (0: 2 s).
	CommandTimeout time.Duration
}

// CardSource waits, until ctx ends, for a card on the reader and returns
// its transport (a desk reader: the customer's card placed on it).
type CardSource func(ctx context.Context) (desfire.Transport, CardInfo, error)

// ErrAgentRefused: the server refused the agent's connection (unknown
// credential, deleted reader); reconnecting will not help.
var ErrAgentRefused = errors.New("bridge: agent connection refused")

// RunAgent keeps the agent connection up until ctx ends, reconnecting
// with a growing pause (1 s to 30 s) after a failure; it returns ctx's
// error, or ErrAgentRefused when the server refuses the credential.
func RunAgent(ctx context.Context, o AgentOptions, cards CardSource) error {
	pause := time.Second
	for {
		started := time.Now()
		err := Agent(ctx, o, cards)
		if errors.Is(err, ErrAgentRefused) || ctx.Err() != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		if time.Since(started) > time.Minute {
			pause = time.Second
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		pause = min(2*pause, 30*time.Second)
	}
}

// Agent runs one agent connection until it ends: it waits for session
// offers and runs each like a bridge session (hello, the card when one is
// on the reader, transceives, result), on the same socket.
func Agent(ctx context.Context, o AgentOptions, cards CardSource) error {
	ws, resp, err := websocket.Dial(ctx, o.URL, &websocket.DialOptions{
		Subprotocols: []string{protocol.AgentSubprotocol},
		HTTPHeader:   http.Header{"Authorization": {"Bearer " + o.Credential}},
		HTTPClient:   o.HTTPClient,
	})
	if err != nil {
		if resp != nil && (resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusNotFound) {
			return fmt.Errorf("connect: HTTP %d: %w", resp.StatusCode, ErrAgentRefused)
		}
		if resp != nil {
			return fmt.Errorf("connect: HTTP %d: %w", resp.StatusCode, err)
		}
		return fmt.Errorf("connect: %w", err)
	}
	defer ws.CloseNow()
	ws.SetReadLimit(protocol.MaxFrame)
	if ws.Subprotocol() != protocol.AgentSubprotocol {
		return fmt.Errorf("server did not select %s", protocol.AgentSubprotocol)
	}
	for {
		_, frame, err := ws.Read(ctx)
		if err != nil {
			return fmt.Errorf("agent connection ended: %w", err)
		}
		m, err := protocol.DecodeServer(frame)
		if err != nil {
			ws.Close(websocket.StatusPolicyViolation, "bad server message")
			return err
		}
		if m.Type != protocol.TypeSession {
			continue // nothing else is expected while idle; newer types are ignored
		}
		rep, err := agentSession(ctx, o, ws, cards)
		if o.OnSession != nil {
			o.OnSession(rep, err)
		}
		if err != nil && !errors.Is(err, ErrSessionFailed) {
			return err // the socket is in an unknown state
		}
	}
}

// agentSession runs one offered session: hello at once, then the card as
// soon as one is on the reader (or cancel when none comes).
func agentSession(ctx context.Context, o AgentOptions, ws *websocket.Conn, cards CardSource) (*Report, error) {
	s := &session{o: Options{Name: o.Name, Version: o.Version, Platform: o.Platform, Batch: o.Batch,
		OnPrompt: o.OnPrompt, CommandTimeout: o.CommandTimeout}, ws: ws, keep: true}
	if err := s.hello(ctx, CardInfo{}); err != nil {
		return nil, err
	}
	card, info, err := cards(ctx)
	if err != nil {
		if werr := wsjson.Write(ctx, ws, map[string]string{"type": protocol.TypeCancel}); werr != nil {
			return nil, fmt.Errorf("send cancel: %w", werr)
		}
		rep, lerr := s.loop(ctx)
		if lerr == nil {
			lerr = fmt.Errorf("no card: %w: %w", err, ErrSessionFailed)
		}
		return rep, lerr
	}
	s.card = card
	if err := wsjson.Write(ctx, ws, cardMsg{Type: protocol.TypeCard, UID: info.UID, ATS: info.ATS}); err != nil {
		return nil, fmt.Errorf("send card: %w", err)
	}
	return s.loop(ctx)
}
