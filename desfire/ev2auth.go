package desfire

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"

	"github.com/desfire-relay/relay/desfire/dfcrypto"
)

// EV2 authentication command codes (MIFARE DESFire Light data sheet
// MF2DLHX0 section 11.4, NTAG 424 DNA data sheet NT4H2421Gx section 10.4;
// NXP AN12196 section 6.6 shows the exchange).
const (
	// ev2CmdAuthFirst starts a new EV2 session: KeyNo(1) | LenCap(1) | PCDcap2(LenCap).
	ev2CmdAuthFirst byte = 0x71
	// ev2CmdAuthNonFirst re-authenticates inside a session, keeping
	// TI and the command counter: KeyNo(1).
	ev2CmdAuthNonFirst byte = 0x77
)

// Sizes of the EV2 authentication fields.
const (
	ev2RndSize = 16 // RndA, RndB
	ev2TISize  = 4  // transaction identifier
	ev2CapSize = 6  // PDcap2, PCDcap2
)

// ErrEV2AuthState is returned when an Authenticator's steps are called out of
// order (Respond twice, Finish before Respond), which is a caller bug that
// must not be mistaken for a card fault.
var ErrEV2AuthState = errors.New("desfire: authentication steps called out of order")

// AuthEV2 runs AuthenticateEV2First (0x71) or AuthenticateEV2NonFirst (0x77)
// with an AES-128 key. It exists so that EV2 secure messaging can be created
// through the same Authenticator interface as EV1; the cryptograms, session
// vectors and session keys follow NXP AN12196 section 6.6 and AN12343
// section 7.1.3 (all CBC operations with a zero IV):
//
//	card  → E(K, RndB)
//	PCD   → E(K, RndA ‖ RotL(RndB))
//	card  → E(K, TI ‖ RotL(RndA) ‖ PDcap2 ‖ PCDcap2)   (First)
//	card  → E(K, RotL(RndA))                           (NonFirst)
//
// An AuthEV2 is used once and is not safe for concurrent use.
type AuthEV2 struct {
	keyNo byte
	key   []byte
	rnd   io.Reader
	first bool
	prev  *EV2Channel // NonFirst only

	step int // 0 new, 1 after Respond, 2 finished or failed
	rndA []byte
	rndB []byte
}

// NewAuthEV2First returns an Authenticator for AuthenticateEV2First with key
// number keyNo and the 16-byte AES key. rnd supplies RndA (crypto/rand when
// nil), so tests can replay published traces.
func NewAuthEV2First(keyNo byte, key []byte, rnd io.Reader) *AuthEV2 {
	return newAuthEV2(keyNo, key, rnd, true, nil)
}

// NewAuthEV2NonFirst returns an Authenticator for AuthenticateEV2NonFirst:
// it switches the session to key keyNo while keeping the TI and the command
// counter of prev, which must be the EV2 channel of the running session.
// prev is closed when the new channel is created, since the card keeps only
// one session.
func NewAuthEV2NonFirst(keyNo byte, key []byte, rnd io.Reader, prev Channel) *AuthEV2 {
	p, _ := prev.(*EV2Channel)
	return newAuthEV2(keyNo, key, rnd, false, p)
}

func newAuthEV2(keyNo byte, key []byte, rnd io.Reader, first bool, prev *EV2Channel) *AuthEV2 {
	if rnd == nil {
		rnd = rand.Reader
	}
	return &AuthEV2{keyNo: keyNo, key: append([]byte(nil), key...), rnd: rnd, first: first, prev: prev}
}

func (a *AuthEV2) name() string {
	if a.first {
		return fmt.Sprintf("authenticate EV2 first key %d", a.keyNo)
	}
	return fmt.Sprintf("authenticate EV2 non-first key %d", a.keyNo)
}

// Start returns the first frame: 0x71 KeyNo ‖ LenCap(00), or 0x77 KeyNo.
func (a *AuthEV2) Start() (code byte, payload []byte) {
	if a.first {
		return ev2CmdAuthFirst, []byte{a.keyNo, 0x00}
	}
	return ev2CmdAuthNonFirst, []byte{a.keyNo}
}

