package desfire

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// TransactionObserver sees every command that completed with a verified
// answer, in plaintext and in order, so a Transaction MAC accumulator can
// follow the session without the card scripts feeding it by hand.
// *TransactionMAC implements it. An error means the observer could not
// account for the command (its TMV can no longer be trusted); the command
// itself did run.
type TransactionObserver interface {
	Add(code byte, header, data, resp []byte) error
}

// ErrObserver wraps an error returned by the TransactionObserver: the
// command ran and its answer verified, but the observer refused it.
var ErrObserver = errors.New("desfire: transaction observer refused a command")

// Option configures a Card.
type Option func(*Card)

// WithMaxFrame sets the largest payload of one frame (DefaultMaxFrame by
// default), for readers whose link layer chains longer APDUs. Values below
// 32 or above MaxShortData are ignored.
func WithMaxFrame(n int) Option {
	return func(c *Card) {
		if n >= minMaxFrame && n <= MaxShortData {
			c.maxFrame = n
		}
	}
}

// WithMaxResponse sets the bound on one chained answer
// (DefaultMaxResponse by default); values below one frame are ignored.
func WithMaxResponse(n int) Option {
	return func(c *Card) {
		if n >= MaxShortData {
			c.maxResp = n
		}
	}
}

// WithObserver installs a TransactionObserver from the start.
func WithObserver(o TransactionObserver) Option {
	return func(c *Card) { c.obs = o }
}

// Card is a session with one card over a Transport: it seals commands with
// the active secure channel, splits and joins additional frames, verifies
// answers and counts round trips. It is not safe for concurrent use; a
// session belongs to one goroutine.
type Card struct {
	t        Transport
	ch       Channel
	obs      TransactionObserver
	maxFrame int
	maxResp  int
	trips    int
}

