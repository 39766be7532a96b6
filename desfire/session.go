package desfire

import (
	"context"
	"errors"
	"fmt"
)

// DefaultMaxFrame is the largest native payload (after the command code)
// put into one frame before the rest goes in additional frames (0xAF). The
// DESFire EV1/EV2 frame size with the default FSC of 64 bytes leaves 59
// bytes for the payload of an ISO-wrapped native command.
const DefaultMaxFrame = 59

// MaxResponse bounds a chained response (all frames together).
const MaxResponse = 8 << 10

// Card is a session with one card over a Transport: it seals commands with
// the active secure channel, splits and joins additional frames, and
// verifies answers. It is not safe for concurrent use; a session is one
// goroutine.
type Card struct {
	t        Transport
	ch       Channel
	maxFrame int
	trips    int
}

// NewCard returns a session over t.
func NewCard(t Transport) *Card {
	return &Card{t: t, maxFrame: DefaultMaxFrame}
}

// SetMaxFrame changes the frame payload size (tests, large-frame cards).
func (c *Card) SetMaxFrame(n int) {
	if n >= 8 && n <= MaxShortData {
		c.maxFrame = n
	}
}

// Channel returns the active secure channel, or nil.
func (c *Card) Channel() Channel { return c.ch }

// SetChannel installs a channel (after an authentication run elsewhere).
func (c *Card) SetChannel(ch Channel) { c.ch = ch }

// Deauthenticate drops the channel.
func (c *Card) Deauthenticate() {
	if c.ch != nil {
		c.ch.Close()
	}
	c.ch = nil
}

// RoundTrips is how many transport round trips the session used.
func (c *Card) RoundTrips() int { return c.trips }

func (c *Card) transmit(ctx context.Context, apdu []byte) (byte, []byte, error) {
	c.trips++
	r, err := c.t.Transmit(ctx, apdu)
	if err != nil {
		return 0, nil, err
	}
	return SplitResponse(r)
}

// fail closes the channel after an error the channel did not see itself.
func (c *Card) fail(err error) error {
	if c.ch != nil {
		c.ch.Close()
	}
	return err
}

// seal returns the native payload and the reply verifier for cmd.
func (c *Card) seal(cmd *Command) ([]byte, Reply, error) {
	if c.ch != nil {
		return c.ch.Seal(cmd)
	}
	if cmd.Mode != CommPlain || cmd.RespMode != CommPlain {
		return nil, nil, fmt.Errorf("%s: %w", cmd.name(), ErrNotAuthenticated)
	}
	payload := append(append([]byte(nil), cmd.Header...), cmd.Data...)
	return payload, plainReply{cmd}, nil
}

func (cmd *Command) name() string {
	if cmd.Name != "" {
		return cmd.Name
	}
	return fmt.Sprintf("command %02X", cmd.Code)
}

// plainReply verifies answers when no channel is active.
type plainReply struct{ cmd *Command }

func (p plainReply) Open(status byte, data []byte) ([]byte, error) {
	if status != StatusOK {
		return nil, NewStatusError(status)
	}
	if p.cmd.RespLen < -1 && len(data)%-p.cmd.RespLen != 0 {
		return nil, ErrLongResponse
	}
	if p.cmd.RespLen >= 0 && len(data) != p.cmd.RespLen {
		if len(data) < p.cmd.RespLen {
			return nil, ErrShortResponse
		}
		return nil, ErrLongResponse
	}
	return data, nil
}

// Exec runs one command: seal, send in as many frames as needed, collect
// a chained answer, verify. On any error the channel is closed.
func (c *Card) Exec(ctx context.Context, cmd *Command) ([]byte, error) {
	payload, reply, err := c.seal(cmd)
	if err != nil {
		return nil, c.fail(fmt.Errorf("%s: %w", cmd.name(), err))
	}
	status, data, err := c.exchange(ctx, cmd.Code, payload)
	if err != nil {
		return nil, c.fail(fmt.Errorf("%s: %w", cmd.name(), err))
	}
	out, err := reply.Open(status, data)
	if err != nil {
		return nil, c.fail(fmt.Errorf("%s: %w", cmd.name(), err))
	}
	return out, nil
}

