package vpcd

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/desfire-relay/relay/desfire/simcard"
	"github.com/desfire-relay/relay/mobile-bridge/bridge"
)

// fakeVPCD plays the reader side: it listens, as vpcd does, and speaks
// the framing to the one virtual ICC that connects.
type fakeVPCD struct {
	t    *testing.T
	ln   net.Listener
	conn net.Conn
}

func newFakeVPCD(t *testing.T) *fakeVPCD {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return &fakeVPCD{t: t, ln: ln}
}

func (f *fakeVPCD) accept() {
	c, err := f.ln.Accept()
	if err != nil {
		f.t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	f.t.Cleanup(func() { c.Close() })
	f.conn = c
}

func (f *fakeVPCD) send(raw []byte) {
	if _, err := f.conn.Write(raw); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fakeVPCD) ask(msg []byte) []byte {
	f.t.Helper()
	if err := WriteFrame(f.conn, msg); err != nil {
		f.t.Fatal(err)
	}
	r, err := ReadFrame(f.conn)
	if err != nil {
		f.t.Fatalf("answer to %X: %v", msg, err)
	}
	return r
}

// serve runs Conn.Serve against the fake reader and returns its result
// channel.
func serve(t *testing.T, ctx context.Context, f *fakeVPCD, card Card) <-chan error {
	done := make(chan error, 1)
	c, err := Dial(ctx, f.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	go func() { done <- c.Serve(ctx, card) }()
	f.accept()
	return done
}

func wait(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
		return nil
	}
}

func newSim(t *testing.T) *simcard.Card {
	sim, err := simcard.New(simcard.Options{UID: mustHex(t, "04A1B2C3D4E5F6")})
	if err != nil {
		t.Fatal(err)
	}
	return sim
}

func TestServe(t *testing.T) {
	cases := []struct {
		name string
		// run drives the fake reader; then Serve's error must match want.
		run  func(t *testing.T, f *fakeVPCD, sim *simcard.Card, cancel context.CancelFunc)
		want error
	}{
		{"session then reader closes", func(t *testing.T, f *fakeVPCD, sim *simcard.Card, _ context.CancelFunc) {
			f.send(mustHex(t, "0001 01")) // power on: no answer
			if atr := f.ask([]byte{CtrlATR}); !bytes.Equal(atr, mustHex(t, "3B8180018080")) {
				t.Fatalf("ATR %X", atr)
			}
			if uid := f.ask(mustHex(t, "FFCA000000")); !bytes.Equal(uid, mustHex(t, "04A1B2C3D4E5F6 9000")) {
				t.Fatalf("UID %X", uid)
			}
			if ats := f.ask(mustHex(t, "FFCA010000")); !bytes.Equal(ats, mustHex(t, "067577810280 9000")) {
				t.Fatalf("ATS %X", ats)
			}
			if r := f.ask(mustHex(t, "9060000000")); len(r) < 2 || !bytes.Equal(r[len(r)-2:], mustHex(t, "91AF")) {
				t.Fatalf("GetVersion %X", r)
			}
			f.send(mustHex(t, "0001 02 0001 00")) // reset, power off
			if atr := f.ask([]byte{CtrlATR}); len(atr) != 6 {
				t.Fatalf("ATR after power off %X", atr)
			}
			f.conn.Close()
		}, ErrClosed},
		{"card leaves the field", func(t *testing.T, f *fakeVPCD, sim *simcard.Card, _ context.CancelFunc) {
			sim.RemoveAfter(1)
			if r := f.ask(mustHex(t, "9060000000")); len(r) < 2 {
				t.Fatalf("GetVersion %X", r)
			}
			if err := WriteFrame(f.conn, mustHex(t, "90AF000000")); err != nil {
				t.Fatal(err)
			}
			if r, err := ReadFrame(f.conn); !errors.Is(err, io.EOF) {
				t.Fatalf("after removal the reader got %X, %v; want the connection closed", r, err)
			}
		}, ErrCardRemoved},
		{"unknown control code", func(t *testing.T, f *fakeVPCD, _ *simcard.Card, _ context.CancelFunc) {
			f.send(mustHex(t, "0001 03"))
		}, ErrFrame},
		{"zero length from the reader", func(t *testing.T, f *fakeVPCD, _ *simcard.Card, _ context.CancelFunc) {
			f.send(mustHex(t, "0000"))
		}, ErrFrame},
		{"reader closes inside a message", func(t *testing.T, f *fakeVPCD, _ *simcard.Card, _ context.CancelFunc) {
			f.send(mustHex(t, "0005 FFCA"))
			f.conn.Close()
		}, io.ErrUnexpectedEOF},
		{"context cancelled", func(t *testing.T, f *fakeVPCD, _ *simcard.Card, cancel context.CancelFunc) {
			f.ask([]byte{CtrlATR})
			cancel()
		}, context.Canceled},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			f := newFakeVPCD(t)
			sim := newSim(t)
			done := serve(t, ctx, f, Card{Transport: bridge.Sim{Card: sim}, UID: sim.UID()})
			c.run(t, f, sim, cancel)
			if err := wait(t, done); !errors.Is(err, c.want) {
				t.Fatalf("Serve: %v, want %v", err, c.want)
			}
		})
	}
}

func TestServeInvalidCard(t *testing.T) {
	f := newFakeVPCD(t)
	done := serve(t, context.Background(), f, Card{UID: make([]byte, 7)})
	if err := wait(t, done); err == nil {
		t.Fatal("a card without a transport was served")
	}
	if _, err := ReadFrame(f.conn); !errors.Is(err, io.EOF) {
		t.Fatalf("connection left open: %v", err)
	}
}

func TestDialRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if err := Serve(context.Background(), addr, Card{}); err == nil {
		t.Fatal("Serve to a closed port succeeded")
	}
}
