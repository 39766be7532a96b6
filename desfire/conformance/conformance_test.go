package conformance_test

import (
	"testing"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/desfire/conformance"
	"github.com/desfire-relay/relay/desfire/simcard"
)

func TestSimulatedCard(t *testing.T) {
	conformance.Run(t, func(t *testing.T) desfire.Transport {
		c, err := simcard.New(simcard.Options{UID: []byte{4, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56}})
		if err != nil {
			t.Fatal(err)
		}
		return c
	})
}
