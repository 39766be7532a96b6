//go:build unix

package vpcdtest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/desfire-relay/relay/desfire/simcard"
	"github.com/desfire-relay/relay/internal/testenv"
	"github.com/desfire-relay/relay/mobile-bridge/bridge"
	"github.com/desfire-relay/relay/mobile-bridge/vpcd"
)

// Stack returns the vpcd address ($VPCD_ADDR) and reader name
// ($PCSC_READER) of the private pcscd that scripts/pcscd.sh starts. It
// asks listReaders (pcsc.ListReaders: the caller passes it, so this
// package needs no cgo) whether pcscd answers, skips the test locally or
// fails it under CI=true when not, and holds the virtual reader for the
// test (see Lock).
func Stack(t testing.TB, listReaders func() ([]string, error)) (addr, reader string) {
	t.Helper()
	addr, reader = os.Getenv("VPCD_ADDR"), os.Getenv("PCSC_READER")
	var why string
	if addr == "" {
		why = "VPCD_ADDR is not set"
	} else if _, err := listReaders(); err != nil {
		why = err.Error()
	}
	if why != "" {
		if testenv.InCI() {
			t.Fatalf("%s: under CI=true the PC/SC tests must run (scripts/pcscd.sh starts pcscd with vpcd)", why)
		}
		t.Skipf("%s: skipping the PC/SC test (run it with ./scripts/pcscd.sh go test -tags pcsc ...)", why)
	}
	Lock(t, addr)
	return addr, reader
}

// Lock holds an exclusive file lock on the vpcd address until the test
// ends: test binaries of different packages run in parallel and would
// otherwise present their cards to the same virtual reader.
func Lock(t testing.TB, addr string) {
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

// Present connects the simulated card to vpcd at addr, as if laid on the
// reader; the returned function waits for the virtual card to leave and
// returns why it did. The connection closes when the test ends.
func Present(t testing.TB, ctx context.Context, addr string, card *simcard.Card) func() error {
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
