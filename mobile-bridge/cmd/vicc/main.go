// Command vicc presents a simulated DESFire card to PC/SC through the
// vsmartcard virtual reader (vpcd): it issues the card on the spot
// through the real issuance commands, from a key file and card profile,
// and connects it to vpcd, so `bridge -pcsc` (or any PC/SC tool) finds a
// card in the "Virtual PCD" reader. When the card leaves the field
// (-drop-after) the reader sees it removed; with -retap it is presented
// again after that pause. It runs until interrupted.
package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/desfire-relay/relay/mobile-bridge/bridge"
	"github.com/desfire-relay/relay/mobile-bridge/vpcd"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("vicc", flag.ContinueOnError)
	addr := fs.String("addr", vpcd.DefaultAddr, "vpcd address (host:port; scripts/pcscd.sh exports VPCD_ADDR)")
	keyFile := fs.String("keys", "data/dev-keys.json", "key file used to issue the simulated card")
	profName := fs.String("profile", "an12113-ev2", "card profile of the simulated card")
	uidHex := fs.String("uid", "04A1B2C3D4E5F6", "UID of the simulated card (7 bytes hex)")
	initial := fs.Int("initial", 0, "initial value of the simulated card")
	dropAfter := fs.Int("drop-after", 0, "the card leaves the field after N APDUs (0: never)")
	retap := fs.Duration("retap", 0, "present the card again this long after it left the field (0: exit)")
	kind := fs.String("card", "issued", "what to present: issued (a DESFire card issued with -keys), blank (a blank DESFire card, for an issue session) or ntag424 (a factory-state NTAG 424 DNA)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	uid, err := hex.DecodeString(*uidHex)
	if err != nil || len(uid) != 7 {
		fmt.Fprintln(os.Stderr, "vicc: -uid must be 7 bytes of hex")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if *kind != "issued" {
		return presentOther(ctx, *kind, *addr, uid, *dropAfter, *retap)
	}
	card, err := bridge.IssueSim(ctx, *keyFile, *profName, uid, int32(*initial))
	if err != nil {
		fmt.Fprintln(os.Stderr, "vicc:", err)
		return 1
	}
	for {
		if *dropAfter > 0 {
			card.RemoveAfter(*dropAfter)
		}
		fmt.Fprintf(os.Stderr, "vicc: presenting card %X to vpcd at %s\n", uid, *addr)
		err := vpcd.Serve(ctx, *addr, vpcd.Card{Transport: bridge.Sim{Card: card}, UID: card.UID()})
		switch {
		case ctx.Err() != nil:
			return 0
		case errors.Is(err, vpcd.ErrCardRemoved) && *retap > 0:
			fmt.Fprintf(os.Stderr, "vicc: card left the field; presenting it again in %s\n", *retap)
			select {
			case <-ctx.Done():
				return 0
			case <-time.After(*retap):
			}
			if err := card.Tap(); err != nil {
				fmt.Fprintln(os.Stderr, "vicc:", err)
				return 1
			}
		default:
			fmt.Fprintln(os.Stderr, "vicc:", err)
			return 1
		}
	}
}
