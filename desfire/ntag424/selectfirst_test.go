package ntag424_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/desfire/ntag424"
	"github.com/desfire-relay/relay/desfire/ntag424/simtag"
)

// batcher counts round trips over a transport; forge, when set, replaces
// the answer to the select.
type batcher struct {
	desfire.Transport
	trips int
	forge []byte
}

func (b *batcher) Transmit(ctx context.Context, a []byte) ([]byte, error) {
	b.trips++
	return b.Transport.Transmit(ctx, a)
}

func (b *batcher) TransmitBatch(ctx context.Context, cmds []desfire.BatchCommand) ([][]byte, error) {
	b.trips++
	rs, err := desfire.SequentialBatch(ctx, b.Transport, cmds)
	if b.forge != nil && len(rs) > 0 && bytes.Equal(cmds[0].APDU, ntag424.SelectAppAPDU()) {
		rs[0] = b.forge
	}
	return rs, err
}

type plain struct {
	desfire.Transport
	apdus [][]byte
}

func (p *plain) Transmit(ctx context.Context, a []byte) ([]byte, error) {
	p.apdus = append(p.apdus, a)
	return p.Transport.Transmit(ctx, a)
}

// authenticate runs AuthenticateEV2First with the factory key 0.
func authenticate(t desfire.Transport) error {
	return desfire.NewCard(t).Authenticate(context.Background(), desfire.NewAuthEV2First(0, make([]byte, 16), nil))
}

// TestSelectFirst: over a batching transport the select and the first
// authentication frame share one round trip and the authentication
// completes in two; without batching the select goes first on its own; a
// select answered with anything but 9000 (a tag without the application,
// or a bridge's forgery) fails the first command with ErrSelect.
func TestSelectFirst(t *testing.T) {
	newTag := func() *simtag.Tag {
		tag, err := simtag.New(simtag.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return tag
	}
	b := &batcher{Transport: newTag()}
	if err := authenticate(ntag424.SelectFirst(b)); err != nil || b.trips != 2 {
		t.Fatalf("batching: %v, %d round trips", err, b.trips)
	}
	p := &plain{Transport: newTag()}
	if err := authenticate(ntag424.SelectFirst(p)); err != nil || len(p.apdus) != 3 || !bytes.Equal(p.apdus[0], ntag424.SelectAppAPDU()) {
		t.Fatalf("plain: %v, %d APDUs", err, len(p.apdus))
	}
	for _, forged := range [][]byte{{0x6A, 0x82}, {0x90}, {}, {0x01, 0x90, 0x00}} {
		b := &batcher{Transport: newTag(), forge: forged}
		if err := authenticate(ntag424.SelectFirst(b)); !errors.Is(err, ntag424.ErrSelect) {
			t.Fatalf("select answered %X: %v", forged, err)
		}
	}
	// Without the application selected the tag refuses the authentication.
	if err := authenticate(newTag()); err == nil {
		t.Fatal("authenticated without a select")
	}
}
