package simcard

import (
	"context"
	"testing"
)

// fuzzCard is a personalised card in a known state, rebuilt per input.
func fuzzCard(t *testing.T) *Card {
	c := newCard(t, Options{Capacity: 2048})
	personalise(t, c, true)
	return c
}

// FuzzTransmit feeds arbitrary APDU sequences (each prefixed by its length
// byte) to a personalised card: no panic, every answer is a status word
// with bounded data, and storage never exceeds the capacity.
func FuzzTransmit(f *testing.F) {
	seeds := [][]byte{
		{5, 0x90, 0x60, 0, 0, 0, 5, 0x90, 0xAF, 0, 0, 0},
		{9, 0x90, 0x5A, 0, 0, 3, 0x56, 0x34, 0x12, 0, 8, 0x90, 0x71, 0, 0, 2, 2, 0, 0},
		{9, 0x90, 0x5A, 0, 0, 3, 0x56, 0x34, 0x12, 0, 13, 0x90, 0xBD, 0, 0, 7, 4, 0, 0, 0, 0, 0, 0, 0},
		{9, 0x90, 0x5A, 0, 0, 3, 0x56, 0x34, 0x12, 0, 14, 0x90, 0x3D, 0, 0, 8, 4, 0, 0, 0, 200, 0, 0, 1, 0},
		{9, 0x90, 0x5A, 0, 0, 3, 0x56, 0x34, 0x12, 0, 14, 0x90, 0xCD, 0, 0, 7, 9, 0, 0xEE, 0xEE, 0xFF, 0xFF, 0xFF, 0},
		{6, 0x90, 0xAA, 0, 0, 1, 0, 6, 0x90, 0xAF, 0, 0, 1, 0},
		{4, 0x00, 0xA4, 0x04, 0x00},
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		c := fuzzCard(t)
		ctx := context.Background()
		for n := 0; len(in) > 0 && n < 64; n++ {
			l := int(in[0])
			in = in[1:]
			if l > len(in) {
				l = len(in)
			}
			apdu := in[:l]
			in = in[l:]
			r, err := c.Transmit(ctx, apdu)
			if err != nil {
				t.Fatalf("transmit: %v", err)
			}
			if len(r) < 2 || len(r) > DefaultMaxFrame+2 {
				t.Fatalf("answer of %d bytes", len(r))
			}
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.used > c.capacity || len(c.apps) > MaxApplications {
			t.Fatalf("storage %d of %d, %d apps", c.used, c.capacity, len(c.apps))
		}
	})
}
