package desfire

import (
	"crypto/rand"
	"fmt"
	"io"

	"github.com/desfire-relay/relay/desfire/dfcrypto"
)

// ev1CmdAuthAES is DESFire EV1 AuthenticateAES: KeyNo(1); the card answers
// 91AF E(K, RndB), then 9100 E(K, RotL(RndA)) (libfreefare
// mifare_desfire_authenticate_aes; ev1_aes_auth.json holds public traces).
const ev1CmdAuthAES byte = 0xAA

// ev1RndSize is the size of RndA and RndB with an AES key.
const ev1RndSize = 16

// AuthAES runs DESFire EV1 AuthenticateAES (0xAA) with an AES-128 key and
// creates the EV1 secure channel. Its exchange is one CBC chain under the
// static key:
//
//	card → E(K, RndB)                       IV = 0
//	PCD  → E(K, RndA ‖ RotL(RndB))          IV = E(K, RndB)
//	card → E(K, RotL(RndA))                 IV = last block the PCD sent
//
// The card's proof is therefore known in advance, which is why AuthAES is
// an EarlyChanneler: a relay can seal the first protected commands before
// the proof arrives and send them in the same batch. An AuthAES is used
// once and is not safe for concurrent use.
type AuthAES struct {
	keyNo byte
	key   []byte
	rnd   io.Reader

	step   int // 0 new, 1 after Respond, 2 finished or failed
	rndA   []byte
	lastIV []byte // last block of the PCD cryptogram: IV of the card's proof
	ch     *EV1Channel
}

var (
	_ Authenticator  = (*AuthAES)(nil)
	_ EarlyChanneler = (*AuthAES)(nil)
)

// NewAuthAES returns an Authenticator for AuthenticateAES with key number
// keyNo and the 16-byte AES key (copied). rnd supplies RndA (crypto/rand
// when nil), so tests can replay published traces.
func NewAuthAES(keyNo byte, key []byte, rnd io.Reader) (*AuthAES, error) {
	if len(key) != dfcrypto.KeySize {
		return nil, fmt.Errorf("authenticate AES key %d: key of %d bytes: %w", keyNo, len(key), dfcrypto.ErrKeySize)
	}
	if rnd == nil {
		rnd = rand.Reader
	}
	return &AuthAES{keyNo: keyNo, key: append([]byte(nil), key...), rnd: rnd}, nil
}

func (a *AuthAES) name() string { return fmt.Sprintf("authenticate AES key %d", a.keyNo) }

// Start returns the first frame: 0xAA KeyNo.
func (a *AuthAES) Start() (code byte, payload []byte) {
	return ev1CmdAuthAES, []byte{a.keyNo}
}

// Respond takes the card's challenge E(K, RndB) (status 91AF) and returns
// E(K, RndA ‖ RotL(RndB)). From here on EarlyChannel is available.
func (a *AuthAES) Respond(status byte, data []byte) ([]byte, error) {
	if a.step != 0 {
		return nil, fmt.Errorf("%s: respond: %w", a.name(), ErrEV1AuthState)
	}
	a.step = 2 // failed unless we reach the end
	if status != StatusAdditionalFrame {
		a.forget()
		return nil, fmt.Errorf("%s: first frame: %w", a.name(), ev1StatusErr(status))
	}
	if err := checkLen(len(data), ev1RndSize); err != nil {
		a.forget()
		return nil, fmt.Errorf("%s: E(K, RndB): %w", a.name(), err)
	}
	out, err := a.respond(data)
	if err != nil {
		a.forget()
		return nil, fmt.Errorf("%s: %w", a.name(), err)
	}
	a.step = 1
	return out, nil
}

func (a *AuthAES) respond(encRndB []byte) ([]byte, error) {
	rndB, err := dfcrypto.DecryptCBC(a.key, make([]byte, dfcrypto.BlockSize), encRndB)
	if err != nil {
		return nil, err
	}
	defer clear(rndB)
	rndA := make([]byte, ev1RndSize)
	if _, err := io.ReadFull(a.rnd, rndA); err != nil {
		return nil, fmt.Errorf("RndA: %w", err)
	}
	plain := ev1Concat(rndA, dfcrypto.RotL(rndB))
	defer clear(plain)
	// The chain continues from the card's cryptogram.
	ct, err := dfcrypto.EncryptCBC(a.key, encRndB, plain)
	if err != nil {
		return nil, err
	}
	sk, err := EV1SessionKey(rndA, rndB)
	if err != nil {
		return nil, err
	}
	ch, err := newEV1Channel(sk, a.keyNo)
	clear(sk)
	if err != nil {
		return nil, err
	}
	ch.awaitProof = true
	a.rndA = rndA
	a.lastIV = append([]byte(nil), ct[len(ct)-dfcrypto.BlockSize:]...)
	a.ch = ch
	return ct, nil
}

// EarlyChannel returns the channel of this authentication once Respond has
// succeeded, before the card's proof is verified. Commands may be sealed on
// it; its replies refuse to open until Finish has succeeded, and it is
// closed if Finish fails.
func (a *AuthAES) EarlyChannel() (Channel, error) {
	if a.ch == nil {
		return nil, fmt.Errorf("%s: early channel before the challenge was answered: %w", a.name(), ErrEV1AuthState)
	}
	if err := a.ch.Err(); err != nil {
		return nil, fmt.Errorf("%s: early channel: %w", a.name(), err)
	}
	return a.ch, nil
}

// Finish verifies the card's proof E(K, RotL(RndA)) (status 9100, constant
// time) and returns the channel, the same one EarlyChannel returned. On
// any failure that channel is closed.
func (a *AuthAES) Finish(status byte, data []byte) (Channel, error) {
	if a.step != 1 {
		return nil, fmt.Errorf("%s: finish: %w", a.name(), ErrEV1AuthState)
	}
	a.step = 2
	defer a.forget()
	ch := a.ch
	fail := func(err error) (Channel, error) {
		err = fmt.Errorf("%s: %w", a.name(), err)
		ch.fail(err)
		return nil, err
	}
	if status != StatusOK {
		return fail(fmt.Errorf("second frame: %w", ev1StatusErr(status)))
	}
	if err := checkLen(len(data), ev1RndSize); err != nil {
		return fail(fmt.Errorf("E(K, RotL(RndA)): %w", err))
	}
	got, err := dfcrypto.DecryptCBC(a.key, a.lastIV, data)
	if err != nil {
		return fail(err)
	}
	defer clear(got)
	if !dfcrypto.Equal(got, dfcrypto.RotL(a.rndA)) {
		return fail(ErrRndA)
	}
	if err := ch.Err(); err != nil {
		// Closed by its user before the proof arrived.
		return nil, fmt.Errorf("%s: %w", a.name(), err)
	}
	ch.awaitProof = false
	return ch, nil
}

// forget clears the static key and RndA once they are no longer needed.
func (a *AuthAES) forget() {
	clear(a.key)
	clear(a.rndA)
}

// Forget clears the static key and RndA. Finish calls it; a caller that
// abandons the authentication before Finish calls it too, which also
// closes an early channel still waiting for the card's proof (clearing its
// session key).
func (a *AuthAES) Forget() {
	a.forget()
	if a.ch != nil && a.ch.awaitProof {
		a.ch.Close()
	}
}