// NewCard returns a session over t with no channel.
func NewCard(t Transport, opts ...Option) *Card {
	c := &Card{t: t, maxFrame: DefaultMaxFrame, maxResp: DefaultMaxResponse}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Channel returns the installed secure channel, or nil. After a failure it
// is still returned, closed, until Deauthenticate or a new authentication.
func (c *Card) Channel() Channel { return c.ch }

// SetChannel installs a channel created elsewhere: an authentication run
// inside a Pipeline, or an EV1 early channel.
func (c *Card) SetChannel(ch Channel) { c.ch = ch }

// Deauthenticate closes and drops the channel (after SelectApplication the
// card has dropped it too).
func (c *Card) Deauthenticate() {
	if c.ch != nil {
		c.ch.Close()
	}
	c.ch = nil
}

// SessionMode is the protection of commands whose data-sheet mode is
// "MAC" (GetVersion, GetKeyVersion, CommitTransaction, the issuance
// commands …): CommMAC while a channel is installed, CommPlain otherwise,
// since without authentication everything is plain.
func (c *Card) SessionMode() CommMode {
	if c.ch != nil {
		return CommMAC
	}
	return CommPlain
}

// SetObserver installs (or, with nil, removes) the TransactionObserver.
func (c *Card) SetObserver(o TransactionObserver) { c.obs = o }

// RoundTrips is how many transport round trips the session used: each
// Transmit and each TransmitBatch on a Batcher counts once (a pipeline over
// a plain Transport costs one per command). Tests use it to prove how
// many wide-area exchanges a script needs.
func (c *Card) RoundTrips() int { return c.trips }

// MaxFrame is the largest payload sent in one frame.
func (c *Card) MaxFrame() int { return c.maxFrame }

// fail closes the channel after an error and returns err.
func (c *Card) fail(err error) error {
	if c.ch != nil {
		c.ch.Close()
	}
	return err
}

// errSelectInSession: SelectApplication ends the card's session, so it is
// never sealed with a channel.
var errSelectInSession = fmt.Errorf("select application while authenticated (use Card.SelectApplication): %w", ErrParameter)

// seal returns the native payload and the reply verifier for cmd.
func (c *Card) seal(cmd *Command) ([]byte, Reply, error) {
	if c.ch != nil {
		if cmd.Code == CmdSelectApplication {
			return nil, nil, errSelectInSession
		}
		return c.ch.Seal(cmd)
	}
	if cmd.Mode != CommPlain || cmd.RespMode != CommPlain {
		return nil, nil, fmt.Errorf("mode %v/%v without a channel: %w", cmd.Mode, cmd.RespMode, ErrNotAuthenticated)
	}
	payload := make([]byte, 0, len(cmd.Header)+len(cmd.Data))
	payload = append(append(payload, cmd.Header...), cmd.Data...)
	return payload, plainReply{cmd}, nil
}

// named prefixes err with the command's name unless the channel already
// did ("credit file 3: card status 91BE …").
func named(cmd *Command, err error) error {
	if n := cmd.name(); !strings.HasPrefix(err.Error(), n+":") {
		return fmt.Errorf("%s: %w", n, err)
	}
	return err
}

func (cmd *Command) name() string {
	if cmd.Name != "" {
		return cmd.Name
	}
	return fmt.Sprintf("command %02X", cmd.Code)
}

// plainReply verifies answers when no channel is active: status and
// length.
type plainReply struct{ cmd *Command }

func (p plainReply) Open(status byte, data []byte) ([]byte, error) {
	if status != StatusOK {
		return nil, NewStatusError(status)
	}
	if err := checkRespLen(len(data), p.cmd.RespLen); err != nil {
		return nil, err
	}
	return data, nil
}

// Exec runs one command: seal it with the channel (or plain when there is
// none; a protected mode without a channel is ErrNotAuthenticated), send
// it in as many frames as needed, collect a chained answer, verify it and
// return the plaintext. SelectApplication first drops the channel, as the
// card does. A status other than OK is a *StatusError. On any
// error the channel is closed. The observer, if any, then sees the
// command; its error is wrapped in ErrObserver and returned with the data.
func (c *Card) Exec(ctx context.Context, cmd *Command) ([]byte, error) {
	if cmd.Code == CmdSelectApplication {
		c.Deauthenticate() // the card drops its session on selection
	}
	payload, reply, err := c.seal(cmd)
	if err != nil {
		return nil, c.fail(named(cmd, err))
	}
	status, data, err := c.exchange(ctx, cmd.Code, payload)
	if err != nil {
		return nil, c.fail(named(cmd, err))
	}
	out, err := openReply(cmd, reply, status, data)
	if err != nil {
		return nil, c.fail(named(cmd, err))
	}
	return out, c.observe(cmd, out)
}

// openReply opens an answer and checks its plaintext length once more, so
// a command's RespLen holds whatever the channel checked.
func openReply(cmd *Command, reply Reply, status byte, data []byte) ([]byte, error) {
	out, err := reply.Open(status, data)
	if err != nil {
		return nil, err
	}
	if err := checkRespLen(len(out), cmd.RespLen); err != nil {
		return nil, err
	}
	return out, nil
}

// observe feeds the observer one verified command.
func (c *Card) observe(cmd *Command, resp []byte) error {
	if c.obs == nil {
		return nil
	}
	if err := c.obs.Add(cmd.Code, cmd.Header, cmd.Data, resp); err != nil {
		return fmt.Errorf("%s: %w: %w", cmd.name(), ErrObserver, err)
	}
	return nil
}

// Authenticate runs an authentication's two exchanges (Start → 91AF and the
// card's challenge, Respond's frame → 9100 and the card's proof) and
// installs the channel Finish returns. The previous channel stays
// available to the Authenticator (AuthenticateEV2NonFirst needs it) and is
// closed once replaced; on failure the card has no session, so the old
// channel is closed and dropped as well.
func (c *Card) Authenticate(ctx context.Context, a Authenticator) error {
	ch, err := c.authenticate(ctx, a)
	if err != nil {
		c.Deauthenticate()
		return fmt.Errorf("authenticate: %w", err)
	}
	if c.ch != nil && c.ch != ch {
		c.ch.Close()
	}
	c.ch = ch
	return nil
}

func (c *Card) authenticate(ctx context.Context, a Authenticator) (Channel, error) {
	code, payload := a.Start()
	apdu, err := WrapNative(code, payload)
	if err != nil {
		return nil, err
	}
	status, data, err := c.transmit(ctx, apdu)
	if err != nil {
		return nil, err
	}
	second, err := a.Respond(status, data)
	if err != nil {
		return nil, err
	}
	if apdu, err = WrapNative(CmdAdditionalFrame, second); err != nil {
		return nil, err
	}
	if status, data, err = c.transmit(ctx, apdu); err != nil {
		return nil, err
	}
	return a.Finish(status, data)
}
