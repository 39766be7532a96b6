// Package protocol defines the messages of the bridge WebSocket protocol
// desfire-relay.v1 (docs/PROTOCOL.md, from the shared contract) and decodes
// frames from untrusted bridges: size-limited, strictly typed, hex checked,
// unknown fields ignored and unknown message types refused.
package protocol

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
)

// Subprotocol is the WebSocket subprotocol a bridge must offer.
const Subprotocol = "desfire-relay.v1"

// TokenSubprotocolPrefix carries the bridge token in the subprotocol list,
// for WebSocket clients that cannot set headers (browsers): a bridge offers
// Subprotocol and TokenSubprotocolPrefix+token, and the server selects
// only Subprotocol. Tokens are base64url, valid in a subprotocol name.
const TokenSubprotocolPrefix = "desfire-relay.token."

// AgentSubprotocol is the WebSocket subprotocol of a registered reader's
// agent connection (extension, docs/PROTOCOL.md "Agent mode"): one
// long-lived socket that carries, one after the other, the sessions the
// server addresses to the reader, each exactly as on a bridge socket.
const AgentSubprotocol = "desfire-relay.agent.v1"

// MaxFrame is the largest frame, in bytes, in either direction.
const MaxFrame = 16 << 10

// Close codes of the protocol.
const (
	CloseNormal   = 1000
	CloseProtocol = 1008
	CloseInternal = 1011
	CloseTooSlow  = 4408
)

// Message types.
const (
	TypeHello      = "hello"
	TypeCard       = "card"
	TypeResponses  = "responses"
	TypeCancel     = "cancel"
	TypeReady      = "ready"
	TypeTransceive = "transceive"
	TypePrompt     = "prompt"
	TypeResult     = "result"
	// TypeSession (agent mode only) offers the agent the next session
	// addressed to its reader; the agent answers with `hello`.
	TypeSession = "session"
)

// Bridge-side error values in responses.error.
const (
	BridgeErrTagLost = "tag_lost"
	BridgeErrTimeout = "timeout"
	BridgeErrIO      = "io"
)

// Feature names a bridge may announce in hello.features.
const (
	// FeatureBatch: the bridge runs a transceive's commands in one go.
	FeatureBatch = "batch"
	// FeatureRetap (extension): after a tag_lost the bridge presents the
	// card again when the server prompts for it, with a new `card`
	// message, and the session goes on.
	FeatureRetap = "retap"
)

// ErrProtocol is wrapped by every decoding error: the session ends with
// close code 1008.
var ErrProtocol = errors.New("protocol violation")

// Limits on bridge-supplied values, well inside MaxFrame.
const (
	maxRAPDUs     = 64
	maxRAPDUBytes = 258 // 256 data bytes + SW1 SW2
	maxText       = 256
	maxFeatures   = 16
)

// BridgeInfo describes the bridge software, from hello.bridge.
type BridgeInfo struct {
	Name     string `json:"name"`
	Version  string `json:"version"`
	Platform string `json:"platform"`
}

// Card is a presented card: the UID seen at anticollision (a claim, not
// proof) and optionally the ATS.
type Card struct {
	UID HexBytes `json:"uid"`
	ATS HexBytes `json:"ats,omitempty"`
}

// Hello is the bridge's first message.
type Hello struct {
	Bridge   BridgeInfo `json:"bridge"`
	Features []string   `json:"features"`
	Card     *Card      `json:"card,omitempty"`
}

// HasFeature reports whether the bridge announced f.
func (h *Hello) HasFeature(f string) bool {
	for _, x := range h.Features {
		if x == f {
			return true
		}
	}
	return false
}

// Responses answers one transceive.
type Responses struct {
	ID     uint64     `json:"id"`
	RAPDUs []HexBytes `json:"rapdus"`
	Error  string     `json:"error,omitempty"`
}

// Cancel says the user gave up.
type Cancel struct {
	Reason string `json:"reason,omitempty"`
}

// Message is one decoded bridge frame: exactly one of the pointers is set,
// matching Type.
type Message struct {
	Type      string
	Hello     *Hello
	Card      *Card
	Responses *Responses
	Cancel    *Cancel
}

// HexBytes is binary data carried as hex (either case, no separators).
type HexBytes []byte

// UnmarshalJSON decodes a hex string.
func (h *HexBytes) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("hex field: %w", err)
	}
	if len(s)%2 != 0 {
		return fmt.Errorf("hex field of odd length %d", len(s))
	}
	out, err := hex.DecodeString(s)
	if err != nil {
		return fmt.Errorf("hex field: %w", err)
	}
	*h = out
	return nil
}

// MarshalJSON encodes upper-case hex.
func (h HexBytes) MarshalJSON() ([]byte, error) {
	out := make([]byte, 0, 2*len(h)+2)
	out = append(out, '"')
	for _, b := range h {
		out = append(out, upperHex[b>>4], upperHex[b&0x0f])
	}
	return append(out, '"'), nil
}

type envelope struct {
	Type string `json:"type"`
}

// Decode parses and validates one frame from a bridge.
func Decode(frame []byte) (*Message, error) {
	if len(frame) > MaxFrame {
		return nil, fmt.Errorf("frame of %d bytes exceeds %d: %w", len(frame), MaxFrame, ErrProtocol)
	}
	if m, ok := decodeResponsesFast(frame); ok {
		return m, nil
	}
	return decodeGeneral(frame)
}

