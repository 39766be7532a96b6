// Package rawbridge is the bridge side of desfire-relay.v1 written directly
// on the WebSocket, for the fault-injection and hostile-bridge suites. It
// relays to a card like the reference bridge does, but a test decides
// where it misbehaves: a hook may rewrite or replace every answer, send
// other frames or stall, and cut points drop the connection (TCP close, no
// close frame) at an exact point of the exchange. The reference bridge
// cannot do either.
package rawbridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/desfire/simcard"
	"github.com/desfire-relay/relay/mobile-bridge/bridge"
	"github.com/desfire-relay/relay/protocol"
)

// Answer is what the bridge is about to send for one transceive. A hook
// may edit it: change the responses, set Frames to send those frames
// instead, or set Stall to send nothing and keep the socket open.
type Answer struct {
	ID     uint64
	RAPDUs [][]byte
	Error  string
	// Frames, when set, are sent (in order) instead of the responses
	// message; Binary sends them as binary frames.
	Frames [][]byte
	Binary bool
	// Stall sends nothing: the bridge holds the socket until the server
	// gives up.
	Stall bool
}

// Hook may rewrite the answer to exchange n (1-based) of transceive tr.
// The answer holds what the card really answered.
type Hook func(n int, tr *protocol.Transceive, a *Answer)

// Options configure one raw session.
type Options struct {
	// Name is the bridge name sent in hello.
	Name string
	// Token is the bridge token, sent as a bearer header unless Query.
	Token string
	// Query sends Token as ?token=; Header, when set, is sent as the
	// Authorization header as given (with Query this makes "both").
	Query  bool
	Header string
	// HelloUID is the UID announced in hello (nil: no card in hello).
	HelloUID []byte
	// CardUID, when set, is announced in a card message after ready.
	CardUID []byte
	// Card receives the commands (nil: nothing is relayed, the hook
	// alone answers).
	Card desfire.Transport
	// APDUTimeout bounds each command on the card (zero: the session's
	// context alone).
	APDUTimeout time.Duration
	// NoRelay, when set, says for which exchanges the commands are not
	// sent to the card (the hook alone answers).
	NoRelay func(n int) bool
	// Batch announces the batch feature.
	Batch bool
	// Hook may alter each answer.
	Hook Hook
	// HelloPad pads hello (an unknown field) to exactly this many bytes.
	HelloPad int
	// First, when set, is sent instead of hello (and the session then
	// only waits for the close).
	First [][]byte
	// OnReady, when set, runs when ready arrives (and the session then
	// sends nothing more: a bridge waiting for a card forever).
	OnReady func()
	// Binary sends First and AfterReady as binary frames.
	Binary bool
	// AfterReady, when set, is sent right after ready instead of
	// anything else (and the session then only waits for the close).
	AfterReady [][]byte
	// StopAtResult closes the socket normally as soon as the result
	// arrives instead of waiting for the server's close.
	StopAtResult bool

	// Cut points: when one returns true the bridge drops the connection
	// there. DropOnReceive: the server's n-th message (of any type)
	// arrived, before acting on it. DropAfterRelay: the server's n-th
	// message is a transceive whose commands ran on the card, not yet
	// answered (the card did the work, the server never hears of it).
	// DropAfterWrite: the bridge's n-th message (hello included) was
	// written.
	DropOnReceive  func(n int, typ string) bool
	DropAfterRelay func(n int) bool
	DropAfterWrite func(n int) bool
}

// Outcome is what one raw session saw.
type Outcome struct {
	// HTTPStatus is the status of a refused upgrade (0 when upgraded).
	HTTPStatus int
	// Server lists the types of the server's messages in order.
	Server []string
	// Written counts the messages the bridge wrote.
	Written int
	// Dropped says a cut point dropped the connection.
	Dropped bool
	// Transceives are the server's transceive messages in order.
	Transceives []*protocol.Transceive
	// Honest are the card's real answers, Sent what the bridge sent,
	// per exchange.
	Honest, Sent [][][]byte
	// Result is the server's result message, if one came.
	Result *protocol.Result
	// Close is the close code the server sent (-1: none, the socket
	// failed, the session's context ended or the bridge dropped it).
	Close websocket.StatusCode
	// Ready is the server's ready message, if one came.
	Ready *protocol.Ready
}

// String summarises the outcome for failure messages.
func (o Outcome) String() string {
	r := "none"
	if o.Result != nil {
		r = fmt.Sprintf("ok=%v status=%s", o.Result.OK, o.Result.Status)
		if o.Result.Error != nil {
			r += " code=" + o.Result.Error.Code
		}
	}
	return fmt.Sprintf("http=%d exchanges=%d result={%s} close=%d", o.HTTPStatus, len(o.Transceives), r, o.Close)
}

// Code is the result's error code ("" when ok or no result).
func (o Outcome) Code() string {
	if o.Result == nil || o.Result.Error == nil {
		return ""
	}
	return o.Result.Error.Code
}

