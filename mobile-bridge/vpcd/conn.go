package vpcd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// DefaultAddr is where the packaged vpcd listens (reader.conf DEVICENAME
// /dev/null:0x8C7B).
const DefaultAddr = "127.0.0.1:35963"

// ErrClosed is returned by Serve when vpcd closed the connection (pcscd
// stopped, or it dropped the card).
var ErrClosed = errors.New("vpcd: connection closed by the reader")

// Conn is one connection to vpcd: one presentation of one card. Serve it
// once; after the card left the field, dial again to present it again.
type Conn struct {
	rwc io.ReadWriteCloser

	closeOnce sync.Once
	closeErr  error
}

// Dial connects to vpcd at addr (host:port). vpcd accepts the connection
// when pcscd next polls the reader, so a card is seen present a moment
// after Dial returns.
func Dial(ctx context.Context, addr string) (*Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("vpcd: connect to %s: %w", addr, err)
	}
	return NewConn(c), nil
}

// NewConn serves over an established stream (a net.Conn, or a pipe in
// tests).
func NewConn(rwc io.ReadWriteCloser) *Conn { return &Conn{rwc: rwc} }

// Close drops the connection: to vpcd the card has left the field.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() { c.closeErr = c.rwc.Close() })
	return c.closeErr
}

// Serve answers vpcd's messages for card until ctx ends (ctx.Err()), vpcd
// closes the connection (ErrClosed), the card leaves the field (an error
// wrapping ErrCardRemoved; the connection is dropped so PC/SC sees the
// removal) or vpcd breaks the framing (ErrFrame). The connection is
// closed when Serve returns.
func (c *Conn) Serve(ctx context.Context, card Card) error {
	defer c.Close()
	p, err := card.prepare()
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	for {
		msg, err := ReadFrame(c.rwc)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("vpcd: %w", ctx.Err())
			}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("%w: %w", ErrClosed, err)
			}
			return err
		}
		if len(msg) == 1 {
			switch msg[0] {
			case CtrlPowerOff, CtrlPowerOn, CtrlReset:
				// Not answered. The card keeps its state; see the
				// package doc.
			case CtrlATR:
				if err := WriteFrame(c.rwc, p.atr); err != nil {
					return err
				}
			default:
				return fmt.Errorf("vpcd: unknown control code %02X: %w", msg[0], ErrFrame)
			}
			continue
		}
		r, err := p.transmit(ctx, msg)
		if err != nil {
			return err
		}
		if err := WriteFrame(c.rwc, r); err != nil {
			return err
		}
	}
}

// Serve dials vpcd at addr and serves card on that connection (see
// Conn.Serve).
func Serve(ctx context.Context, addr string, card Card) error {
	c, err := Dial(ctx, addr)
	if err != nil {
		return err
	}
	return c.Serve(ctx, card)
}
