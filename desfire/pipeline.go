package desfire

import (
	"context"
	"errors"
	"fmt"
)

// ErrNotExecuted marks pipeline steps after the first failure: they have no
// verified answer. Answered tells whether the card answered anyway (its
// answer could not be verified once the channel failed), which matters
// when deciding whether a commit may have happened.
var ErrNotExecuted = errors.New("desfire: no verified answer (an earlier step failed)")

// errPipelineRan is returned when a Pipeline is used after Run.
var errPipelineRan = fmt.Errorf("pipeline already run: %w", ErrParameter)

// Result is one step of a Pipeline. Its fields are set by Run.
type Result struct {
	// Command is the command of this step (nil for AddRaw steps).
	Command *Command
	// Answered is true when a response APDU arrived for this step.
	Answered bool
	// Done is true once the answer arrived and verified (for AddRaw steps:
	// its status was expected and the handler accepted it).
	Done bool
	// SW is the status word of the answer; Status its native status byte.
	SW     uint16
	Status byte
	// Data is the verified plaintext answer (raw data for AddRaw steps).
	Data []byte
	// Err is this step's error; steps after a failure carry ErrNotExecuted.
	Err error

	apdu   []byte
	expect []uint16
	reply  Reply
	handle func(status byte, data []byte) error
}

// Pipeline prepares a run of commands ahead of their answers, so that a
// relay can carry them in one batched transceive, and verifies every answer
// afterwards, in order. Commands are sealed when added: a command whose
// input would depend on an answer not yet verified is refused right there
// with ErrNotPipelinable (it is never sent), so no pipeline can send
// something computed from an unverified response.
//
// Every step must fit one frame and be answered in one frame: a command's
// answer must be 9100, an AddRaw step's one of its expected status words.
// A Pipeline runs once.
type Pipeline struct {
	card  *Card
	steps []*Result
	err   error // set when the pipeline can no longer run
	ran   bool

	hookStep *Result // BeforeSend's step and hook
	hook     func(context.Context) error
}

// BeforeSend registers fn to run right before step s's command leaves
// the host: before the whole batch on a Batcher (where everything leaves
// at once), before that one command on a plain Transport. It is how a
// caller records "this command may reach the card" at the last moment,
// e.g. a ledger's in_doubt before CommitTransaction. An error from fn
// stops the run there: s and the steps after it are not sent and carry
// the error. One hook per pipeline; a later call replaces it.
func (p *Pipeline) BeforeSend(s *Result, fn func(context.Context) error) {
	p.hookStep, p.hook = s, fn
}

// Pipeline starts an empty pipeline on the card.
func (c *Card) Pipeline() *Pipeline { return &Pipeline{card: c} }

// Results returns the steps added so far, in order.
func (p *Pipeline) Results() []*Result { return p.steps }

// Len is the number of steps added.
func (p *Pipeline) Len() int { return len(p.steps) }

// Add seals cmd with the card's current channel and appends it.
// SelectApplication drops the channel (the card ends its session), so it
// may only start a pipeline. A seal
// error (ErrNotPipelinable, ErrNotAuthenticated …) leaves the pipeline as it
// was, so the steps added before can still run. A sealed command longer
// than one frame is ErrFrameTooLong; since the channel already advanced
// past it, the channel is closed and the pipeline can no longer run.
func (p *Pipeline) Add(cmd *Command) (*Result, error) {
	if err := p.usable(); err != nil {
		return nil, err
	}
	if cmd.Code == CmdSelectApplication && p.card.ch != nil {
		// Selection ends the card's session: fine at the start of a
		// pipeline or after a failure, not behind commands that still
		// await their answers under the channel.
		if p.card.ch.Err() == nil && len(p.steps) > 0 {
			return nil, errSelectInSession
		}
		p.card.Deauthenticate()
	}
	payload, reply, err := p.card.seal(cmd)
	if err != nil {
		return nil, named(cmd, err)
	}
	if len(payload) > p.card.maxFrame {
		p.err = p.card.fail(fmt.Errorf("%s: %d payload bytes in a pipeline, frame holds %d: %w",
			cmd.name(), len(payload), p.card.maxFrame, ErrFrameTooLong))
		return nil, p.err
	}
	apdu, err := WrapNative(cmd.Code, payload)
	if err != nil {
		p.err = p.card.fail(fmt.Errorf("%s: %w", cmd.name(), err))
		return nil, p.err
	}
	r := &Result{Command: cmd, apdu: apdu, reply: reply, expect: []uint16{swNativeOK}}
	p.steps = append(p.steps, r)
	return r, nil
}

