package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/desfire/ntag424/simtag"
	"github.com/desfire-relay/relay/desfire/simcard"
	"github.com/desfire-relay/relay/mobile-bridge/bridge"
	"github.com/desfire-relay/relay/mobile-bridge/vpcd"
)

// presentOther serves a blank DESFire card or a factory-state NTAG 424
// DNA to vpcd, for issue and provision_ntag424 sessions through a real
// PC/SC stack.
func presentOther(ctx context.Context, kind, addr string, uid []byte, dropAfter int, retap time.Duration) int {
	var (
		vc     vpcd.Card
		remove func(int)
		tap    func() error
	)
	switch kind {
	case "blank":
		c, err := simcard.New(simcard.Options{UID: uid})
		if err != nil {
			fmt.Fprintln(os.Stderr, "vicc:", err)
			return 1
		}
		vc = vpcd.Card{Transport: bridge.Sim{Card: c}, UID: c.UID()}
		remove, tap = c.RemoveAfter, c.Tap
	case "ntag424":
		t, err := simtag.New(simtag.Options{UID: uid})
		if err != nil {
			fmt.Fprintln(os.Stderr, "vicc:", err)
			return 1
		}
		var tr desfire.Transport = bridge.SimTag{Tag: t}
		vc = vpcd.Card{Transport: tr, UID: t.AnticollisionUID(), ATS: bridge.NTAG424ATS}
		remove, tap = t.RemoveAfter, t.Tap
	default:
		fmt.Fprintln(os.Stderr, "vicc: -card must be issued, blank or ntag424")
		return 2
	}
	for {
		if dropAfter > 0 {
			remove(dropAfter)
		}
		fmt.Fprintf(os.Stderr, "vicc: presenting %s %X to vpcd at %s\n", kind, uid, addr)
		err := vpcd.Serve(ctx, addr, vc)
		switch {
		case ctx.Err() != nil:
			return 0
		case errors.Is(err, vpcd.ErrCardRemoved) && retap > 0:
			select {
			case <-ctx.Done():
				return 0
			case <-time.After(retap):
			}
			if err := tap(); err != nil {
				fmt.Fprintln(os.Stderr, "vicc:", err)
				return 1
			}
		default:
			fmt.Fprintln(os.Stderr, "vicc:", err)
			return 1
		}
	}
}