// Dial opens the bridge socket; on a refused upgrade it returns the HTTP
// status and a nil conn.
func Dial(ctx context.Context, url string, o Options) (*websocket.Conn, int, error) {
	hdr := http.Header{}
	if o.Header != "" {
		hdr.Set("Authorization", o.Header)
	}
	if o.Query {
		url += "?token=" + o.Token
	} else if o.Header == "" && o.Token != "" {
		hdr.Set("Authorization", "Bearer "+o.Token)
	}
	ws, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{
		Subprotocols: []string{protocol.Subprotocol},
		HTTPHeader:   hdr,
	})
	if err != nil {
		if resp != nil {
			return nil, resp.StatusCode, nil
		}
		return nil, 0, fmt.Errorf("dial: %w", err)
	}
	ws.SetReadLimit(protocol.MaxFrame)
	return ws, 0, nil
}

// errDropped ends a session at a cut point.
var errDropped = errors.New("rawbridge: dropped at a cut point")

// session is one running raw session.
type session struct {
	ctx context.Context
	ws  *websocket.Conn
	o   Options
	out Outcome
}

// drop closes the connection without a close frame.
func (s *session) drop() error {
	s.out.Dropped = true
	s.ws.CloseNow()
	return errDropped
}

// write sends one frame and applies the DropAfterWrite cut point.
func (s *session) write(b []byte, binary bool) error {
	typ := websocket.MessageText
	if binary {
		typ = websocket.MessageBinary
	}
	if err := s.ws.Write(s.ctx, typ, b); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	s.out.Written++
	if s.o.DropAfterWrite != nil && s.o.DropAfterWrite(s.out.Written) {
		return s.drop()
	}
	return nil
}

// writeJSON encodes v and sends it as a text frame.
func (s *session) writeJSON(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode: %w", err)
	}
	return s.write(b, false)
}

// writeAll sends frames in order, stopping at the first failure (the
// server may already have closed).
func (s *session) writeAll(frames [][]byte, binary bool) error {
	for _, f := range frames {
		if err := s.write(f, binary); err != nil {
			return err
		}
	}
	return nil
}

// hello builds the hello message, padded to o.HelloPad bytes when set.
func hello(o Options) ([]byte, error) {
	m := map[string]any{"type": protocol.TypeHello,
		"bridge":   protocol.BridgeInfo{Name: o.Name, Version: "1", Platform: "sim"},
		"features": Features(o.Batch)}
	if o.HelloUID != nil {
		m["card"] = protocol.Card{UID: o.HelloUID}
	}
	hb, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode hello: %w", err)
	}
	if o.HelloPad > 0 {
		m["pad"] = ""
		b, err := json.Marshal(m)
		if err != nil {
			return nil, fmt.Errorf("encode hello: %w", err)
		}
		m["pad"] = strings.Repeat("x", o.HelloPad-len(b))
		if hb, err = json.Marshal(m); err != nil {
			return nil, fmt.Errorf("encode padded hello: %w", err)
		}
		if len(hb) != o.HelloPad {
			return nil, fmt.Errorf("padded hello of %d bytes, want %d", len(hb), o.HelloPad)
		}
	}
	return hb, nil
}

// Run performs one raw session against the bridge endpoint url until the
// server closes, a cut point drops the connection or ctx ends. A session
// ended by the server or a cut point is not an error; the outcome says
// how it ended.
func Run(ctx context.Context, url string, o Options) (Outcome, error) {
	if c, ok := o.Card.(*simcard.Card); ok && c == nil {
		o.Card = nil // a nil *simcard.Card means no card, as documented
	}
	s := &session{ctx: ctx, o: o, out: Outcome{Close: -1}}
	ws, status, err := Dial(ctx, url, o)
	if err != nil || ws == nil {
		s.out.HTTPStatus = status
		return s.out, err
	}
	defer ws.CloseNow()
	s.ws = ws
	err = s.run()
	if errors.Is(err, errDropped) {
		err = nil
	}
	return s.out, err
}

// run is the bridge side of the session.
func (s *session) run() error {
	o := s.o
	if o.First != nil {
		if err := s.writeAll(o.First, o.Binary); errors.Is(err, errDropped) {
			return err
		}
		s.out.Close = Drain(s.ctx, s.ws, &s.out)
		return nil
	}
	hb, err := hello(o)
	if err != nil {
		return err
	}
	if err := s.write(hb, false); err != nil {
		return err
	}
	for {
		_, frame, err := s.ws.Read(s.ctx)
		if err != nil {
			s.out.Close = websocket.CloseStatus(err)
			return nil
		}
		m, err := protocol.DecodeServer(frame)
		if err != nil {
			return fmt.Errorf("server frame: %w", err)
		}
		s.out.Server = append(s.out.Server, m.Type)
		n := len(s.out.Server)
		if o.DropOnReceive != nil && o.DropOnReceive(n, m.Type) {
			return s.drop()
		}
		switch m.Type {
		case protocol.TypeReady:
			s.out.Ready = m.Ready
			if o.OnReady != nil {
				o.OnReady()
				s.out.Close = Drain(s.ctx, s.ws, &s.out)
				return nil
			}
			if o.AfterReady != nil {
				if err := s.writeAll(o.AfterReady, o.Binary); errors.Is(err, errDropped) {
					return err
				}
				s.out.Close = Drain(s.ctx, s.ws, &s.out)
				return nil
			}
			if o.CardUID != nil {
				if err := s.writeJSON(map[string]any{"type": protocol.TypeCard, "uid": protocol.HexBytes(o.CardUID)}); err != nil {
					return err
				}
			}
		case protocol.TypeTransceive:
			if done, err := s.transceive(n, m.Transceive); done || err != nil {
				return err
			}
		case protocol.TypeResult:
			s.out.Result = m.Result
			if o.StopAtResult {
				s.ws.Close(websocket.StatusNormalClosure, "")
				return nil
			}
		}
	}
}

