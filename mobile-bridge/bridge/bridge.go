// Package bridge is the reference bridge of the desfire-relay.v1 protocol:
// it connects to the relay server with a bridge token, announces the card,
// relays each transceive to the card by the contract's rules (stop at the
// first unexpected status word) and reports the result. The card is any
// desfire.Transport: the simulated card, a PC/SC reader, or a phone's NFC
// stack behind a thin adapter.
//
// A bridge is an untrusted pipe by design: it never holds keys and cannot
// read protected data; the server verifies every byte it relays.
package bridge

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/protocol"
)

// ErrTagLost is what a card transport wraps when the card left the field;
// the bridge reports it to the server as error "tag_lost".
var ErrTagLost = errors.New("bridge: card left the field")

// ErrSessionFailed is returned when the server's result says ok=false.
var ErrSessionFailed = errors.New("bridge: session failed")

// CardInfo is what the reader saw at anticollision.
type CardInfo struct {
	UID []byte
	ATS []byte
}

// Options configure one bridge session.
type Options struct {
	// URL is the bridge endpoint, e.g. ws://127.0.0.1:8080/v1/bridge.
	URL string
	// Token is the single-use bridge token.
	Token string
	// TokenInQuery sends the token as ?token= instead of the Authorization
	// header: only for a server started with allow-token-in-query, since
	// proxies write URLs to their access logs.
	TokenInQuery bool
	// TokenInSubprotocol offers the token as the subprotocol
	// desfire-relay.token.<token> instead of the Authorization header (what
	// browsers do, since they cannot set headers).
	TokenInSubprotocol bool
	// Name, Version and Platform describe the bridge in hello.
	Name, Version, Platform string
	// Batch announces the batch feature.
	Batch bool
	// OnPrompt shows server prompts (nil: ignored).
	OnPrompt func(text string, progress *float64)
	// Retap waits for the card to be presented again after it was lost,
	// when the server asks for it (its first prompt after a tag_lost);
	// nil: the bridge never presents a card again and the server ends the
	// session when it gives up waiting.
	Retap func(ctx context.Context) (CardInfo, error)
	// HTTPClient dials the WebSocket (nil: default).
	HTTPClient *http.Client
	// CommandTimeout bounds each APDU to the card (0: 2 s).
	CommandTimeout time.Duration
	// OneWay and Jitter inject wide-area latency: each transceive is held
	// OneWay±Jitter before the bridge acts on it, and each responses
	// before it is sent, so one exchange costs two one-way delays however
	// many APDUs it carries.
	OneWay, Jitter time.Duration
}

// Report is the outcome of a session.
type Report struct {
	Result    protocol.Result
	Exchanges int // transceive messages answered
	Commands  int // command APDUs sent to the card
}

// Run performs one session: connect, hello (with the card), answer
// transceives, return the result. It returns the report and, when the
// session did not succeed, an error (ErrSessionFailed wrapping the server's
// error code, or the connection/protocol failure).
func Run(ctx context.Context, o Options, card desfire.Transport, info CardInfo) (*Report, error) {
	u, err := url.Parse(o.URL)
	if err != nil {
		return nil, fmt.Errorf("bridge URL: %w", err)
	}
	hdr := http.Header{}
	subprotocols := []string{protocol.Subprotocol}
	switch {
	case o.TokenInQuery:
		q := u.Query()
		q.Set("token", o.Token)
		u.RawQuery = q.Encode()
	case o.TokenInSubprotocol:
		subprotocols = append(subprotocols, protocol.TokenSubprotocolPrefix+o.Token)
	default:
		hdr.Set("Authorization", "Bearer "+o.Token)
	}
	ws, resp, err := websocket.Dial(ctx, u.String(), &websocket.DialOptions{
		Subprotocols: subprotocols,
		HTTPHeader:   hdr,
		HTTPClient:   o.HTTPClient,
	})
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("connect: HTTP %d: %w", resp.StatusCode, err)
		}
		return nil, fmt.Errorf("connect: %w", err)
	}
	defer ws.CloseNow()
	ws.SetReadLimit(protocol.MaxFrame)
	if ws.Subprotocol() != protocol.Subprotocol {
		return nil, fmt.Errorf("server did not select %s", protocol.Subprotocol)
	}
	s := &session{o: o, ws: ws, card: card}
	return s.run(ctx, info)
}

type session struct {
	o    Options
	ws   *websocket.Conn
	card desfire.Transport
	rep  Report
	// lost: the card left the field in the last exchange and has not
	// been presented again.
	lost bool
	// keep: the socket outlives the session (an agent connection).
	keep bool
}

type helloMsg struct {
	Type     string              `json:"type"`
	Bridge   protocol.BridgeInfo `json:"bridge"`
	Features []string            `json:"features"`
	Card     *cardMsg            `json:"card,omitempty"`
}

type cardMsg struct {
	Type string            `json:"type,omitempty"`
	UID  protocol.HexBytes `json:"uid"`
	ATS  protocol.HexBytes `json:"ats,omitempty"`
}

type responsesMsg struct {
	Type   string              `json:"type"`
	ID     uint64              `json:"id"`
	RAPDUs []protocol.HexBytes `json:"rapdus"`
	Error  string              `json:"error,omitempty"`
}