// exchange sends code+payload with additional frames both ways and returns
// the final status and all response data.
func (c *Card) exchange(ctx context.Context, code byte, payload []byte) (byte, []byte, error) {
	first := payload
	if len(first) > c.maxFrame {
		first = payload[:c.maxFrame]
	}
	apdu, err := WrapNative(code, first)
	if err != nil {
		return 0, nil, err
	}
	status, data, err := c.transmit(ctx, apdu)
	if err != nil {
		return 0, nil, err
	}
	for rest := payload[len(first):]; len(rest) > 0; {
		if status != StatusAdditionalFrame || len(data) != 0 {
			if status == StatusAdditionalFrame {
				return 0, nil, fmt.Errorf("data during a chained command: %w", ErrUnexpectedStatus)
			}
			return status, data, nil // the card refused early; the reply reports it
		}
		n := min(len(rest), c.maxFrame)
		if apdu, err = WrapNative(StatusAdditionalFrame, rest[:n]); err != nil {
			return 0, nil, err
		}
		rest = rest[n:]
		if status, data, err = c.transmit(ctx, apdu); err != nil {
			return 0, nil, err
		}
	}
	all := append([]byte(nil), data...)
	for status == StatusAdditionalFrame {
		if len(all) > MaxResponse {
			return 0, nil, fmt.Errorf("chained response over %d bytes: %w", MaxResponse, ErrLongResponse)
		}
		apdu, _ := WrapNative(StatusAdditionalFrame, nil)
		if status, data, err = c.transmit(ctx, apdu); err != nil {
			return 0, nil, err
		}
		all = append(all, data...)
	}
	return status, all, nil
}

// Authenticate runs an authentication's two exchanges and installs its
// channel.
func (c *Card) Authenticate(ctx context.Context, a Authenticator) error {
	c.Deauthenticate()
	code, payload := a.Start()
	apdu, err := WrapNative(code, payload)
	if err != nil {
		return err
	}
	st, data, err := c.transmit(ctx, apdu)
	if err != nil {
		return fmt.Errorf("authenticate: %w", err)
	}
	second, err := a.Respond(st, data)
	if err != nil {
		return fmt.Errorf("authenticate: %w", err)
	}
	if apdu, err = WrapNative(StatusAdditionalFrame, second); err != nil {
		return err
	}
	if st, data, err = c.transmit(ctx, apdu); err != nil {
		return fmt.Errorf("authenticate: %w", err)
	}
	ch, err := a.Finish(st, data)
	if err != nil {
		return fmt.Errorf("authenticate: %w", err)
	}
	c.ch = ch
	return nil
}

// Result is one command of a Pipeline after Run.
type Result struct {
	// Command is the command (nil for raw steps).
	Command *Command
	// Done is true once the card answered and the answer was verified.
	Done bool
	// Status is the card's final native status (when answered).
	Status byte
	// Data is the verified plaintext response.
	Data []byte
	// Err is this step's error; steps after a failure get ErrNotExecuted.
	Err error

	apdu   []byte
	expect []uint16
	reply  Reply
	handle func(status byte, data []byte) error
}

// ErrNotExecuted marks pipeline steps after the first failure.
var ErrNotExecuted = errors.New("desfire: not executed (an earlier command failed)")

// Pipeline prepares commands ahead of their answers so a relay can carry
// them in one batch, then verifies every answer in order. Commands are
// sealed when added, so a command whose input would depend on an answer
// not yet verified is refused at Add (ErrNotPipelinable), never sent.
type Pipeline struct {
	card  *Card
	steps []*Result
	err   error
}

