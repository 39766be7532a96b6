//go:build pcsc

package pcsc

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/desfire-relay/relay/desfire/simcard"
	"github.com/desfire-relay/relay/internal/vpcdtest"
	"github.com/desfire-relay/relay/mobile-bridge/bridge"
	"github.com/desfire-relay/relay/mobile-bridge/vpcd"
)

func TestSelectReader(t *testing.T) {
	names := []string{"ACS ACR122U PICC Interface 00 00", "Virtual PCD 00 00", "Virtual PCD 00 01"}
	cases := []struct {
		name, sub, want string
		err             error
	}{
		{"first", "", names[0], nil},
		{"substring", "virtual", names[1], nil},
		{"exact slot", "Virtual PCD 00 01", names[2], nil},
		{"no match", "Omnikey", "", ErrNoReader},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := SelectReader(names, c.sub)
			if !errors.Is(err, c.err) || got != c.want {
				t.Fatalf("got %q, %v; want %q, %v", got, err, c.want, c.err)
			}
		})
	}
	if _, err := SelectReader(nil, ""); !errors.Is(err, ErrNoReader) {
		t.Fatalf("no readers: %v", err)
	}
}

func TestReaderOverVPCD(t *testing.T) {
	addr, reader := vpcdtest.Stack(t, ListReaders)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	uid := []byte{0x04, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66}
	sim, err := simcard.New(simcard.Options{UID: uid})
	if err != nil {
		t.Fatal(err)
	}
	served := vpcdtest.Present(t, ctx, addr, sim)
	r, err := Open(ctx, Options{Reader: reader, Wait: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	t.Logf("reader %q: UID %X ATS %X ATR %X", r.Name(), r.Info().UID, r.Info().ATS, r.ATR())
	if info := r.Info(); !bytes.Equal(info.UID, uid) || !bytes.Equal(info.ATS, vpcd.DefaultATS) {
		t.Fatalf("card info %X / %X, want UID %X and ATS %X", info.UID, info.ATS, uid, vpcd.DefaultATS)
	}
	if want := []byte{0x3B, 0x81, 0x80, 0x01, 0x80, 0x80}; !bytes.Equal(r.ATR(), want) {
		t.Fatalf("ATR %X, want %X", r.ATR(), want)
	}
	getVersion := []byte{0x90, 0x60, 0x00, 0x00, 0x00}
	if resp, err := r.Transmit(ctx, getVersion); err != nil || !bytes.HasSuffix(resp, []byte{0x91, 0xAF}) {
		t.Fatalf("GetVersion: %X, %v", resp, err)
	}

	// The card leaves the field: tag lost, and vpcd saw it go.
	sim.Remove()
	if resp, err := r.Transmit(ctx, getVersion); !errors.Is(err, bridge.ErrTagLost) {
		t.Fatalf("after removal: %X, %v; want ErrTagLost", resp, err)
	}
	if err := served(); !errors.Is(err, vpcd.ErrCardRemoved) {
		t.Fatalf("virtual card: %v, want ErrCardRemoved", err)
	}
	if _, err := r.Transmit(ctx, getVersion); !errors.Is(err, bridge.ErrTagLost) {
		t.Fatalf("with no card: %v, want ErrTagLost", err)
	}

	// Presented again: Reconnect finds it.
	if err := sim.Tap(); err != nil {
		t.Fatal(err)
	}
	vpcdtest.Present(t, ctx, addr, sim)
	info, err := r.Reconnect(ctx)
	if err != nil || !bytes.Equal(info.UID, uid) {
		t.Fatalf("reconnect: %X, %v", info.UID, err)
	}
	if resp, err := r.Transmit(ctx, getVersion); err != nil || !bytes.HasSuffix(resp, []byte{0x91, 0xAF}) {
		t.Fatalf("GetVersion after reconnect: %X, %v", resp, err)
	}
}

func TestNoCard(t *testing.T) {
	_, reader := vpcdtest.Stack(t, ListReaders)
	// The second vpcd slot never gets a card.
	other := reader[:len(reader)-1] + "1"
	start := time.Now()
	_, err := Open(context.Background(), Options{Reader: other, Wait: 1500 * time.Millisecond})
	if !errors.Is(err, ErrNoCard) {
		t.Fatalf("Open on an empty reader: %v, want ErrNoCard", err)
	}
	t.Logf("gave up after %s", time.Since(start).Round(time.Millisecond))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Open(ctx, Options{Reader: other, Wait: time.Minute}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Open with a cancelled context: %v", err)
	}
}
