package faults

import (
	"context"
	"fmt"
	"time"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/internal/rawbridge"
	"github.com/desfire-relay/relay/protocol"
)

// The raw bridge (internal/rawbridge) can drop the connection at an exact
// point of the exchange, which the reference bridge cannot do.

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

// rawSession runs one bridge session over card (internal/rawbridge),
// dropping the connection (TCP close, no close frame) at c.
func rawSession(ctx context.Context, url, token string, card desfire.Transport, uid []byte, batch bool, c cut) (rawTrace, error) {
	o := rawbridge.Options{Name: "faults-raw", Token: token, HelloUID: uid, Card: card, Batch: batch,
		APDUTimeout: 2 * time.Second, StopAtResult: true}
	switch c.kind {
	case cutRecv:
		o.DropOnReceive = func(n int, _ string) bool { return n == c.m }
	case cutExec:
		o.DropAfterRelay = func(n int) bool { return n == c.m }
	case cutSent:
		o.DropAfterWrite = func(n int) bool { return n == c.m }
	}
	out, err := rawbridge.Run(ctx, url, o)
	if err == nil && !out.Dropped && out.Result == nil {
		err = fmt.Errorf("server closed the session without a result (close %d)", out.Close)
	}
	return rawTrace{server: out.Server, sent: out.Written, result: out.Result, cut: out.Dropped}, err
}
