// Package relay turns a bridge's WebSocket into a desfire transport. It
// sends `transceive` messages, waits (bounded) for the matching
// `responses`, and checks them against the transceive rules of the
// desfire-relay.v1 contract before handing response APDUs to the card
// session. Everything from the bridge is untrusted; any violation ends the
// session with close code 1008.
package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/protocol"
)

// Errors that end an exchange.
var (
	// ErrTagLost: the bridge reported that the card left the field.
	ErrTagLost = fmt.Errorf("relay: %w", desfire.ErrTagLost)
	// ErrBridgeIO: the bridge reported a reader failure: for the session
	// the card is gone, as with tag_lost.
	ErrBridgeIO = fmt.Errorf("relay: reader failure: %w", desfire.ErrTagLost)
	// ErrBridgeTimeout: the bridge reported that the card did not answer.
	ErrBridgeTimeout = fmt.Errorf("relay: card timeout: %w", desfire.ErrBridgeTimeout)
	// ErrTooSlow: the bridge missed the exchange or session deadline.
	ErrTooSlow = fmt.Errorf("relay: %w", desfire.ErrBridgeTimeout)
	// ErrCancelled: the bridge sent cancel.
	ErrCancelled = fmt.Errorf("relay: %w", desfire.ErrCancelled)
	// ErrClosed: the socket closed or failed.
	ErrClosed = errors.New("relay: connection closed")
)

// MaxOtherPerExchange bounds the messages other than `responses` (card
// announcements) a bridge may send while one transceive is outstanding: a
// bridge that floods them ends its session with a protocol violation.
const MaxOtherPerExchange = 8

// Conn is one bridge connection. It owns a reader goroutine, stopped and
// waited for by Close.
type Conn struct {
	ws       *websocket.Conn
	exchange time.Duration

	msgs    chan *protocol.Message
	done    chan struct{}
	ended   chan struct{} // closed when the reader goroutine stops
	wg      sync.WaitGroup
	readErr error // set before msgs is closed

	mu        sync.Mutex // guards nextID, exchanges, fault, cards
	cards     []*protocol.Card
	nextID    uint64
	exchanges int
	fault     error

	// OnExchange, when set, observes each exchange's latency.
	OnExchange func(time.Duration)
	// OnGap, when set, observes the server's own time between exchanges:
	// from a responses message arriving to the next transceive being
	// sent (verifying MACs, computing the next batch, ledger and lock
	// work). It is what the server adds to each wide-area round trip.
	OnGap func(time.Duration)

	lastEnd time.Time // when the previous exchange ended (session goroutine only)

	sendMu  sync.Mutex // one Send at a time: guards sendBuf
	sendBuf []byte     // reused for encoded messages (the socket does not keep it)
	held    *heldConn  // set by Accept: the connection SendLater holds writes on
}

// New wraps an accepted WebSocket. exchange bounds each wait for a
// responses message.
func New(ws *websocket.Conn, exchange time.Duration) *Conn {
	c := &Conn{ws: ws, exchange: exchange, msgs: make(chan *protocol.Message, 4), done: make(chan struct{}), ended: make(chan struct{})}
	ws.SetReadLimit(-1) // enforced per frame in readFrame
	c.wg.Add(1)
	go c.readLoop()
	return c
}

func (c *Conn) readLoop() {
	defer c.wg.Done()
	defer close(c.ended)
	defer close(c.msgs)
	for {
		frame, err := c.readFrame()
		if err != nil {
			c.readErr = err
			return
		}
		m, err := protocol.Decode(frame)
		if err != nil {
			c.readErr = err
			return
		}
		select {
		case c.msgs <- m:
		case <-c.done:
			return
		}
	}
}

// readFrame reads one text message of at most protocol.MaxFrame bytes. The
// library's own limit is disabled so that an oversized frame is reported as
// a protocol violation (1008), as the contract says, rather than 1009.
func (c *Conn) readFrame() ([]byte, error) {
	typ, r, err := c.ws.Reader(context.Background())
	if err != nil {
		var ce websocket.CloseError
		if errors.As(err, &ce) {
			return nil, fmt.Errorf("bridge closed the socket (%d): %w", ce.Code, ErrClosed)
		}
		return nil, fmt.Errorf("read: %w: %w", err, ErrClosed)
	}
	if typ != websocket.MessageText {
		return nil, fmt.Errorf("binary frame: %w", protocol.ErrProtocol)
	}
	frame, err := io.ReadAll(io.LimitReader(r, protocol.MaxFrame+1))
	if err != nil {
		return nil, fmt.Errorf("read: %w: %w", err, ErrClosed)
	}
	if len(frame) > protocol.MaxFrame {
		return nil, fmt.Errorf("frame larger than %d bytes: %w", protocol.MaxFrame, protocol.ErrProtocol)
	}
	return frame, nil
}

// Ended is closed when the socket stops delivering messages (closed by
// the peer, broken, or a frame the contract refuses).
func (c *Conn) Ended() <-chan struct{} { return c.ended }

