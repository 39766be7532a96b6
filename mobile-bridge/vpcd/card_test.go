package vpcd

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/desfire-relay/relay/desfire/simcard"
)

func TestHistoricalBytes(t *testing.T) {
	cases := []struct {
		name    string
		ats     string
		want    string
		wantErr bool
	}{
		{"DESFire EV2", "067577810280", "80", false},
		{"TL only", "01", "", false},
		{"no interface bytes", "0305AA", "AA", false},
		{"TA only, two historical", "05 15 77 C1 05", "C105", false},
		{"empty", "", "", true},
		{"TL too long", "0775778102", "", true},
		{"TL too short", "02757781", "", true},
		{"interface bytes missing", "037577", "", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := HistoricalBytes(mustHex(t, c.ats))
			if c.wantErr {
				if !errors.Is(err, ErrATS) {
					t.Fatalf("error %v, want ErrATS", err)
				}
				return
			}
			if err != nil || !bytes.Equal(got, mustHex(t, c.want)) {
				t.Fatalf("got %X, %v; want %s", got, err, c.want)
			}
		})
	}
}

func TestContactlessATR(t *testing.T) {
	cases := []struct{ name, hist, want string }{
		// The ATR PC/SC readers report for MIFARE DESFire.
		{"DESFire", "80", "3B8180018080"},
		{"no historical bytes", "", "3B80800101"},
		{"two bytes", "C105", "3B828001C105C7"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ContactlessATR(mustHex(t, c.hist))
			if err != nil || !bytes.Equal(got, mustHex(t, c.want)) {
				t.Fatalf("got %X, %v; want %s", got, err, c.want)
			}
		})
	}
	if _, err := ContactlessATR(make([]byte, 16)); err == nil {
		t.Fatal("16 historical bytes accepted")
	}
}

func TestReaderAPDU(t *testing.T) {
	p, err := Card{Transport: &simcard.Card{}, UID: mustHex(t, "04A1B2C3D4E5F6")}.prepare()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, capdu, want string
		forCard           bool
	}{
		{"UID", "FFCA000000", "04A1B2C3D4E5F6 9000", false},
		{"UID without Le", "FFCA0000", "04A1B2C3D4E5F6 9000", false},
		{"UID exact Le", "FFCA000007", "04A1B2C3D4E5F6 9000", false},
		{"UID short Le", "FFCA000004", "6C07", false},
		{"UID long Le", "FFCA00000A", "04A1B2C3D4E5F6 6282", false},
		{"ATS", "FFCA010000", "067577810280 9000", false},
		{"unknown P1", "FFCA020000", "6A81", false},
		{"P2 not zero", "FFCA000100", "6A81", false},
		{"with data", "FFCA00000100", "6700", false},
		{"other reader INS", "FF00000000", "6D00", false},
		{"DESFire native wrapped", "9060000000", "", true},
		{"ISO SELECT", "00A4040000", "", true},
		{"short class FF", "FFCA", "", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, ok := p.readerAPDU(mustHex(t, c.capdu))
			if ok == c.forCard {
				t.Fatalf("handled by reader = %v, want %v", ok, !c.forCard)
			}
			if ok && !bytes.Equal(got, mustHex(t, c.want)) {
				t.Fatalf("got %X, want %s", got, c.want)
			}
		})
	}
}

func TestPrepare(t *testing.T) {
	sim := &simcard.Card{}
	cases := []struct {
		name string
		card Card
		ok   bool
	}{
		{"defaults", Card{Transport: sim, UID: make([]byte, 7)}, true},
		{"4-byte UID", Card{Transport: sim, UID: make([]byte, 4)}, true},
		{"no transport", Card{UID: make([]byte, 7)}, false},
		{"no UID", Card{Transport: sim}, false},
		{"UID of 5", Card{Transport: sim, UID: make([]byte, 5)}, false},
		{"bad ATS", Card{Transport: sim, UID: make([]byte, 7), ATS: []byte{9, 0}}, false},
		{"ATR too long", Card{Transport: sim, UID: make([]byte, 7), ATR: make([]byte, 34)}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := c.card.prepare()
			if (err == nil) != c.ok {
				t.Fatalf("prepare: %v, want ok=%v", err, c.ok)
			}
		})
	}
}

// FuzzReaderAPDU feeds arbitrary APDUs and ATSs: no panic, every answer
// the reader gives ends in a status word, and ATS parsing never returns
// more bytes than it was given.
func FuzzReaderAPDU(f *testing.F) {
	f.Add([]byte{0xFF, 0xCA, 0, 0, 0}, DefaultATS)
	f.Add([]byte{0xFF, 0xCA, 1, 0, 4}, []byte{1})
	f.Add([]byte{0x90, 0x60, 0, 0, 0}, []byte{3, 0x75, 0x77})
	f.Fuzz(func(t *testing.T, capdu, ats []byte) {
		if hist, err := HistoricalBytes(ats); err == nil && len(hist) >= len(ats) {
			t.Fatalf("historical bytes %X longer than ATS %X", hist, ats)
		}
		p, err := Card{Transport: &simcard.Card{}, UID: make([]byte, 7), ATS: ats, ATR: []byte{0x3B, 0}}.prepare()
		if err != nil {
			t.Fatal(err)
		}
		if r, ok := p.readerAPDU(capdu); ok && len(r) < 2 {
			t.Fatalf("answer %X without status word", r)
		}
	})
}

func TestTransmitRemoved(t *testing.T) {
	sim, err := simcard.New(simcard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := Card{Transport: sim, UID: sim.UID()}.prepare()
	if err != nil {
		t.Fatal(err)
	}
	r, err := p.transmit(context.Background(), mustHex(t, "9060000000"))
	if err != nil || len(r) < 2 || !bytes.Equal(r[len(r)-2:], mustHex(t, "91AF")) {
		t.Fatalf("GetVersion: %X, %v", r, err)
	}
	sim.Remove()
	if _, err := p.transmit(context.Background(), mustHex(t, "9060000000")); !errors.Is(err, ErrCardRemoved) || !errors.Is(err, simcard.ErrCardRemoved) {
		t.Fatalf("removed card: %v", err)
	}
}
