package faults

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/coder/websocket"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/mobile-bridge/bridge"
	"github.com/desfire-relay/relay/protocol"
)

// A raw bridge: the desfire-relay.v1 bridge side written directly on the
// WebSocket, so the connection can be dropped at an exact point of the
// exchange, which the reference bridge cannot do.

// cutKind says where the raw bridge drops the connection.
type cutKind string

const (
	// cutRecv: right after the server's m-th message arrived, before
	// acting on it.
	cutRecv cutKind = "recv"
	// cutExec: the server's m-th message is a transceive; its commands
	// run on the card, then the connection is dropped without answering
	// (the card did the work, the server never hears of it).
	cutExec cutKind = "exec"
	// cutSent: right after the bridge's m-th message was written.
	cutSent cutKind = "sent"
	// cutNone: no cut (probe).
	cutNone cutKind = ""
)

// cut is one drop point.
type cut struct {
	kind cutKind
	m    int
}

func (c cut) String() string { return fmt.Sprintf("%s-%d", c.kind, c.m) }

// rawTrace is what a raw session saw: the types of the server's messages
// in order and the number of messages the bridge sent.
type rawTrace struct {
	server []string
	sent   int
	result *protocol.Result
	cut    bool
}

// rawSession runs one bridge session over card, dropping the connection
// (TCP close, no close frame) at c.
func rawSession(ctx context.Context, url, token string, card desfire.Transport, uid []byte, batch bool, c cut) (rawTrace, error) {
	var tr rawTrace
	ws, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{
		Subprotocols: []string{protocol.Subprotocol},
		HTTPHeader:   http.Header{"Authorization": {"Bearer " + token}},
	})
	if err != nil {
		if resp != nil {
			return tr, fmt.Errorf("connect: HTTP %d: %w", resp.StatusCode, err)
		}
		return tr, fmt.Errorf("connect: %w", err)
	}
	defer ws.CloseNow()
	ws.SetReadLimit(protocol.MaxFrame)

	send := func(v any) (dropped bool, err error) {
		b, err := json.Marshal(v)
		if err != nil {
			return false, err
		}
		if err := ws.Write(ctx, websocket.MessageText, b); err != nil {
			return false, fmt.Errorf("write: %w", err)
		}
		tr.sent++
		if c.kind == cutSent && tr.sent == c.m {
			tr.cut = true
			return true, ws.CloseNow()
		}
		return false, nil
	}
	features := []string{}
	if batch {
		features = append(features, protocol.FeatureBatch)
	}
	hello := map[string]any{"type": protocol.TypeHello,
		"bridge":   protocol.BridgeInfo{Name: "faults-raw", Version: "1", Platform: "sim"},
		"features": features, "card": protocol.Card{UID: uid}}
	if dropped, err := send(hello); dropped || err != nil {
		return tr, err
	}
	for {
		_, frame, err := ws.Read(ctx)
		if err != nil {
			return tr, fmt.Errorf("read: %w", err)
		}
		m, err := protocol.DecodeServer(frame)
		if err != nil {
			return tr, err
		}
		tr.server = append(tr.server, m.Type)
		n := len(tr.server)
		if c.kind == cutRecv && n == c.m {
			tr.cut = true
			return tr, ws.CloseNow()
		}
		switch m.Type {
		case protocol.TypeTransceive:
			ans, err := relayBatch(ctx, card, m.Transceive)
			if err != nil {
				return tr, err
			}
			if c.kind == cutExec && n == c.m {
				tr.cut = true
				return tr, ws.CloseNow()
			}
			if dropped, err := send(ans); dropped || err != nil {
				return tr, err
			}
		case protocol.TypeResult:
			tr.result = m.Result
			ws.Close(websocket.StatusNormalClosure, "")
			return tr, nil
		}
	}
}

// relayBatch runs one transceive on the card by the contract's rules.
func relayBatch(ctx context.Context, card desfire.Transport, t *protocol.Transceive) (map[string]any, error) {
	rapdus := []protocol.HexBytes{}
	ans := map[string]any{"type": protocol.TypeResponses, "id": t.ID}
	for _, c := range t.CAPDUs {
		expect, err := c.ExpectSW()
		if err != nil {
			return nil, err
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		r, err := card.Transmit(cctx, c.APDU)
		cancel()
		if err != nil {
			ans["error"] = protocol.BridgeErrIO
			if errors.Is(err, bridge.ErrTagLost) {
				ans["error"] = protocol.BridgeErrTagLost
			}
			break
		}
		rapdus = append(rapdus, r)
		sw, err := desfire.StatusWord(r)
		if err != nil || !desfire.Expected(expect, sw) {
			break
		}
	}
	ans["rapdus"] = rapdus
	return ans, nil
}
