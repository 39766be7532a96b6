//go:build pcsc

package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/desfire-relay/relay/mobile-bridge/pcsc"
)

// openPCSC opens the PC/SC reader whose name contains reader (the first
// one when empty) and waits up to wait for a card.
func openPCSC(ctx context.Context, reader string, wait time.Duration) (cardBackend, error) {
	r, err := pcsc.Open(ctx, pcsc.Options{Reader: reader, Wait: wait})
	if err != nil {
		return cardBackend{}, err
	}
	info := r.Info()
	fmt.Fprintf(os.Stderr, "bridge: card %X in %q (ATS %X, ATR %X)\n", info.UID, r.Name(), info.ATS, r.ATR())
	return cardBackend{card: r, info: info, platform: "pcsc", close: r.Close, retap: r.Reconnect}, nil
}

// listPCSCReaders prints the PC/SC readers, one per line.
func listPCSCReaders(w io.Writer) error {
	names, err := pcsc.ListReaders()
	if err != nil {
		return err
	}
	if len(names) == 0 {
		fmt.Fprintln(w, "no PC/SC readers")
	}
	for _, n := range names {
		fmt.Fprintln(w, n)
	}
	return nil
}