func (s *session) run(ctx context.Context, info CardInfo) (*Report, error) {
	if err := s.hello(ctx, info); err != nil {
		return nil, err
	}
	return s.loop(ctx)
}

// hello announces the bridge and, when info names one, the card.
func (s *session) hello(ctx context.Context, info CardInfo) error {
	hello := helloMsg{Type: protocol.TypeHello, Bridge: protocol.BridgeInfo{Name: s.o.Name, Version: s.o.Version, Platform: s.o.Platform}, Features: []string{}}
	if s.o.Batch {
		hello.Features = append(hello.Features, protocol.FeatureBatch)
	}
	if s.o.Retap != nil {
		hello.Features = append(hello.Features, protocol.FeatureRetap)
	}
	if info.UID != nil {
		hello.Card = &cardMsg{UID: info.UID, ATS: info.ATS}
	}
	if err := wsjson.Write(ctx, s.ws, hello); err != nil {
		return fmt.Errorf("send hello: %w", err)
	}
	return nil
}

// loop answers the server until its result.
func (s *session) loop(ctx context.Context) (*Report, error) {
	for {
		_, frame, err := s.ws.Read(ctx)
		if err != nil {
			return &s.rep, fmt.Errorf("connection ended before a result: %w", err)
		}
		m, err := protocol.DecodeServer(frame)
		if err != nil {
			s.ws.Close(websocket.StatusPolicyViolation, "bad server message")
			return &s.rep, err
		}
		switch m.Type {
		case protocol.TypeReady:
			if m.Ready.Prompt != "" {
				s.prompt(m.Ready.Prompt, nil)
			}
		case protocol.TypePrompt:
			s.prompt(m.Prompt.Text, m.Prompt.Progress)
			if err := s.retap(ctx); err != nil {
				return &s.rep, err
			}
		case protocol.TypeTransceive:
			lost, err := s.transceive(ctx, m.Transceive)
			if err != nil {
				return &s.rep, err
			}
			s.lost = lost
		case protocol.TypeResult:
			s.rep.Result = *m.Result
			if !s.keep {
				s.ws.Close(websocket.StatusNormalClosure, "")
			}
			if !m.Result.OK {
				code := "unknown"
				if m.Result.Error != nil {
					code = m.Result.Error.Code + ": " + m.Result.Error.Message
				}
				return &s.rep, fmt.Errorf("%s: %w", code, ErrSessionFailed)
			}
			return &s.rep, nil
		default:
			// A message type from a newer server: ignored by contract.
		}
	}
}

// retap presents the card again when the server prompts after the card
// was lost (the contract's re-tap within a session).
func (s *session) retap(ctx context.Context) error {
	if !s.lost || s.o.Retap == nil {
		return nil
	}
	s.lost = false
	ci, err := s.o.Retap(ctx)
	if err != nil {
		return fmt.Errorf("waiting for the card again: %w", err)
	}
	if err := wsjson.Write(ctx, s.ws, cardMsg{Type: protocol.TypeCard, UID: ci.UID, ATS: ci.ATS}); err != nil {
		return fmt.Errorf("send card: %w", err)
	}
	return nil
}

func (s *session) prompt(text string, p *float64) {
	if s.o.OnPrompt != nil {
		s.o.OnPrompt(text, p)
	}
}

// transceive runs one batch by the contract's rules and answers it. It
// reports whether the card was lost.
func (s *session) transceive(ctx context.Context, t *protocol.Transceive) (lost bool, err error) {
	s.rep.Exchanges++
	if err := s.wan(ctx); err != nil {
		return false, err
	}
	ans := responsesMsg{Type: protocol.TypeResponses, ID: t.ID, RAPDUs: []protocol.HexBytes{}}
	timeout := s.o.CommandTimeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	for _, c := range t.CAPDUs {
		expect, _ := c.ExpectSW() // validated by DecodeServer
		cctx, cancel := context.WithTimeout(ctx, timeout)
		r, err := s.card.Transmit(cctx, c.APDU)
		cancel()
		s.rep.Commands++
		if err != nil {
			switch {
			case errors.Is(err, ErrTagLost):
				ans.Error, lost = protocol.BridgeErrTagLost, true
			case errors.Is(err, context.DeadlineExceeded):
				ans.Error = protocol.BridgeErrTimeout
			default:
				ans.Error = protocol.BridgeErrIO
			}
			break
		}
		ans.RAPDUs = append(ans.RAPDUs, r)
		sw, err := desfire.StatusWord(r)
		if err != nil || !desfire.Expected(expect, sw) {
			break
		}
	}
	if err := s.wan(ctx); err != nil {
		return lost, err
	}
	if err := wsjson.Write(ctx, s.ws, ans); err != nil {
		return lost, fmt.Errorf("send responses: %w", err)
	}
	return lost, nil
}

// wan waits one injected one-way delay.
func (s *session) wan(ctx context.Context) error {
	d := s.o.OneWay
	if s.o.Jitter > 0 {
		d += time.Duration(rand.Int64N(int64(2*s.o.Jitter))) - s.o.Jitter
	}
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
