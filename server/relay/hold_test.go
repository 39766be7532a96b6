package relay

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/desfire-relay/relay/protocol"
)

// writeCounter is a net.Conn that records each write call.
type writeCounter struct {
	net.Conn
	writes [][]byte
}

func (w *writeCounter) Write(p []byte) (int, error) {
	w.writes = append(w.writes, bytes.Clone(p))
	return len(p), nil
}

func TestHeldConnOneWrite(t *testing.T) {
	wc := &writeCounter{}
	h := &heldConn{Conn: wc}
	h.setHold(true)
	h.Write([]byte("prompt-header"))
	h.Write([]byte("prompt-body"))
	h.setHold(false)
	if len(wc.writes) != 0 {
		t.Fatalf("held bytes written early: %q", wc.writes)
	}
	h.Write([]byte("transceive"))
	if len(wc.writes) != 1 || string(wc.writes[0]) != "prompt-headerprompt-bodytransceive" {
		t.Fatalf("writes %q, want one with the held bytes first", wc.writes)
	}
	h.Write([]byte("next"))
	if err := h.flush(); err != nil || len(wc.writes) != 2 || string(wc.writes[1]) != "next" {
		t.Fatalf("writes %q after a plain write and an empty flush (%v)", wc.writes, err)
	}
	h.setHold(true)
	h.Write([]byte("held"))
	h.setHold(false)
	if err := h.flush(); err != nil || len(wc.writes) != 3 || string(wc.writes[2]) != "held" {
		t.Fatalf("flush wrote %q (%v)", wc.writes, err)
	}
}

func readType(t *testing.T, client *websocket.Conn) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, b, err := client.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var env struct{ Type string }
	if err := json.Unmarshal(b, &env); err != nil {
		t.Fatal(err)
	}
	return env.Type
}

// TestSendLater: a held prompt reaches the bridge before the message
// after it, and before the server waits for the bridge.
func TestSendLater(t *testing.T) {
	c, client := pair(t, 5*time.Second)
	ctx := context.Background()
	p := 0.5
	if err := c.SendLater(ctx, protocol.Prompt{Type: protocol.TypePrompt, Text: "hold", Progress: &p}); err != nil {
		t.Fatal(err)
	}
	if err := c.Send(ctx, protocol.Result{Type: protocol.TypeResult, OK: true}); err != nil {
		t.Fatal(err)
	}
	if a, b := readType(t, client), readType(t, client); a != protocol.TypePrompt || b != protocol.TypeResult {
		t.Fatalf("bridge read %s then %s", a, b)
	}

	// Held, then the server waits for the bridge: the wait flushes it,
	// or this bridge would never answer.
	if err := c.SendLater(ctx, protocol.Prompt{Type: protocol.TypePrompt, Text: "tap"}); err != nil {
		t.Fatal(err)
	}
	go func() {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if _, _, err := client.Read(rctx); err == nil {
			client.Write(rctx, websocket.MessageText, []byte(`{"type":"cancel"}`))
		}
	}()
	wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	m, err := c.Next(wctx)
	if err != nil || m.Type != protocol.TypeCancel {
		t.Fatalf("Next: %v %v (the held prompt did not leave before the wait)", m, err)
	}
}
