package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

// FuzzTransceiveAppendJSON: the hand-written encoder writes exactly the
// bytes of encoding/json, for any transceive.
func FuzzTransceiveAppendJSON(f *testing.F) {
	f.Add(uint64(1), "transceive", []byte{0x90, 0x60, 0x00, 0x00, 0x00}, "9100", "91AF", uint8(2), false)
	f.Add(uint64(0), "<&>\u2028\x00\"\\é", []byte{}, "", "\xff", uint8(0), true)
	f.Fuzz(func(t *testing.T, id uint64, typ string, apdu []byte, e1, e2 string, n uint8, nilCAPDUs bool) {
		msg := Transceive{Type: typ, ID: id}
		if !nilCAPDUs {
			msg.CAPDUs = make([]CAPDU, int(n%5))
			for i := range msg.CAPDUs {
				msg.CAPDUs[i].APDU = apdu[:len(apdu)*i/max(len(msg.CAPDUs), 1)]
				if i%2 == 0 {
					msg.CAPDUs[i].APDU = nil
				}
				switch i % 3 {
				case 1:
					msg.CAPDUs[i].Expect = []string{e1}
				case 2:
					msg.CAPDUs[i].Expect = []string{e1, e2}
				}
			}
		}
		want, err := json.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		prefix := []byte("xy")
		got := msg.AppendJSON(prefix)
		if !bytes.Equal(got[:2], prefix) || !bytes.Equal(got[2:], want) {
			t.Fatalf("AppendJSON\n got %s\nwant %s", got[2:], want)
		}
	})
}

// FuzzDecodeResponsesFast: the fast path accepts only frames the general
// decoder accepts, with the same result, and Decode as a whole accepts and
// refuses exactly what the general decoder does.
func FuzzDecodeResponsesFast(f *testing.F) {
	for _, s := range []string{
		`{"type":"responses","id":3,"rapdus":["9100","abCD9100"]}`,
		` { "rapdus" : [ ] , "error":"tag_lost", "id" : 18446744073709551615,"type":"responses"} `,
		`{"type":"responses","id":3,"rapdus":["9100"],"id":4}`,
		`{"type":"responses","ID":3,"rapdus":["9100"]}`,
		`{"type":"responses","id":03,"rapdus":["9100"]}`,
		`{"type":"responses","id":3e0,"rapdus":["9100"]}`,
		`{"type":"responses","id":3,"rapdus":["91\u0030"]}`,
		`{"type":"responses","id":3,"rapdus":["910"]}`,
		`{"type":"responses","id":3,"rapdus":null}`,
		`{"type":"responses","id":3,"rapdus":["9100"]}x`,
		`{"type":"responses","id":3,"rapdus":["9100"],"error":"boom"}`,
		`{"type":"card","uid":"04112233445566"}`,
		`{"type":"responses","id":0,"rapdus":["9100"]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		general, gerr := decodeGeneral(frame)
		if m, ok := decodeResponsesFast(frame); ok {
			if gerr != nil {
				t.Fatalf("fast path accepted what the general decoder refuses (%v): %q", gerr, frame)
			}
			if !reflect.DeepEqual(m, general) {
				t.Fatalf("fast %+v, general %+v for %q", m.Responses, general.Responses, frame)
			}
		}
		m, err := Decode(frame)
		if (err == nil) != (gerr == nil) {
			t.Fatalf("Decode error %v, general %v for %q", err, gerr, frame)
		}
		if err != nil && !errors.Is(err, ErrProtocol) {
			t.Fatalf("error not a protocol violation: %v", err)
		}
		if err == nil && !reflect.DeepEqual(m, general) {
			t.Fatalf("Decode %+v, general %+v", m, general)
		}
	})
}

// TestDecodeResponsesFastTaken: plain answers really take the fast path
// (else the fuzz target above proves nothing about it).
func TestDecodeResponsesFastTaken(t *testing.T) {
	for _, s := range []string{
		`{"type":"responses","id":3,"rapdus":["9100","abCD9100"]}`,
		`{"id":7,"rapdus":["91AF"],"type":"responses","error":"timeout"}`,
	} {
		if _, ok := decodeResponsesFast([]byte(s)); !ok {
			t.Errorf("fast path refused %s", s)
		}
	}
	if _, ok := decodeResponsesFast([]byte(`{"type":"responses","id":3,"rapdus":["9100"],"x":1}`)); ok {
		t.Error("fast path took a frame with an unknown key")
	}
}