// Respond takes E(K, RndB) (status 91AF) and returns E(K, RndA ‖ RotL(RndB)).
func (a *AuthEV2) Respond(status byte, data []byte) ([]byte, error) {
	if a.step != 0 {
		return nil, fmt.Errorf("%s: respond: %w", a.name(), ErrEV2AuthState)
	}
	a.step = 2 // failed unless we reach the end
	if len(a.key) != dfcrypto.KeySize {
		return nil, fmt.Errorf("%s: %w", a.name(), dfcrypto.ErrKeySize)
	}
	if !a.first {
		if a.prev == nil {
			return nil, fmt.Errorf("%s: previous channel is not an EV2 session: %w", a.name(), ErrNotAuthenticated)
		}
		if err := a.prev.Err(); err != nil {
			return nil, fmt.Errorf("%s: previous session: %w", a.name(), err)
		}
	}
	if status != StatusAdditionalFrame {
		a.Forget()
		return nil, fmt.Errorf("%s: first frame: %w", a.name(), ev2StatusErr(status))
	}
	if err := checkLen(len(data), ev2RndSize); err != nil {
		a.Forget()
		return nil, fmt.Errorf("%s: E(K, RndB): %w", a.name(), err)
	}
	rndB, err := dfcrypto.DecryptCBC(a.key, make([]byte, dfcrypto.BlockSize), data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", a.name(), err)
	}
	rndA := make([]byte, ev2RndSize)
	if _, err := io.ReadFull(a.rnd, rndA); err != nil {
		return nil, fmt.Errorf("%s: RndA: %w", a.name(), err)
	}
	plain := append(append(make([]byte, 0, 2*ev2RndSize), rndA...), dfcrypto.RotL(rndB)...)
	defer clear(plain)
	out, err := dfcrypto.EncryptCBC(a.key, make([]byte, dfcrypto.BlockSize), plain)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", a.name(), err)
	}
	a.rndA, a.rndB = rndA, rndB
	a.step = 1
	return out, nil
}

// Finish verifies the card's proof of RndA (constant time) and returns the
// EV2 channel: a new TI and CmdCtr 0 for First, the previous TI and counter
// for NonFirst.
func (a *AuthEV2) Finish(status byte, data []byte) (Channel, error) {
	if a.step != 1 {
		return nil, fmt.Errorf("%s: finish: %w", a.name(), ErrEV2AuthState)
	}
	a.step = 2
	defer a.Forget()
	if status != StatusOK {
		return nil, fmt.Errorf("%s: second frame: %w", a.name(), ev2StatusErr(status))
	}
	want := ev2RndSize
	if a.first {
		want = 2 * ev2RndSize
	}
	if err := checkLen(len(data), want); err != nil {
		return nil, fmt.Errorf("%s: card proof: %w", a.name(), err)
	}
	plain, err := dfcrypto.DecryptCBC(a.key, make([]byte, dfcrypto.BlockSize), data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", a.name(), err)
	}
	defer clear(plain)
	var ti, rotA, pd, pcd []byte
	if a.first {
		ti = plain[:ev2TISize]
		rotA = plain[ev2TISize : ev2TISize+ev2RndSize]
		pd = plain[ev2TISize+ev2RndSize : ev2TISize+ev2RndSize+ev2CapSize]
		pcd = plain[ev2TISize+ev2RndSize+ev2CapSize:]
	} else {
		rotA = plain
	}
	if !dfcrypto.Equal(rotA, dfcrypto.RotL(a.rndA)) {
		return nil, fmt.Errorf("%s: %w", a.name(), ErrRndA)
	}
	enc, mac, err := EV2SessionKeys(a.key, a.rndA, a.rndB)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", a.name(), err)
	}
	// The channel keeps its own copies.
	defer clear(enc)
	defer clear(mac)
	if a.first {
		ch, err := newEV2Channel(enc, mac, ti, 0, a.keyNo)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", a.name(), err)
		}
		ch.pdCap2 = append([]byte(nil), pd...)
		ch.pcdCap2 = append([]byte(nil), pcd...)
		return ch, nil
	}
	p := a.prev
	if err := p.Err(); err != nil {
		return nil, fmt.Errorf("%s: previous session: %w", a.name(), err)
	}
	if p.opened != p.next {
		// Replies still pending on the old channel could never be
		// verified once it is replaced.
		return nil, fmt.Errorf("%s: %d replies of the previous session not opened: %w", a.name(), p.next-p.opened, ErrNotPipelinable)
	}
	ch, err := newEV2Channel(enc, mac, p.ti[:], p.next, a.keyNo)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", a.name(), err)
	}
	ch.opened = p.opened
	ch.pdCap2, ch.pcdCap2 = p.pdCap2, p.pcdCap2
	p.closeWith(errEV2Replaced)
	return ch, nil
}

