package desfire

import (
	"bytes"
	"testing"

	"github.com/desfire-relay/relay/desfire/dfcrypto"
)

func allZero(b []byte) bool { return len(b) > 0 && bytes.Count(b, []byte{0}) == len(b) }

// TestEV1SecretsCleared: after AuthenticateAES the authenticator holds no
// key or RndA, and closing the channel clears the session key and IV; an
// abandoned authentication clears its early channel.
func TestEV1SecretsCleared(t *testing.T) {
	key := bytes.Repeat([]byte{0x42}, 16)
	rndA := bytes.Repeat([]byte{0xA1}, 16)
	rndB := bytes.Repeat([]byte{0xB2}, 16)
	handshake := func(t *testing.T) (*AuthAES, []byte) {
		a, err := NewAuthAES(0, key, bytes.NewReader(rndA))
		if err != nil {
			t.Fatal(err)
		}
		a.Start()
		encB, err := dfcrypto.EncryptCBC(key, make([]byte, 16), rndB)
		if err != nil {
			t.Fatal(err)
		}
		ct, err := a.Respond(StatusAdditionalFrame, encB)
		if err != nil {
			t.Fatal(err)
		}
		proof, err := dfcrypto.EncryptCBC(key, ct[len(ct)-16:], dfcrypto.RotL(rndA))
		if err != nil {
			t.Fatal(err)
		}
		return a, proof
	}
	t.Run("finished", func(t *testing.T) {
		a, proof := handshake(t)
		ch, err := a.Finish(StatusOK, proof)
		if err != nil {
			t.Fatal(err)
		}
		if !allZero(a.key) || !allZero(a.rndA) {
			t.Fatal("the authenticator kept its key or RndA")
		}
		c := ch.(*EV1Channel)
		if allZero(c.key) {
			t.Fatal("session key missing while the channel is open")
		}
		c.Close()
		if !allZero(c.key) || !allZero(c.iv) {
			t.Fatal("closing the channel left the session key or IV")
		}
		if bytes.Equal(key, make([]byte, 16)) {
			t.Fatal("the caller's key was cleared: the authenticator must copy it")
		}
	})
	t.Run("abandoned", func(t *testing.T) {
		a, _ := handshake(t)
		early, err := a.EarlyChannel()
		if err != nil {
			t.Fatal(err)
		}
		a.Forget()
		c := early.(*EV1Channel)
		if !allZero(a.key) || !allZero(c.key) || c.Err() == nil {
			t.Fatal("an abandoned authentication kept its key or its early channel")
		}
	})
}

// TestEV2SecretsCleared: after AuthenticateEV2First the authenticator
// holds no key or random numbers.
func TestEV2SecretsCleared(t *testing.T) {
	key := bytes.Repeat([]byte{0x24}, 16)
	rndA := bytes.Repeat([]byte{0x1A}, 16)
	rndB := bytes.Repeat([]byte{0x2B}, 16)
	a := NewAuthEV2First(0, key, bytes.NewReader(rndA))
	a.Start()
	encB, _ := dfcrypto.EncryptCBC(key, make([]byte, 16), rndB)
	if _, err := a.Respond(StatusAdditionalFrame, encB); err != nil {
		t.Fatal(err)
	}
	plain := append(append([]byte{1, 2, 3, 4}, dfcrypto.RotL(rndA)...), make([]byte, 12)...)
	proof, _ := dfcrypto.EncryptCBC(key, make([]byte, 16), plain)
	ch, err := a.Finish(StatusOK, proof)
	if err != nil {
		t.Fatal(err)
	}
	if !allZero(a.key) || !allZero(a.rndA) || !allZero(a.rndB) {
		t.Fatal("the authenticator kept its key or random numbers")
	}
	c := ch.(*EV2Channel)
	c.Close()
	if !allZero(c.enc) || !allZero(c.mac) {
		t.Fatal("closing the channel left the session keys")
	}
}
