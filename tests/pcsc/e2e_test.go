//go:build pcsc

package pcsc

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/desfire-relay/relay/desfire/simcard"
	"github.com/desfire-relay/relay/internal/testbackend"
	"github.com/desfire-relay/relay/internal/testenv"
	"github.com/desfire-relay/relay/internal/testserver"
	"github.com/desfire-relay/relay/mobile-bridge/bridge"
	"github.com/desfire-relay/relay/mobile-bridge/pcsc"
	"github.com/desfire-relay/relay/mobile-bridge/vpcd"
	"github.com/desfire-relay/relay/transaction/profile"
)

// stack returns the vpcd address and reader name of the private pcscd
// that scripts/pcscd.sh starts, skipping (locally) or failing (CI=true)
// when pcscd is not reachable.
func stack(t *testing.T) (addr, reader string) {
	t.Helper()
	addr, reader = os.Getenv("VPCD_ADDR"), os.Getenv("PCSC_READER")
	var why string
	if addr == "" {
		why = "VPCD_ADDR is not set"
	} else if _, err := pcsc.ListReaders(); err != nil {
		why = err.Error()
	}
	if why != "" {
		if testenv.InCI() {
			t.Fatalf("%s: under CI=true the PC/SC end-to-end test must run (scripts/pcscd.sh starts pcscd with vpcd)", why)
		}
		t.Skipf("%s: skipping the PC/SC end-to-end test (run: ./scripts/pcscd.sh go test -tags pcsc ./tests/pcsc/)", why)
	}
	lockVPCD(t, addr)
	return addr, reader
}

// lockVPCD holds an exclusive file lock on the vpcd address until the
// test ends: test binaries of different packages run in parallel and
// would otherwise present their cards to the same virtual reader.
func lockVPCD(t *testing.T, addr string) {
	t.Helper()
	name := filepath.Join(os.TempDir(), "relay-vpcd-"+strings.NewReplacer(":", "_", "/", "_").Replace(addr)+".lock")
	f, err := os.OpenFile(name, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		t.Fatalf("lock %s: %v", name, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		t.Fatalf("lock %s: %v", name, err)
	}
	t.Cleanup(func() { f.Close() })
}

// present connects the simulated card to vpcd, as if laid on the
// reader; the returned function waits for the virtual card to leave and
// returns why it did.
func present(t *testing.T, ctx context.Context, addr string, card *simcard.Card) func() error {
	t.Helper()
	c, err := vpcd.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- c.Serve(ctx, vpcd.Card{Transport: bridge.Sim{Card: card}, UID: card.UID()})
	}()
	var got error
	waited := false
	wait := func() error {
		if !waited {
			got, waited = <-done, true
		}
		return got
	}
	t.Cleanup(func() { c.Close(); wait() })
	return wait
}

