package simtag

import (
	"context"
	"testing"

	"github.com/desfire-relay/relay/desfire/ntag424"
)

// FuzzTransmit: no APDU sequence makes the tag panic.
func FuzzTransmit(f *testing.F) {
	f.Add(ntag424.SelectAppAPDU(), []byte{0x90, 0x71, 0, 0, 2, 0, 0, 0})
	f.Add(ntag424.SelectAppAPDU(), []byte{0x90, 0x5F, 0, 0, 4, 2, 0x40, 0, 0xE0, 0})
	f.Add(ntag424.SelectFileAPDU(ntag424.FIDNDEF), ntag424.ReadBinaryAPDU(0, 0))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		tag, err := New(Options{UID: []byte{4, 1, 2, 3, 4, 5, 6}})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		_, _ = tag.Transmit(ctx, ntag424.SelectAppAPDU())
		_, _ = tag.Transmit(ctx, a)
		_, _ = tag.Transmit(ctx, b)
		_, _ = tag.Transmit(ctx, ntag424.ReadBinaryAPDU(0, 0))
	})
}