// Waiting reports whether a message arrived that no one has read yet (on
// an idle agent connection, where the agent must be silent).
func (c *Conn) Waiting() bool { return len(c.msgs) > 0 }

// Ping sends a WebSocket ping and waits for the pong (the reader goroutine
// handles it).
func (c *Conn) Ping(ctx context.Context) error { return c.ws.Ping(ctx) }

// Next waits for the next message from the bridge until ctx ends. A
// decoding failure or a closed socket is returned as an error.
func (c *Conn) Next(ctx context.Context) (*protocol.Message, error) {
	c.flushHeld()
	select {
	case m, ok := <-c.msgs:
		if !ok {
			return nil, c.noteFault(c.readErr)
		}
		return m, nil
	case <-ctx.Done():
		return nil, c.noteFault(fmt.Errorf("waiting for the bridge: %w", ErrTooSlow))
	}
}

// jsonAppender is a message with a hand-written encoder (the transceive of
// every exchange) that writes what encoding/json writes.
type jsonAppender interface{ AppendJSON([]byte) []byte }

// Send writes one server message.
func (c *Conn) Send(ctx context.Context, v any) error {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	var b []byte
	if a, ok := v.(jsonAppender); ok {
		c.sendBuf = a.AppendJSON(c.sendBuf[:0])
		b = c.sendBuf
	} else {
		var err error
		if b, err = json.Marshal(v); err != nil {
			return fmt.Errorf("encode %T: %w", v, err)
		}
	}
	if len(b) > protocol.MaxFrame {
		return fmt.Errorf("server message of %d bytes exceeds the frame limit", len(b))
	}
	ctx, cancel := context.WithTimeout(ctx, c.exchange)
	defer cancel()
	if err := c.ws.Write(ctx, websocket.MessageText, b); err != nil {
		return fmt.Errorf("write: %w: %w", err, ErrClosed)
	}
	return nil
}

// SendLater writes one server message that need not leave before the
// next: it goes out with the next message or close frame in one write
// call, and at the latest when the connection starts waiting for the
// bridge (Next, AwaitCard). Progress prompts are sent so. On a Conn made
// by New it is Send.
func (c *Conn) SendLater(ctx context.Context, v any) error {
	if c.held == nil {
		return c.Send(ctx, v)
	}
	c.held.setHold(true)
	defer c.held.setHold(false)
	return c.Send(ctx, v)
}

// flushHeld sends what SendLater held back, before a wait on the bridge.
// A failed write breaks the socket, which the reader then reports.
func (c *Conn) flushHeld() {
	if c.held != nil {
		_ = c.held.flush()
	}
}

// Exchanges is the number of transceive round trips so far.
func (c *Conn) Exchanges() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.exchanges
}

// TakeCard returns a card message that arrived during an exchange, if any.
func (c *Conn) TakeCard() *protocol.Card {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.cards) == 0 {
		return nil
	}
	k := c.cards[0]
	c.cards = c.cards[1:]
	return k
}

// AwaitCard returns the next card the bridge presents: one whose `card`
// message arrived during an exchange, or the next `card` message until
// ctx ends. Running out of time is not a fault of the bridge (the
// passenger did not tap again), so it leaves the connection usable for
// the result. A cancel ends the wait with ErrCancelled; any other message
// is a protocol violation.
func (c *Conn) AwaitCard(ctx context.Context) (*protocol.Card, error) {
	if k := c.TakeCard(); k != nil {
		return k, nil
	}
	c.flushHeld()
	for {
		var m *protocol.Message
		select {
		case msg, ok := <-c.msgs:
			if !ok {
				return nil, c.noteFault(c.readErr)
			}
			m = msg
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for the card to be presented again: %w", ctx.Err())
		}
		switch m.Type {
		case protocol.TypeCard:
			return m.Card, nil
		case protocol.TypeCancel:
			return nil, ErrCancelled
		default:
			return nil, c.noteFault(fmt.Errorf("%s while waiting for the card: %w", m.Type, protocol.ErrProtocol))
		}
	}
}

// Transmit implements desfire.Transport with a one-command transceive.
func (c *Conn) Transmit(ctx context.Context, capdu []byte) ([]byte, error) {
	rs, err := c.TransmitBatch(ctx, []desfire.BatchCommand{{APDU: capdu}})
	if err != nil {
		return nil, err
	}
	if len(rs) != 1 {
		return nil, fmt.Errorf("%d responses to one command: %w", len(rs), protocol.ErrProtocol)
	}
	return rs[0], nil
}

// Fault returns the first error that must end the session with a
// protocol close code (violation, too slow, socket closed), or nil.
func (c *Conn) Fault() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fault
}

func (c *Conn) noteFault(err error) error {
	if errors.Is(err, protocol.ErrProtocol) || errors.Is(err, ErrTooSlow) || errors.Is(err, ErrClosed) {
		c.mu.Lock()
		if c.fault == nil {
			c.fault = err
		}
		c.mu.Unlock()
	}
	return err
}

