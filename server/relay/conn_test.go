package relay

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/protocol"
)

// pair starts a server that wraps each accepted socket in a Conn and hands
// it to the test, and dials it as a bridge.
func pair(t *testing.T, exchange time.Duration) (*Conn, *websocket.Conn) {
	t.Helper()
	got := make(chan *Conn, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{protocol.Subprotocol}}, exchange)
		if err != nil {
			return
		}
		got <- c
	}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	client, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), &websocket.DialOptions{Subprotocols: []string{protocol.Subprotocol}})
	if err != nil {
		t.Fatal(err)
	}
	client.SetReadLimit(-1)
	c := <-got
	t.Cleanup(func() { client.CloseNow(); c.Close(websocket.StatusNormalClosure, "") })
	return c, client
}

// bridge reads one transceive and answers it with reply(transceive).
func bridge(t *testing.T, client *websocket.Conn, reply func(tr protocol.Transceive) string) {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, b, err := client.Read(ctx)
		if err != nil {
			return
		}
		var tr protocol.Transceive
		if err := json.Unmarshal(b, &tr); err != nil {
			t.Errorf("bridge got %s: %v", b, err)
			return
		}
		if s := reply(tr); s != "" {
			client.Write(ctx, websocket.MessageText, []byte(s))
		}
	}()
}

var three = []desfire.BatchCommand{
	{APDU: []byte{0x90, 0x5A, 0, 0, 3, 1, 2, 3, 0}},
	{APDU: []byte{0x90, 0x71, 0, 0, 2, 3, 0, 0}, Expect: []uint16{0x91AF}},
	{APDU: []byte{0x90, 0x60, 0, 0, 0}},
}

func TestTransceiveRules(t *testing.T) {
	cases := []struct {
		name  string
		reply string // %d is replaced by the transceive id
		n     int
		err   error
	}{
		{"all answered", `{"type":"responses","id":ID,"rapdus":["9100","010291AF","019100"]}`, 3, nil},
		{"stopped at unexpected", `{"type":"responses","id":ID,"rapdus":["91A0"]}`, 1, nil},
		{"stopped at unexpected second", `{"type":"responses","id":ID,"rapdus":["9100","91AE"]}`, 2, nil},
		{"tag lost", `{"type":"responses","id":ID,"rapdus":["9100"],"error":"tag_lost"}`, 1, ErrTagLost},
		{"reader io", `{"type":"responses","id":ID,"rapdus":[],"error":"io"}`, 0, ErrBridgeIO},
		{"wrong id", `{"type":"responses","id":99,"rapdus":["9100"]}`, 0, protocol.ErrProtocol},
		{"too many", `{"type":"responses","id":ID,"rapdus":["9100","91AF","9100","9100"]}`, 0, protocol.ErrProtocol},
		{"short after expected", `{"type":"responses","id":ID,"rapdus":["9100","91AF"]}`, 0, protocol.ErrProtocol},
		{"empty without error", `{"type":"responses","id":ID,"rapdus":[]}`, 0, protocol.ErrProtocol},
		{"went on after unexpected", `{"type":"responses","id":ID,"rapdus":["91AE","91AF","9100"]}`, 0, protocol.ErrProtocol},
		{"bad json", `{"type":"responses",`, 0, protocol.ErrProtocol},
		{"unknown type", `{"type":"nonsense"}`, 0, protocol.ErrProtocol},
		{"hello mid-session", `{"type":"hello","bridge":{},"features":[]}`, 0, protocol.ErrProtocol},
		{"cancel", `{"type":"cancel","reason":"user"}`, 0, ErrCancelled},
		{"oversized", `{"type":"cancel","reason":"` + strings.Repeat("x", protocol.MaxFrame) + `"}`, 0, protocol.ErrProtocol},
		{"silent", ``, 0, ErrTooSlow},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn, client := pair(t, 300*time.Millisecond)
			bridge(t, client, func(tr protocol.Transceive) string {
				if len(tr.CAPDUs) != 3 || tr.CAPDUs[1].Expect[0] != "91AF" {
					t.Errorf("transceive %+v", tr)
				}
				return strings.ReplaceAll(c.reply, "ID", "1")
			})
			rs, err := conn.TransmitBatch(context.Background(), three)
			if !errors.Is(err, c.err) || (c.err == nil && err != nil) {
				t.Fatalf("err %v, want %v", err, c.err)
			}
			if len(rs) != c.n {
				t.Fatalf("%d responses, want %d", len(rs), c.n)
			}
			if conn.Exchanges() != 1 {
				t.Fatalf("exchanges %d", conn.Exchanges())
			}
		})
	}
}

func TestCardDuringExchangeAndIDs(t *testing.T) {
	conn, client := pair(t, time.Second)
	go func() {
		ctx := context.Background()
		for id := 1; id <= 2; id++ {
			_, b, err := client.Read(ctx)
			if err != nil {
				return
			}
			var tr protocol.Transceive
			json.Unmarshal(b, &tr)
			if tr.ID != uint64(id) {
				t.Errorf("id %d, want %d", tr.ID, id)
			}
			client.Write(ctx, websocket.MessageText, []byte(`{"type":"card","uid":"04010203040506"}`))
			client.Write(ctx, websocket.MessageText, []byte(`{"type":"responses","id":`+string(rune('0'+id))+`,"rapdus":["9100"]}`))
		}
	}()
	for i := 0; i < 2; i++ {
		r, err := conn.Transmit(context.Background(), []byte{0x90, 0x60, 0, 0, 0})
		if err != nil || len(r) != 2 {
			t.Fatalf("transmit %d: %X %v", i, r, err)
		}
	}
}

// TestAwaitCard: a card that came during an exchange is taken first; then
// the next card message; a cancel is ErrCancelled; running out of time is
// not a connection fault (the result can still be sent); any other
// message is a protocol violation.
func TestAwaitCard(t *testing.T) {
	ctx := context.Background()
	send := func(client *websocket.Conn, s string) {
		if err := client.Write(ctx, websocket.MessageText, []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("card", func(t *testing.T) {
		c, client := pair(t, time.Second)
		send(client, `{"type":"card","uid":"04A1B2C3D4E5F6"}`)
		k, err := c.AwaitCard(ctx)
		if err != nil || strings.ToUpper(hex.EncodeToString(k.UID)) != "04A1B2C3D4E5F6" {
			t.Fatalf("card %v, %v", k, err)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		c, _ := pair(t, time.Second)
		wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		if _, err := c.AwaitCard(wctx); !errors.Is(err, context.DeadlineExceeded) || c.Fault() != nil {
			t.Fatalf("err %v, fault %v", err, c.Fault())
		}
	})
	t.Run("cancel", func(t *testing.T) {
		c, client := pair(t, time.Second)
		send(client, `{"type":"cancel"}`)
		if _, err := c.AwaitCard(ctx); !errors.Is(err, ErrCancelled) {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("violation", func(t *testing.T) {
		c, client := pair(t, time.Second)
		send(client, `{"type":"responses","id":1,"rapdus":["9100"]}`)
		if _, err := c.AwaitCard(ctx); !errors.Is(err, protocol.ErrProtocol) || c.Fault() == nil {
			t.Fatalf("err %v, fault %v", err, c.Fault())
		}
	})
}