// decodeGeneral is Decode with encoding/json, for every frame.
func decodeGeneral(frame []byte) (*Message, error) {
	var env envelope
	if err := json.Unmarshal(frame, &env); err != nil {
		return nil, fmt.Errorf("bad JSON: %w: %w", err, ErrProtocol)
	}
	m := &Message{Type: env.Type}
	var err error
	switch env.Type {
	case TypeHello:
		m.Hello = new(Hello)
		err = strict(frame, m.Hello)
		if err == nil {
			err = m.Hello.validate()
		}
	case TypeCard:
		m.Card = new(Card)
		err = strict(frame, m.Card)
		if err == nil {
			err = m.Card.validate()
		}
	case TypeResponses:
		m.Responses = new(Responses)
		err = strict(frame, m.Responses)
		if err == nil {
			err = m.Responses.validate()
		}
	case TypeCancel:
		m.Cancel = new(Cancel)
		err = strict(frame, m.Cancel)
		if err == nil && len(m.Cancel.Reason) > maxText {
			m.Cancel.Reason = m.Cancel.Reason[:maxText]
		}
	case "":
		err = errors.New("missing type")
	default:
		err = fmt.Errorf("unknown message type %q", truncate(env.Type))
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", typeName(env.Type), err, ErrProtocol)
	}
	return m, nil
}

func typeName(t string) string {
	if t == "" {
		return "message"
	}
	return truncate(t)
}

func truncate(s string) string {
	if len(s) > 32 {
		return s[:32] + "…"
	}
	return s
}

// strict decodes v (unknown fields are ignored, as the contract requires;
// trailing data after the object is refused).
func strict(frame []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(frame))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

func (h *Hello) validate() error {
	if len(h.Features) > maxFeatures {
		return fmt.Errorf("%d features", len(h.Features))
	}
	for _, s := range []string{h.Bridge.Name, h.Bridge.Version, h.Bridge.Platform} {
		if len(s) > maxText {
			return errors.New("bridge description too long")
		}
	}
	if h.Card != nil {
		return h.Card.validate()
	}
	return nil
}

func (c *Card) validate() error {
	switch len(c.UID) {
	case 4, 7, 10:
	default:
		return fmt.Errorf("card uid of %d bytes (want 4, 7 or 10)", len(c.UID))
	}
	if len(c.ATS) > 64 {
		return fmt.Errorf("ats of %d bytes", len(c.ATS))
	}
	return nil
}

func (r *Responses) validate() error {
	if r.ID == 0 {
		return errors.New("responses without id")
	}
	if len(r.RAPDUs) > maxRAPDUs {
		return fmt.Errorf("%d response APDUs", len(r.RAPDUs))
	}
	for i, a := range r.RAPDUs {
		if len(a) < 2 || len(a) > maxRAPDUBytes {
			return fmt.Errorf("response APDU %d has %d bytes", i, len(a))
		}
	}
	switch r.Error {
	case "", BridgeErrTagLost, BridgeErrTimeout, BridgeErrIO:
	default:
		return fmt.Errorf("unknown responses.error %q", truncate(r.Error))
	}
	return nil
}

// CAPDU is one command in a transceive.
type CAPDU struct {
	APDU   HexBytes `json:"apdu"`
	Expect []string `json:"expect,omitempty"`
}

// SessionOffer starts a session on an agent connection (agent mode).
type SessionOffer struct {
	Type      string `json:"type"`
	SessionID string `json:"session_id"`
	Kind      string `json:"kind"`
}

// Ready accepts the hello.
type Ready struct {
	Type      string `json:"type"`
	SessionID string `json:"session_id"`
	Kind      string `json:"kind"`
	Prompt    string `json:"prompt,omitempty"`
}

// Transceive asks the bridge to send command APDUs to the card.
type Transceive struct {
	Type   string  `json:"type"`
	ID     uint64  `json:"id"`
	CAPDUs []CAPDU `json:"capdus"`
}

// Prompt is text for the user.
type Prompt struct {
	Type     string   `json:"type"`
	Text     string   `json:"text"`
	Progress *float64 `json:"progress,omitempty"`
}

// ErrorBody is the error of a failed result.
type ErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Record is a log entry reported in a balance result.
type Record struct {
	Kind      string `json:"kind"` // "topup" or "usage"
	Timestamp uint32 `json:"timestamp"`
	Amount    int64  `json:"amount"`
	Raw       string `json:"raw,omitempty"`
}

// Result is the final outcome of a session.
type Result struct {
	Type      string     `json:"type"`
	OK        bool       `json:"ok"`
	Kind      string     `json:"kind"`
	SessionID string     `json:"session_id"`
	TopUpID   string     `json:"topup_id,omitempty"`
	Status    string     `json:"status,omitempty"`
	Amount    *int64     `json:"amount,omitempty"`
	Currency  string     `json:"currency,omitempty"`
	Balance   *int64     `json:"balance,omitempty"`
	CardUID   string     `json:"card_uid,omitempty"`
	Records   []Record   `json:"records,omitempty"`
	Error     *ErrorBody `json:"error,omitempty"`
}

// SW formats a status word for an expect list.
func SW(sw uint16) string { return string(AppendSW(make([]byte, 0, 4), sw)) }