// TransmitBatch implements desfire.Batcher: one transceive, one responses.
func (c *Conn) TransmitBatch(ctx context.Context, cmds []desfire.BatchCommand) ([][]byte, error) {
	if len(cmds) == 0 {
		return nil, nil
	}
	start := time.Now()
	if c.OnGap != nil && !c.lastEnd.IsZero() {
		c.OnGap(start.Sub(c.lastEnd))
	}
	rs, err := c.transceive(ctx, cmds)
	c.lastEnd = time.Now()
	if c.OnExchange != nil {
		c.OnExchange(c.lastEnd.Sub(start))
	}
	return rs, c.noteFault(err)
}

func (c *Conn) transceive(ctx context.Context, cmds []desfire.BatchCommand) ([][]byte, error) {
	c.mu.Lock()
	c.nextID++
	id := c.nextID
	c.exchanges++
	c.mu.Unlock()

	msg := protocol.Transceive{Type: protocol.TypeTransceive, ID: id, CAPDUs: make([]protocol.CAPDU, len(cmds))}
	for i, cmd := range cmds {
		msg.CAPDUs[i].APDU = cmd.APDU
		for _, sw := range cmd.Expect {
			msg.CAPDUs[i].Expect = append(msg.CAPDUs[i].Expect, protocol.SW(sw))
		}
	}
	if err := c.Send(ctx, msg); err != nil {
		return nil, err
	}
	wait, cancel := context.WithTimeout(ctx, c.exchange)
	defer cancel()
	for others := 0; ; others++ {
		if others > MaxOtherPerExchange {
			return nil, fmt.Errorf("more than %d messages other than responses in one exchange: %w", MaxOtherPerExchange, protocol.ErrProtocol)
		}
		m, err := c.Next(wait)
		if err != nil {
			return nil, err
		}
		switch m.Type {
		case protocol.TypeResponses:
			return c.check(id, cmds, m.Responses)
		case protocol.TypeCancel:
			return nil, ErrCancelled
		case protocol.TypeCard:
			// A card announced during an exchange changes nothing now; it
			// is kept (a few at most) for a re-tap the server may ask for.
			c.mu.Lock()
			if len(c.cards) < 4 {
				c.cards = append(c.cards, m.Card)
			}
			c.mu.Unlock()
		default:
			return nil, fmt.Errorf("%s during an exchange: %w", m.Type, protocol.ErrProtocol)
		}
	}
}

// check applies the transceive rules to an answer.
func (c *Conn) check(id uint64, cmds []desfire.BatchCommand, r *protocol.Responses) ([][]byte, error) {
	if r.ID != id {
		return nil, fmt.Errorf("responses id %d, expected %d: %w", r.ID, id, protocol.ErrProtocol)
	}
	if len(r.RAPDUs) > len(cmds) {
		return nil, fmt.Errorf("%d responses to %d commands: %w", len(r.RAPDUs), len(cmds), protocol.ErrProtocol)
	}
	out := make([][]byte, len(r.RAPDUs))
	for i, a := range r.RAPDUs {
		sw, err := desfire.StatusWord(a)
		if err != nil {
			return nil, fmt.Errorf("response %d: %w: %w", i, err, protocol.ErrProtocol)
		}
		if !desfire.Expected(cmds[i].Expect, sw) && i != len(r.RAPDUs)-1 {
			return nil, fmt.Errorf("bridge went on after unexpected status %04X at %d: %w", sw, i, protocol.ErrProtocol)
		}
		out[i] = a
	}
	switch r.Error {
	case protocol.BridgeErrTagLost:
		return out, ErrTagLost
	case protocol.BridgeErrTimeout:
		return out, ErrBridgeTimeout
	case protocol.BridgeErrIO:
		return out, ErrBridgeIO
	}
	if n := len(out); n < len(cmds) {
		if n == 0 {
			return nil, fmt.Errorf("no responses and no error: %w", protocol.ErrProtocol)
		}
		sw, _ := desfire.StatusWord(out[n-1])
		if desfire.Expected(cmds[n-1].Expect, sw) {
			return nil, fmt.Errorf("%d of %d responses after an expected status: %w", n, len(cmds), protocol.ErrProtocol)
		}
	}
	return out, nil
}

// Close closes the socket with code and reason and waits for the reader.
func (c *Conn) Close(code websocket.StatusCode, reason string) error {
	if len(reason) > 120 {
		reason = reason[:120]
	}
	err := c.ws.Close(code, reason)
	close(c.done)
	c.wg.Wait()
	return err
}

// Plain hides the Batcher method so the card layer sends one command per
// exchange (bridges without the batch feature).
type Plain struct{ C *Conn }

// Transmit implements desfire.Transport.
func (p Plain) Transmit(ctx context.Context, capdu []byte) ([]byte, error) {
	return p.C.Transmit(ctx, capdu)
}
