package vpcd

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/desfire-relay/relay/desfire/ntag424"
	"github.com/desfire-relay/relay/desfire/ntag424/simtag"
	"github.com/desfire-relay/relay/mobile-bridge/bridge"
)

// TestServeNTAG424: the simulated NTAG 424 DNA runs behind the virtual
// reader: UID and ATS from the reader, ISO SELECT of the NDEF
// application by name, the capability container read with ISOReadBinary,
// and removal closing the connection.
func TestServeNTAG424(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tag, err := simtag.New(simtag.Options{UID: []byte{4, 1, 2, 3, 4, 5, 6}})
	if err != nil {
		t.Fatal(err)
	}
	f := newFakeVPCD(t)
	done := serve(t, ctx, f, Card{Transport: bridge.SimTag{Tag: tag}, UID: tag.AnticollisionUID(), ATS: bridge.NTAG424ATS})
	if uid := f.ask([]byte{0xFF, 0xCA, 0, 0, 0}); !bytes.Equal(uid, []byte{4, 1, 2, 3, 4, 5, 6, 0x90, 0}) {
		t.Fatalf("UID %X", uid)
	}
	if ats := f.ask([]byte{0xFF, 0xCA, 1, 0, 0}); !bytes.Equal(ats, append(append([]byte(nil), bridge.NTAG424ATS...), 0x90, 0)) {
		t.Fatalf("ATS %X", ats)
	}
	if r := f.ask(ntag424.SelectAppAPDU()); !bytes.Equal(r, []byte{0x90, 0}) {
		t.Fatalf("select %X", r)
	}
	if r := f.ask(ntag424.SelectFileAPDU(ntag424.FIDCC)); !bytes.Equal(r, []byte{0x90, 0}) {
		t.Fatalf("select CC %X", r)
	}
	if r := f.ask(ntag424.ReadBinaryAPDU(0, 15)); !bytes.Equal(r, append(ntag424.CapabilityContainer(false)[:15], 0x90, 0)) {
		t.Fatalf("CC %X", r)
	}
	tag.RemoveAfter(0)
	if err := WriteFrame(f.conn, ntag424.SelectAppAPDU()); err != nil {
		t.Fatal(err)
	}
	if err := wait(t, done); !errors.Is(err, ErrCardRemoved) {
		t.Fatalf("Serve: %v", err)
	}
}