// Pipeline starts an empty pipeline on the card.
func (c *Card) Pipeline() *Pipeline { return &Pipeline{card: c} }

// Results returns the steps added so far.
func (p *Pipeline) Results() []*Result { return p.steps }

// Add seals cmd and appends it. Each command must fit one frame and its
// answer must come in one frame.
func (p *Pipeline) Add(cmd *Command) (*Result, error) {
	if p.err != nil {
		return nil, p.err
	}
	payload, reply, err := p.card.seal(cmd)
	if err != nil {
		p.err = fmt.Errorf("%s: %w", cmd.name(), err)
		return nil, p.err
	}
	if len(payload) > p.card.maxFrame {
		p.err = p.card.fail(fmt.Errorf("%s: %d bytes in a pipeline: %w", cmd.name(), len(payload), ErrFrameTooLong))
		return nil, p.err
	}
	apdu, err := WrapNative(cmd.Code, payload)
	if err != nil {
		p.err = p.card.fail(err)
		return nil, p.err
	}
	r := &Result{Command: cmd, apdu: apdu, reply: reply, expect: []uint16{swNativeOK}}
	p.steps = append(p.steps, r)
	return r, nil
}

// AddRaw appends a step sent as given (authentication frames): handle
// receives the status and data when the status word is expected.
func (p *Pipeline) AddRaw(code byte, payload []byte, expect []uint16, handle func(status byte, data []byte) error) (*Result, error) {
	if p.err != nil {
		return nil, p.err
	}
	apdu, err := WrapNative(code, payload)
	if err != nil {
		p.err = err
		return nil, err
	}
	if len(expect) == 0 {
		expect = []uint16{swNativeOK}
	}
	r := &Result{apdu: apdu, expect: expect, handle: handle}
	p.steps = append(p.steps, r)
	return r, nil
}

// Run sends every step (one round trip on a Batcher) and verifies the
// answers in order. It returns the first failure; the channel is then
// closed and later steps carry ErrNotExecuted.
func (p *Pipeline) Run(ctx context.Context) error {
	if p.err != nil {
		return p.err
	}
	if len(p.steps) == 0 {
		return nil
	}
	cmds := make([]BatchCommand, len(p.steps))
	for i, s := range p.steps {
		cmds[i] = BatchCommand{APDU: s.apdu, Expect: s.expect}
	}
	p.card.trips++
	rs, terr := TransmitBatch(ctx, p.card.t, cmds)
	var first error
	for i, s := range p.steps {
		if first != nil {
			s.Err = ErrNotExecuted
			continue
		}
		if i >= len(rs) {
			if terr != nil {
				first = terr
			} else {
				first = fmt.Errorf("%d answers to %d commands: %w", len(rs), len(p.steps), ErrShortResponse)
			}
			s.Err = first
			continue
		}
		s.Err = p.open(s, rs[i])
		first = s.Err
	}
	if first == nil && terr != nil {
		first = terr
	}
	if first != nil {
		p.card.fail(first)
	}
	p.err = first
	return first
}

func (p *Pipeline) open(s *Result, rapdu []byte) error {
	sw, err := StatusWord(rapdu)
	if err != nil {
		return err
	}
	status, data, err := SplitResponse(rapdu)
	if err != nil {
		return err
	}
	s.Status = status
	if s.handle != nil {
		if !Expected(s.expect, sw) {
			return NewStatusError(status)
		}
		if err := s.handle(status, data); err != nil {
			return err
		}
		s.Done = true
		return nil
	}
	if status == StatusAdditionalFrame {
		return fmt.Errorf("%s: chained answer in a pipeline: %w", s.Command.name(), ErrUnexpectedStatus)
	}
	out, err := s.reply.Open(status, data)
	if err != nil {
		return fmt.Errorf("%s: %w", s.Command.name(), err)
	}
	s.Data, s.Done = out, true
	return nil
}
