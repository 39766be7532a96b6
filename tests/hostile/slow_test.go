package hostile

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/desfire-relay/relay/desfire/simcard"
	"github.com/desfire-relay/relay/internal/rawbridge"
	"github.com/desfire-relay/relay/internal/testbackend"
	"github.com/desfire-relay/relay/internal/testserver"
	"github.com/desfire-relay/relay/protocol"
	"github.com/desfire-relay/relay/transaction/profile"
)

// slowKind is how a slow bridge holds its socket.
type slowKind string

const (
	slowNoHello     slowKind = "never-hello"         // connects, says nothing
	slowNoCard      slowKind = "hello-without-card"  // waits for a card forever
	slowNoAnswer    slowKind = "hello-then-silent"   // never answers the first transceive
	slowAtCommit    slowKind = "stall-at-commit"     // runs the commit on the card, never answers
	slowBeforeFirst slowKind = "stall-before-commit" // answers authentication, stalls before the commit
)

// TestSlowBridges: 50 bridges hold sockets open (never a hello, hello and
// no card, no answer, a stall at or before the commit) while normal
// sessions run and succeed. Every slow one is closed with 4408 at the
// exchange or session deadline; their top-ups are not applied unless the
// card holds them, and a retry credits each exactly once.
func TestSlowBridges(t *testing.T) {
	for _, b := range testbackend.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, b, profile.AN12113(), testserver.Options{ExchangeTimeout: 300 * time.Millisecond, SessionTimeout: 2 * time.Second})
			kinds := map[slowKind]int{slowNoHello: 10, slowNoCard: 10, slowNoAnswer: 24, slowAtCommit: 3, slowBeforeFirst: 3}
			type slow struct {
				kind slowKind
				tu   topUp
				card *simcard.Card // nil: a claimed UID only
				out  rawbridge.Outcome
				err  error
			}
			var all []*slow
			for k, n := range kinds {
				for i := 0; i < n; i++ {
					s := &slow{kind: k, tu: e.topUp(t, 250, nil)}
					if k == slowAtCommit || k == slowBeforeFirst || (k == slowNoAnswer && i < 2) {
						s.card = e.card(t, 100)
					}
					all = append(all, s)
				}
			}
			// Open them all, and wait until each is at its stalling point
			// before the normal sessions start.
			var wg sync.WaitGroup
			atStall := make(chan struct{}, len(all))
			for _, s := range all {
				wg.Add(1)
				go func() {
					defer wg.Done()
					// A session that ends before its stalling point (a
					// server slowed down by a loaded machine) still lets the
					// normal sessions start; its outcome is checked below.
					var once sync.Once
					stalled := func() { once.Do(func() { atStall <- struct{}{} }) }
					defer stalled()
					o := rawbridge.Options{Token: s.tu.Token, Batch: true, Card: s.card}
					switch s.kind {
					case slowNoHello:
						s.out, s.err = holdSilent(e.wsURL(), s.tu.Token, stalled)
						return
					case slowNoCard:
						o.OnReady = stalled
					default:
						o.HelloUID = newUID()
						if s.card != nil {
							o.HelloUID = s.card.UID()
						}
						o.Hook = func(n int, tr *protocol.Transceive, a *rawbridge.Answer) {
							stall := s.kind == slowNoAnswer ||
								(s.kind == slowAtCommit && carriesCommit([]*protocol.Transceive{tr})) ||
								(s.kind == slowBeforeFirst && n == 2)
							if stall {
								a.Stall = true
								stalled()
							}
						}
					}
					s.out, s.err = runRaw(e.wsURL(), o)
				}()
			}
			for range all {
				<-atStall
			}
			// Normal sessions, on other cards, while the slow ones hold on.
			for i := 0; i < 4; i++ {
				e.serving(t)
			}
			wg.Wait()
			closes := map[slowKind]map[websocket.StatusCode]int{}
			for _, s := range all {
				if s.err != nil {
					t.Fatalf("%s: %v", s.kind, s.err)
				}
				if closes[s.kind] == nil {
					closes[s.kind] = map[websocket.StatusCode]int{}
				}
				closes[s.kind][s.out.Close]++
				if s.out.Close != protocol.CloseTooSlow {
					t.Errorf("%s bridge closed with %d, want 4408 (%v)", s.kind, s.out.Close, s.out)
					continue
				}
				if s.card != nil {
					status := e.assertLedger(t, s.tu, s.card, 100, &s.out)
					if s.kind != slowAtCommit && status != "failed" {
						t.Errorf("%s: ledger %s, want failed", s.kind, status)
					}
					e.retry(t, s.tu, s.card, 100)
					continue
				}
				got := e.get(t, s.tu.ID)
				want := "failed"
				if s.kind == slowNoHello || s.kind == slowNoCard {
					want = "pending"
				}
				if got["status"] != want {
					t.Errorf("%s: top-up %v, want %s", s.kind, got["status"], want)
				}
				count(t)
			}
			t.Logf("%d slow bridges, close codes by kind: %v", len(all), closes)
			// A slow bridge that never named a card leaves its top-up
			// payable to any card.
			for _, s := range all {
				if s.kind == slowNoHello || s.kind == slowNoCard {
					c := e.card(t, 100)
					e.retry(t, s.tu, c, 100)
					break
				}
			}
			e.serving(t)
		})
	}
}

// holdSilent connects and sends nothing until the server closes.
func holdSilent(url, token string, connected func()) (rawbridge.Outcome, error) {
	ctx, cancel := context.WithTimeout(context.Background(), sessionDeadline)
	defer cancel()
	out := rawbridge.Outcome{Close: -1}
	ws, status, err := rawbridge.Dial(ctx, url, rawbridge.Options{Token: token})
	connected()
	if err != nil || ws == nil {
		out.HTTPStatus = status
		return out, fmt.Errorf("dial: HTTP %d: %v", status, err)
	}
	defer ws.CloseNow()
	out.Close = rawbridge.Drain(ctx, ws, &out)
	return out, nil
}