func TestTopUpOverPCSC(t *testing.T) {
	addr, reader := stack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	h := testserver.New(t, testbackend.Backends()[0], profile.AN12113(), testserver.Options{})
	uid := []byte{0x04, 0x5C, 0x3A, 0x91, 0x2B, 0x7E, 0x80}
	uidHex := strings.ToUpper(hex.EncodeToString(uid))
	card := h.Card(uid, 100)
	served := present(t, ctx, addr, card)

	r, err := pcsc.Open(ctx, pcsc.Options{Reader: reader, Wait: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	info := r.Info()
	t.Logf("PC/SC reader %q: UID %X, ATS %X, ATR %X", r.Name(), info.UID, info.ATS, r.ATR())
	if !bytes.Equal(info.UID, card.UID()) {
		t.Fatalf("UID via PC/SC %X, simulated card %X", info.UID, card.UID())
	}
	if len(info.ATS) == 0 {
		t.Fatal("no ATS via PC/SC")
	}
	session := func(token string) (*bridge.Report, error) {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return bridge.Run(sctx, bridge.Options{URL: h.WSURL(), Token: token, Name: "pcsc-e2e", Version: "1", Platform: "pcsc", Batch: true}, r, r.Info())
	}
	balance := func(want int64) {
		t.Helper()
		_, token := h.BalanceToken()
		rep, err := session(token)
		if err != nil {
			t.Fatalf("balance lookup: %v", err)
		}
		res := rep.Result
		if !res.OK || res.Kind != "balance" || res.Balance == nil || *res.Balance != want || !strings.EqualFold(res.CardUID, uidHex) {
			t.Fatalf("balance lookup: %+v (balance %v), want %d on card %s", res, res.Balance, want, uidHex)
		}
		t.Logf("balance lookup: %d %s in %d exchanges", *res.Balance, res.Currency, rep.Exchanges)
	}

	// 1. A top-up bound to this card, through pcscd.
	id, token := h.TopUp("pcsc-topup-1", 250, uidHex)
	rep, err := session(token)
	if err != nil {
		t.Fatalf("top-up: %v", err)
	}
	res := rep.Result
	if !res.OK || res.Status != "applied" || res.Balance == nil || *res.Balance != 350 || rep.Exchanges == 0 || rep.Commands < rep.Exchanges {
		t.Fatalf("top-up: %+v (balance %v), %d exchanges, %d commands", res, res.Balance, rep.Exchanges, rep.Commands)
	}
	if got := h.Status(id); got != "applied" {
		t.Fatalf("top-up status %q, want applied", got)
	}
	t.Logf("top-up applied: balance %d, %d exchanges, %d APDUs", *res.Balance, rep.Exchanges, rep.Commands)

	// 2. A balance lookup.
	balance(350)

	// 3. The card leaves the field right after committing: the bridge
	// reports tag_lost, the top-up is in doubt.
	id2, token2 := h.TopUp("pcsc-topup-2", 500, "")
	card.SetTearAfterCommit(true)
	rep, err = session(token2)
	if !errors.Is(err, bridge.ErrSessionFailed) || rep == nil || rep.Result.Error == nil || rep.Result.Error.Code != "tag_lost" || rep.Result.Status != "in_doubt" {
		t.Fatalf("torn session: %v, %+v", err, rep)
	}
	t.Logf("torn session: %v (status %s)", err, rep.Result.Status)
	if err := served(); !errors.Is(err, vpcd.ErrCardRemoved) {
		t.Fatalf("virtual card after the tear: %v, want ErrCardRemoved", err)
	}
	if got := h.Status(id2); got != "in_doubt" {
		t.Fatalf("status after the tear %q, want in_doubt", got)
	}

	// 4. The card is presented again and the top-up retried with a new
	// token: it resolves as applied, credited exactly once.
	if err := card.Tap(); err != nil {
		t.Fatal(err)
	}
	present(t, ctx, addr, card)
	again, err := r.Reconnect(ctx)
	if err != nil || !bytes.Equal(again.UID, uid) {
		t.Fatalf("card presented again: %X, %v", again.UID, err)
	}
	code, tk := h.API("POST", "/v1/topups/"+id2+"/bridge-tokens", "", nil)
	token3, _ := tk["bridge_token"].(string)
	if code != http.StatusCreated || token3 == "" {
		t.Fatalf("new bridge token: HTTP %d %v", code, tk)
	}
	rep, err = session(token3)
	if err != nil || rep.Result.Status != "applied" {
		t.Fatalf("retry: %v, %+v", err, rep)
	}
	if got := h.Status(id2); got != "applied" {
		t.Fatalf("status after the retry %q, want applied", got)
	}
	balance(850)

	// 5. Re-tap within the session: the card leaves right after
	// committing; the server prompts for it, the bridge (announcing the
	// retap feature) waits for it on the reader and the same session
	// settles the top-up as applied, credited once, with no new token.
	id3, token4 := h.TopUp("pcsc-topup-3", 150, "")
	card.SetTearAfterCommit(true)
	retaps := 0
	sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
	defer scancel()
	rep, err = bridge.Run(sctx, bridge.Options{URL: h.WSURL(), Token: token4, Name: "pcsc-e2e", Version: "1", Platform: "pcsc", Batch: true,
		Retap: func(ctx context.Context) (bridge.CardInfo, error) {
			retaps++
			if err := card.Tap(); err != nil {
				return bridge.CardInfo{}, err
			}
			present(t, ctx, addr, card)
			return r.Reconnect(ctx)
		}}, r, r.Info())
	if err != nil || rep.Result.Status != "applied" || retaps != 1 {
		t.Fatalf("re-tap within the session: %v, %+v, %d re-taps", err, rep, retaps)
	}
	if got := h.Status(id3); got != "applied" {
		t.Fatalf("status after the re-tap %q, want applied", got)
	}
	t.Logf("re-tap within the session: applied in %d exchanges", rep.Exchanges)
	balance(1000)
}