// Forget clears the static key and the random numbers. Finish calls it;
// a caller that abandons the authentication before Finish calls it too.
func (a *AuthEV2) Forget() {
	clear(a.key)
	clear(a.rndA)
	clear(a.rndB)
}

// errEV2Replaced is the reason a channel closes after AuthenticateEV2NonFirst.
var errEV2Replaced = fmt.Errorf("replaced by AuthenticateEV2NonFirst: %w", ErrChannelClosed)

// EV2SessionVectors returns SV1 and SV2 of AuthenticateEV2First/NonFirst
// (AN12196 section 6.6, AN12343 section 7.1.3): label A5 5A (SV1, ENC) or
// 5A A5 (SV2, MAC) ‖ 00 01 00 80 ‖ RndA[15..14] ‖ (RndA[13..8] ⊕ RndB[15..10])
// ‖ RndB[9..0] ‖ RndA[7..0], with byte 15 the first byte sent.
func EV2SessionVectors(rndA, rndB []byte) (sv1, sv2 []byte, err error) {
	if len(rndA) != ev2RndSize || len(rndB) != ev2RndSize {
		return nil, nil, fmt.Errorf("EV2 session vectors: RndA %d, RndB %d bytes: %w", len(rndA), len(rndB), ErrLength)
	}
	ctx := make([]byte, 0, 26)
	ctx = append(ctx, rndA[0:2]...)
	for i := 0; i < 6; i++ {
		ctx = append(ctx, rndA[2+i]^rndB[i])
	}
	ctx = append(ctx, rndB[6:16]...)
	ctx = append(ctx, rndA[8:16]...)
	sv1 = append([]byte{0xA5, 0x5A, 0x00, 0x01, 0x00, 0x80}, ctx...)
	sv2 = append([]byte{0x5A, 0xA5, 0x00, 0x01, 0x00, 0x80}, ctx...)
	return sv1, sv2, nil
}

// EV2SessionKeys returns SesAuthENCKey = CMAC(K, SV1) and SesAuthMACKey =
// CMAC(K, SV2), the keys of EV2 secure messaging.
func EV2SessionKeys(key, rndA, rndB []byte) (enc, mac []byte, err error) {
	sv1, sv2, err := EV2SessionVectors(rndA, rndB)
	if err != nil {
		return nil, nil, err
	}
	if enc, err = dfcrypto.CMAC(key, sv1); err != nil {
		return nil, nil, fmt.Errorf("SesAuthENCKey: %w", err)
	}
	if mac, err = dfcrypto.CMAC(key, sv2); err != nil {
		return nil, nil, fmt.Errorf("SesAuthMACKey: %w", err)
	}
	return enc, mac, nil
}

// ev2StatusErr is the error for a status that does not continue the
// exchange: the card's error, or ErrUnexpectedStatus for a success status
// arriving at the wrong step.
func ev2StatusErr(status byte) error {
	se := NewStatusError(status)
	if status == StatusOK || status == StatusAdditionalFrame {
		return fmt.Errorf("%w: %w", ErrUnexpectedStatus, se)
	}
	return se
}
