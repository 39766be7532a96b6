package hostile

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
	"github.com/desfire-relay/relay/protocol"
)

// The raw bridge: the bridge side of desfire-relay.v1 written directly on
// the WebSocket, relaying to a simulated card, with a hook that may rewrite
// or replace every answer. The reference bridge cannot misbehave; this one
// misbehaves exactly where a scenario says.

// sessionDeadline bounds one raw session on the test side. A server that
// panicked in a session goroutine never closes the socket; the session
// then ends here without a close code and the scenario fails.
const sessionDeadline = 8 * time.Second

// answer is what the bridge is about to send for one transceive. A hook
// may edit it: change the responses, set Frames to send those frames
// instead, or set Stall to send nothing and keep the socket open.
type answer struct {
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

// hook may rewrite the answer to exchange n (1-based) of transceive tr.
// honest holds what the card really answered (nil entries never happen).
type hook func(n int, tr *protocol.Transceive, a *answer)

// rawOpts configure one raw session.
type rawOpts struct {
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
	Card *simcard.Card
	// NoRelay, when set, says for which exchanges the commands are not
	// sent to the card (the hook alone answers).
	NoRelay func(n int) bool
	// Batch announces the batch feature.
	Batch bool
	// Hook may alter each answer.
	Hook hook
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
}

// rawOutcome is what one raw session saw.
type rawOutcome struct {
	// HTTPStatus is the status of a refused upgrade (0 when upgraded).
	HTTPStatus int
	// Transceives are the server's transceive messages in order.
	Transceives []*protocol.Transceive
	// Honest are the card's real answers, Sent what the bridge sent,
	// per exchange.
	Honest, Sent [][][]byte
	// Result is the server's result message, if one came.
	Result *protocol.Result
	// Close is the close code the server sent (-1: none, the socket
	// failed or the test deadline passed).
	Close websocket.StatusCode
	// Ready is the server's ready message, if one came.
	Ready *protocol.Ready
}

// String summarises the outcome for failure messages.
func (o rawOutcome) String() string {
	r := "none"
	if o.Result != nil {
		r = fmt.Sprintf("ok=%v status=%s", o.Result.OK, o.Result.Status)
		if o.Result.Error != nil {
			r += " code=" + o.Result.Error.Code
		}
	}
	return fmt.Sprintf("http=%d exchanges=%d result={%s} close=%d", o.HTTPStatus, len(o.Transceives), r, o.Close)
}

// code is the result's error code ("" when ok or no result).
func (o rawOutcome) code() string {
	if o.Result == nil || o.Result.Error == nil {
		return ""
	}
	return o.Result.Error.Code
}

// dialRaw opens the bridge socket; on a refused upgrade it returns the
// HTTP status and a nil conn.
func dialRaw(ctx context.Context, url string, o rawOpts) (*websocket.Conn, int, error) {
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

// runRaw performs one raw session against the bridge endpoint url.
func runRaw(url string, o rawOpts) (rawOutcome, error) {
	ctx, cancel := context.WithTimeout(context.Background(), sessionDeadline)
	defer cancel()
	out := rawOutcome{Close: -1}
	ws, status, err := dialRaw(ctx, url, o)
	if err != nil || ws == nil {
		out.HTTPStatus = status
		return out, err
	}
	defer ws.CloseNow()
	write := func(b []byte, binary bool) error {
		typ := websocket.MessageText
		if binary {
			typ = websocket.MessageBinary
		}
		if err := ws.Write(ctx, typ, b); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		return nil
	}
	if o.First != nil {
		for _, f := range o.First {
			if err := write(f, o.Binary); err != nil {
				break // the server may already have closed
			}
		}
		out.Close = drain(ctx, ws, &out)
		return out, nil
	}
	hello := map[string]any{"type": protocol.TypeHello,
		"bridge":   protocol.BridgeInfo{Name: "hostile", Version: "1", Platform: "sim"},
		"features": features(o.Batch)}
	if o.HelloUID != nil {
		hello["card"] = protocol.Card{UID: o.HelloUID}
	}
	hb, err := json.Marshal(hello)
	if err != nil {
		return out, err
	}
	if o.HelloPad > 0 {
		hello["pad"] = ""
		b, _ := json.Marshal(hello)
		hello["pad"] = strings.Repeat("x", o.HelloPad-len(b))
		if hb, err = json.Marshal(hello); err != nil || len(hb) != o.HelloPad {
			return out, fmt.Errorf("padded hello of %d bytes: %v", len(hb), err)
		}
	}
	if err := write(hb, false); err != nil {
		return out, err
	}
	for {
		_, frame, err := ws.Read(ctx)
		if err != nil {
			out.Close = websocket.CloseStatus(err)
			return out, nil
		}
		m, err := protocol.DecodeServer(frame)
		if err != nil {
			return out, fmt.Errorf("server frame: %w", err)
		}
		switch m.Type {
		case protocol.TypeReady:
			out.Ready = m.Ready
			if o.OnReady != nil {
				o.OnReady()
				out.Close = drain(ctx, ws, &out)
				return out, nil
			}
			if o.AfterReady != nil {
				for _, f := range o.AfterReady {
					if err := write(f, o.Binary); err != nil {
						break
					}
				}
				out.Close = drain(ctx, ws, &out)
				return out, nil
			}
			if o.CardUID != nil {
				if err := writeJSON(ctx, ws, map[string]any{"type": protocol.TypeCard, "uid": protocol.HexBytes(o.CardUID)}); err != nil {
					return out, err
				}
			}
		case protocol.TypeTransceive:
			out.Transceives = append(out.Transceives, m.Transceive)
			a := answer{ID: m.Transceive.ID}
			if o.Card != nil && (o.NoRelay == nil || !o.NoRelay(len(out.Transceives))) {
				a.RAPDUs, a.Error = relay(ctx, o.Card, m.Transceive)
			}
			out.Honest = append(out.Honest, clone(a.RAPDUs))
			if o.Hook != nil {
				o.Hook(len(out.Transceives), m.Transceive, &a)
			}
			out.Sent = append(out.Sent, clone(a.RAPDUs))
			switch {
			case a.Stall:
				out.Close = drain(ctx, ws, &out)
				return out, nil
			case a.Frames != nil:
				for _, f := range a.Frames {
					if err := write(f, a.Binary); err != nil {
						break
					}
				}
			default:
				msg := map[string]any{"type": protocol.TypeResponses, "id": a.ID, "rapdus": hexList(a.RAPDUs)}
				if a.Error != "" {
					msg["error"] = a.Error
				}
				if err := writeJSON(ctx, ws, msg); err != nil {
					// The server may have closed already: read its close.
					out.Close = drain(ctx, ws, &out)
					return out, nil
				}
			}
		case protocol.TypeResult:
			out.Result = m.Result
		}
	}
}

// drain reads until the server closes and returns the close code; a
// result or ready arriving meanwhile is recorded.
func drain(ctx context.Context, ws *websocket.Conn, out *rawOutcome) websocket.StatusCode {
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

// relay runs one transceive on the card by the contract's rules: in order,
// stopping after the first status word outside the command's expect list.
func relay(ctx context.Context, card *simcard.Card, tr *protocol.Transceive) ([][]byte, string) {
	var rs [][]byte
	for _, c := range tr.CAPDUs {
		expect, _ := c.ExpectSW() // validated by DecodeServer
		r, err := card.Transmit(ctx, c.APDU)
		if err != nil {
			if errors.Is(err, simcard.ErrCardRemoved) {
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

func features(batch bool) []string {
	if batch {
		return []string{protocol.FeatureBatch}
	}
	return []string{}
}

func writeJSON(ctx context.Context, ws *websocket.Conn, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode: %w", err)
	}
	if err := ws.Write(ctx, websocket.MessageText, b); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

func hexList(rs [][]byte) []protocol.HexBytes {
	out := make([]protocol.HexBytes, len(rs))
	for i, r := range rs {
		out[i] = r
	}
	return out
}

func clone(rs [][]byte) [][]byte {
	out := make([][]byte, len(rs))
	for i, r := range rs {
		out[i] = append([]byte(nil), r...)
	}
	return out
}
