package cardscript_test

import (
	"context"
	"testing"

	"github.com/desfire-relay/relay/internal/testcard"
	"github.com/desfire-relay/relay/transaction/cardscript"
	"github.com/desfire-relay/relay/transaction/profile"
)

// BenchmarkTopUpScript measures the card work of one top-up — EV1 or EV2
// authentication, secure messaging of every command, the Transaction MAC —
// host and simulated card together, in process, batched. It is the
// cryptographic hot path of a session without the network or the ledger.
func BenchmarkTopUpScript(b *testing.B) {
	for _, p := range []profile.Profile{profile.AN12113(), profile.AN12113EV1()} {
		b.Run(p.Name, func(b *testing.B) {
			kp, _ := testcard.Keys(b, p)
			card := testcard.Issue(b, p, kp, uid, 0)
			pp := params(b, p, kp, 1)
			tr, _ := transport(card, true)
			b.ReportAllocs()
			for b.Loop() {
				card.Tap()
				res, err := cardscript.TopUp(context.Background(), tr, pp)
				if err != nil || !res.Applied {
					b.Fatalf("top-up: %+v %v", res, err)
				}
			}
		})
	}
}
