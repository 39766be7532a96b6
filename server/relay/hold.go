package relay

import (
	"bufio"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// heldConn is an accepted socket's connection that can hold writes back:
// while hold is set, written bytes collect in buf, and the next write
// outside a hold (or flush) sends them together with its own bytes in one
// write call. The WebSocket library flushes every message on its own; this
// is what lets a prompt and the transceive or result after it leave in one
// TCP segment.
type heldConn struct {
	net.Conn
	mu   sync.Mutex
	hold bool
	buf  []byte
}

// Write implements net.Conn.
func (h *heldConn) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.hold {
		h.buf = append(h.buf, p...)
		return len(p), nil
	}
	if len(h.buf) == 0 {
		return h.Conn.Write(p)
	}
	h.buf = append(h.buf, p...)
	if err := h.writeHeld(); err != nil {
		return 0, err
	}
	return len(p), nil
}

// flush sends held bytes, if any.
func (h *heldConn) flush() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.buf) == 0 {
		return nil
	}
	return h.writeHeld()
}

func (h *heldConn) writeHeld() error {
	_, err := h.Conn.Write(h.buf)
	h.buf = h.buf[:0]
	return err
}

func (h *heldConn) setHold(on bool) {
	h.mu.Lock()
	h.hold = on
	h.mu.Unlock()
}

// holdWriter hands the WebSocket library a heldConn when it hijacks the
// connection.
type holdWriter struct {
	http.ResponseWriter
	held *heldConn
}

// Hijack implements http.Hijacker.
func (w *holdWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.held = &heldConn{Conn: c}
	return w.held, bufio.NewReadWriter(brw.Reader, bufio.NewWriter(w.held)), nil
}

// Accept upgrades the request as websocket.Accept does and returns the
// Conn, whose SendLater can hold a message back until the next one.
// exchange bounds each wait for a responses message.
func Accept(w http.ResponseWriter, r *http.Request, opts *websocket.AcceptOptions, exchange time.Duration) (*Conn, error) {
	hw := &holdWriter{ResponseWriter: w}
	ws, err := websocket.Accept(hw, r, opts)
	if err != nil {
		return nil, err
	}
	c := New(ws, exchange)
	c.held = hw.held
	return c, nil
}
