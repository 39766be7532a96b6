package protocol

import (
	"encoding/json"
	"strings"
	"testing"
)

// BenchmarkDecodeResponses decodes a bridge's answer to a 6-command EV2
// batch, the frame the server parses on every exchange.
func BenchmarkDecodeResponses(b *testing.B) {
	r := `"` + strings.Repeat("AB", 24) + `9100"`
	frame := []byte(`{"type":"responses","id":3,"rapdus":[` + strings.Repeat(r+",", 5) + r + `]}`)
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(frame); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodeTransceive encodes a 6-command batch, and decodes it as a
// bridge does.
func BenchmarkEncodeTransceive(b *testing.B) {
	msg := Transceive{Type: TypeTransceive, ID: 2, CAPDUs: make([]CAPDU, 6)}
	for i := range msg.CAPDUs {
		msg.CAPDUs[i].APDU = make([]byte, 40)
		msg.CAPDUs[i].Expect = []string{SW(0x9100)}
	}
	b.ReportAllocs()
	for b.Loop() {
		frame, err := json.Marshal(msg)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := DecodeServer(frame); err != nil {
			b.Fatal(err)
		}
	}
}