// AddRaw appends a frame sent as given, outside secure messaging: the
// steps of an authentication. handle receives the native status and data
// when the status word is in expect (9100 when expect is empty); its error
// fails the step. The second AuthenticateAES frame, for example, expects
// 9100 and its handler calls Finish and installs the channel, while
// commands sealed with the EarlyChanneler's channel ride behind it.
func (p *Pipeline) AddRaw(code byte, payload []byte, expect []uint16, handle func(status byte, data []byte) error) (*Result, error) {
	if err := p.usable(); err != nil {
		return nil, err
	}
	if len(payload) > p.card.maxFrame {
		return nil, fmt.Errorf("raw frame %02X of %d bytes: %w", code, len(payload), ErrFrameTooLong)
	}
	apdu, err := WrapNative(code, payload)
	if err != nil {
		return nil, err
	}
	if len(expect) == 0 {
		expect = []uint16{swNativeOK}
	}
	r := &Result{apdu: apdu, expect: append([]uint16(nil), expect...), handle: handle}
	p.steps = append(p.steps, r)
	return r, nil
}

func (p *Pipeline) usable() error {
	if p.ran {
		return errPipelineRan
	}
	return p.err
}

// Run sends every step through TransmitBatch (one round trip on a Batcher,
// one per step otherwise, as RoundTrips counts them) and opens the answers in order. It returns the
// first failure: an unexpected status, a MAC or length fault, fewer answers
// than steps with no reason given, more answers than steps, or the
// transport's error; the steps after it carry ErrNotExecuted and the
// channel is closed. Steps before the failure keep their verified results.
// An observer error does not stop verification; it is returned (wrapping
// ErrObserver) when nothing else failed.
func (p *Pipeline) Run(ctx context.Context) error {
	if p.ran {
		return errPipelineRan
	}
	p.ran = true
	if p.err != nil {
		for _, s := range p.steps {
			s.Err = ErrNotExecuted
		}
		return p.err
	}
	if len(p.steps) == 0 {
		return nil
	}
	cmds := make([]BatchCommand, len(p.steps))
	for i, s := range p.steps {
		cmds[i] = BatchCommand{APDU: s.apdu, Expect: s.expect}
	}
	at := -1
	for i, s := range p.steps {
		if s == p.hookStep {
			at = i
		}
	}
	var hook func(context.Context) error
	if at >= 0 {
		hook = p.hook
	}
	rs, terr := p.card.transmitBatch(ctx, cmds, at, hook)
	var first, obsErr error
	for i, s := range p.steps {
		if i < len(rs) {
			s.Answered = true
		}
		switch {
		case first != nil:
			s.Err = ErrNotExecuted
			continue
		case i >= len(rs) && terr != nil:
			first = fmt.Errorf("pipeline step %d of %d: %w", i+1, len(p.steps), terr)
		case i >= len(rs):
			first = fmt.Errorf("pipeline: %d answers to %d commands: %w", len(rs), len(p.steps), ErrShortResponse)
		default:
			first = p.open(s, rs[i])
			if first == nil && s.Command != nil && obsErr == nil {
				obsErr = p.card.observe(s.Command, s.Data)
			}
		}
		s.Err = first
	}
	switch {
	case first != nil:
	case len(rs) > len(p.steps):
		first = fmt.Errorf("pipeline: %d answers to %d commands: %w", len(rs), len(p.steps), ErrLongResponse)
	case terr != nil:
		first = fmt.Errorf("pipeline: %w", terr)
	}
	if first != nil {
		return p.card.fail(first)
	}
	return obsErr
}

// open verifies one answer.
func (p *Pipeline) open(s *Result, rapdu []byte) error {
	sw, err := StatusWord(rapdu)
	if err != nil {
		return err
	}
	s.SW = sw
	if s.handle != nil || s.reply == nil {
		if !Expected(s.expect, sw) {
			return fmt.Errorf("raw frame: %w", &StatusError{SW: sw})
		}
		status, data, err := SplitResponse(rapdu)
		if err != nil {
			return err
		}
		s.Status, s.Data = status, data
		if s.handle != nil {
			if err := s.handle(status, data); err != nil {
				return err
			}
		}
		s.Done = true
		return nil
	}
	name := s.Command.name()
	status, data, err := SplitResponse(rapdu)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	s.Status = status
	if sw>>8 != 0x91 || status == StatusAdditionalFrame {
		return fmt.Errorf("%s: status %04X in a pipeline: %w", name, sw, ErrUnexpectedStatus)
	}
	out, err := openReply(s.Command, s.reply, status, data)
	if err != nil {
		return named(s.Command, err)
	}
	s.Data, s.Done = out, true
	return nil
}

// transmitBatch sends cmds in one round trip on a Batcher, or one command
// at a time (each a round trip) on a plain Transport.
// before, if set, runs right before command at leaves.
func (c *Card) transmitBatch(ctx context.Context, cmds []BatchCommand, at int, before func(context.Context) error) ([][]byte, error) {
	if b, ok := c.t.(Batcher); ok {
		if before != nil {
			if err := before(ctx); err != nil {
				return nil, fmt.Errorf("before batch command %d: %w", at, err)
			}
		}
		c.trips++
		return b.TransmitBatch(ctx, cmds)
	}
	return sequential(ctx, countingTransport{c}, cmds, at, before)
}

// countingTransport counts each Transmit as a round trip of the card.
type countingTransport struct{ c *Card }

func (t countingTransport) Transmit(ctx context.Context, capdu []byte) ([]byte, error) {
	t.c.trips++
	return t.c.t.Transmit(ctx, capdu)
}