// transceive relays the server's n-th message, a transceive, and sends
// the (possibly rewritten) answer; done reports the session ended.
func (s *session) transceive(n int, tr *protocol.Transceive) (done bool, err error) {
	o := s.o
	s.out.Transceives = append(s.out.Transceives, tr)
	k := len(s.out.Transceives)
	a := Answer{ID: tr.ID}
	if o.Card != nil && (o.NoRelay == nil || !o.NoRelay(k)) {
		a.RAPDUs, a.Error = Relay(s.ctx, o.Card, tr, o.APDUTimeout)
	}
	s.out.Honest = append(s.out.Honest, Clone(a.RAPDUs))
	if o.DropAfterRelay != nil && o.DropAfterRelay(n) {
		return true, s.drop()
	}
	if o.Hook != nil {
		o.Hook(k, tr, &a)
	}
	s.out.Sent = append(s.out.Sent, Clone(a.RAPDUs))
	switch {
	case a.Stall:
		s.out.Close = Drain(s.ctx, s.ws, &s.out)
		return true, nil
	case a.Frames != nil:
		if err := s.writeAll(a.Frames, a.Binary); errors.Is(err, errDropped) {
			return true, err
		}
	default:
		msg := map[string]any{"type": protocol.TypeResponses, "id": a.ID, "rapdus": HexList(a.RAPDUs)}
		if a.Error != "" {
			msg["error"] = a.Error
		}
		if err := s.writeJSON(msg); err != nil {
			if errors.Is(err, errDropped) {
				return true, err
			}
			// The server may have closed already: read its close.
			s.out.Close = Drain(s.ctx, s.ws, &s.out)
			return true, nil
		}
	}
	return false, nil
}

// Drain reads until the server closes and returns the close code; a
// result, ready or transceive arriving meanwhile is recorded in out.
func Drain(ctx context.Context, ws *websocket.Conn, out *Outcome) websocket.StatusCode {
	for {
		_, frame, err := ws.Read(ctx)
		if err != nil {
			return websocket.CloseStatus(err)
		}
		if m, err := protocol.DecodeServer(frame); err == nil {
			switch m.Type {
			case protocol.TypeResult:
				out.Result = m.Result
			case protocol.TypeReady:
				out.Ready = m.Ready
			case protocol.TypeTransceive:
				out.Transceives = append(out.Transceives, m.Transceive)
			}
		}
	}
}

// Relay runs one transceive on the card by the contract's rules: in order,
// stopping after the first status word outside the command's expect list;
// a card that left the field answers tag_lost, any other failure io.
// apduTimeout, when positive, bounds each command.
func Relay(ctx context.Context, card desfire.Transport, tr *protocol.Transceive, apduTimeout time.Duration) ([][]byte, string) {
	var rs [][]byte
	for _, c := range tr.CAPDUs {
		expect, _ := c.ExpectSW() // validated by DecodeServer
		cctx, cancel := ctx, context.CancelFunc(func() {})
		if apduTimeout > 0 {
			cctx, cancel = context.WithTimeout(ctx, apduTimeout)
		}
		r, err := card.Transmit(cctx, c.APDU)
		cancel()
		if err != nil {
			if errors.Is(err, simcard.ErrCardRemoved) || errors.Is(err, bridge.ErrTagLost) {
				return rs, protocol.BridgeErrTagLost
			}
			return rs, protocol.BridgeErrIO
		}
		rs = append(rs, r)
		sw, err := desfire.StatusWord(r)
		if err != nil || !desfire.Expected(expect, sw) {
			break
		}
	}
	return rs, ""
}

// Features lists the features a bridge announces.
func Features(batch bool) []string {
	if batch {
		return []string{protocol.FeatureBatch}
	}
	return []string{}
}

// HexList converts responses to the contract's hex strings.
func HexList(rs [][]byte) []protocol.HexBytes {
	out := make([]protocol.HexBytes, len(rs))
	for i, r := range rs {
		out[i] = r
	}
	return out
}

// Clone deep-copies a list of responses.
func Clone(rs [][]byte) [][]byte {
	out := make([][]byte, len(rs))
	for i, r := range rs {
		out[i] = append([]byte(nil), r...)
	}
	return out
}
