package dfcrypto

import (
	"bytes"
	"testing"
)

// TestMACMatchesMACt: a MAC reused over many messages gives what MACt
// gives for each (the reset between messages loses nothing).
func TestMACMatchesMACt(t *testing.T) {
	key := bytes.Repeat([]byte{0x2B}, KeySize)
	m, err := NewMAC(key)
	if err != nil {
		t.Fatal(err)
	}
	for n := 0; n <= 3*BlockSize+1; n++ {
		msg := bytes.Repeat([]byte{byte(n)}, n)
		want, err := MACt(key, msg)
		if err != nil {
			t.Fatal(err)
		}
		if got := m.MACt(msg); !bytes.Equal(got, want) {
			t.Fatalf("%d bytes: MAC.MACt %X, MACt %X", n, got, want)
		}
	}
	if _, err := NewMAC(key[:15]); err == nil {
		t.Fatal("NewMAC took a 15-byte key")
	}
}
