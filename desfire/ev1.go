package desfire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/desfire-relay/relay/desfire/dfcrypto"
)

// DESFire EV1 AES secure messaging, as pure functions. One running IV is
// chained through every command and answer after AuthenticateAES (it starts
// at zero):
//
//	Plain/MAC command:  IV' = CMAC(SesKey, IV, Cmd ‖ Header ‖ Data)
//	                    (MAC mode sends IV'[0:8] after the data, when
//	                    there is data)
//	Full command:       Header ‖ E(SesKey, IV, Data ‖ CRC32(Cmd ‖ Header ‖ Data) ‖ 00…)
//	                    IV' = last cipher block
//	answer, status 00:  Plain/MAC: Data ‖ CMAC(SesKey, IV, Data ‖ 00)[0:8],
//	                    IV' = the full CMAC
//	                    Full: E(SesKey, IV, Data ‖ CRC32(Data ‖ 00) ‖ 00…),
//	                    IV' = last cipher block
//
// CRC32 is the DESFire JAMCRC sent LSB first (dfcrypto.CRC32LE). Facts
// checked against the public traces in ev1_secure_messaging.json and the
// libfreefare (mifare_desfire_crypto.c) and proxmark3 (desfirecrypto.c)
// implementations.

// Sizes of EV1 secure messaging fields.
const (
	ev1MACSize = 8 // CMAC bytes sent after MAC-mode data and answers
	ev1CRCSize = 4 // CRC32 inside enciphered data
)

// Local faults of EV1 secure messaging.
var (
	// ErrEV1ReplyOrder is returned when EV1 replies are opened in another
	// order than their commands were sealed, or twice: the running IV
	// passes through every answer in turn.
	ErrEV1ReplyOrder = errors.New("desfire: EV1 replies opened out of order")
	// ErrEV1Mispredicted is returned when an answer verifies but is not the
	// one predicted at Seal time: the commands sealed behind it were
	// chained to an IV the card does not share. It unwraps to
	// ErrResponseMAC, since the session's integrity is lost either way.
	ErrEV1Mispredicted = fmt.Errorf("desfire: EV1 answer differs from its prediction: %w", ErrResponseMAC)
	// ErrEV1AuthState is returned when AuthenticateAES steps are called
	// out of order, a caller bug that must not look like a card fault.
	ErrEV1AuthState = errors.New("desfire: AuthenticateAES steps called out of order")
)

// EV1SessionKey returns the AES session key of AuthenticateAES:
// RndA[0:4] ‖ RndB[0:4] ‖ RndA[12:16] ‖ RndB[12:16].
func EV1SessionKey(rndA, rndB []byte) ([]byte, error) {
	if len(rndA) != ev1RndSize || len(rndB) != ev1RndSize {
		return nil, fmt.Errorf("EV1 session key: RndA %d and RndB %d bytes, want %d: %w", len(rndA), len(rndB), ev1RndSize, ErrLength)
	}
	k := make([]byte, 0, dfcrypto.KeySize)
	k = append(k, rndA[0:4]...)
	k = append(k, rndB[0:4]...)
	k = append(k, rndA[12:16]...)
	return append(k, rndB[12:16]...), nil
}

// EV1CMAC returns the EV1 CMAC of msg chained from the running IV iv: the
// full 16 bytes, which become the next IV.
func EV1CMAC(key, iv, msg []byte) ([]byte, error) {
	return dfcrypto.CMACWithIV(key, iv, msg)
}

// EV1CommandCMAC returns CMAC(SesKey, IV, Cmd ‖ Header ‖ Data), the next
// IV after a Plain or MAC mode command; MAC mode sends its first 8 bytes.
func EV1CommandCMAC(key, iv []byte, code byte, header, data []byte) ([]byte, error) {
	return EV1CMAC(key, iv, ev1Concat([]byte{code}, header, data))
}

// EV1ResponseCMAC returns CMAC(SesKey, IV, Data ‖ Status), the MAC of an
// answer with status 00 in Plain or MAC mode (the card sends the first 8
// bytes) and the next IV.
func EV1ResponseCMAC(key, iv, data []byte, status byte) ([]byte, error) {
	return EV1CMAC(key, iv, ev1Concat(data, []byte{status}))
}

// EV1CommandPlaintext returns the plaintext of a Full-mode command before
// encryption: Data ‖ CRC32(Cmd ‖ Header ‖ Data) ‖ trailer, zero padded to
// whole blocks. trailer is empty except for ChangeKey of another key,
// where CRC32(NewKey) follows the command CRC.
func EV1CommandPlaintext(code byte, header, data, trailer []byte) []byte {
	crc := dfcrypto.CRC32LE(ev1Concat([]byte{code}, header, data))
	return dfcrypto.PadZero(ev1Concat(data, crc, trailer))
}

// EV1ResponsePlaintext returns the plaintext of a Full-mode answer:
// Data ‖ CRC32(Data ‖ Status) ‖ zero padding. The card enciphers it; a
// channel uses it to predict answers.
func EV1ResponsePlaintext(data []byte, status byte) []byte {
	crc := ev1ResponseCRC(data, status)
	return dfcrypto.PadZero(ev1Concat(data, crc[:]))
}

// EV1Encipher encrypts whole blocks with AES-CBC from the running IV and
// returns the ciphertext and the next IV (its last block).
func EV1Encipher(key, iv, plain []byte) (ct, next []byte, err error) {
	if len(plain) == 0 {
		return nil, nil, fmt.Errorf("EV1 encipher: empty data: %w", dfcrypto.ErrBlockLength)
	}
	if ct, err = dfcrypto.EncryptCBC(key, iv, plain); err != nil {
		return nil, nil, fmt.Errorf("EV1 encipher: %w", err)
	}
	return ct, append([]byte(nil), ct[len(ct)-dfcrypto.BlockSize:]...), nil
}

// EV1DecipherResponse decrypts a Full-mode answer with the running IV and
// returns its data and the next IV. respLen ≥ 0 is the expected data length
// (the ciphertext must then be exactly as long as that needs); respLen < 0
// finds the one length whose CRC32(Data ‖ Status) verifies and whose
// padding is all zero.
func EV1DecipherResponse(key, iv, ct []byte, status byte, respLen int) (data, next []byte, err error) {
	switch {
	case len(ct) == 0:
		return nil, nil, fmt.Errorf("enciphered answer: no data: %w", ErrShortResponse)
	case len(ct)%dfcrypto.BlockSize != 0:
		return nil, nil, fmt.Errorf("enciphered answer of %d bytes: not whole blocks: %w", len(ct), ErrPadding)
	}
	if respLen >= 0 {
		want := ev1PaddedLen(respLen + ev1CRCSize)
		if err := checkLen(len(ct), want); err != nil {
			return nil, nil, fmt.Errorf("enciphered answer for %d data bytes: %w", respLen, err)
		}
	}
	pt, err := dfcrypto.DecryptCBC(key, iv, ct)
	if err != nil {
		return nil, nil, fmt.Errorf("enciphered answer: %w", err)
	}
	n, err := ev1DataLength(pt, status, respLen)
	if err != nil {
		return nil, nil, fmt.Errorf("enciphered answer: %w", err)
	}
	return pt[:n:n], append([]byte(nil), ct[len(ct)-dfcrypto.BlockSize:]...), nil
}

// ev1DataLength returns the length of the data in a decrypted Full-mode
// answer pt (data ‖ CRC ‖ zero padding of less than a block).
func ev1DataLength(pt []byte, status byte, respLen int) (int, error) {
	if respLen >= 0 {
		if respLen+ev1CRCSize > len(pt) {
			return 0, ErrShortResponse
		}
		if !ev1ZeroTail(pt, respLen+ev1CRCSize) {
			return 0, ErrPadding
		}
		if !ev1CRCAt(pt, respLen, status) {
			return 0, ErrResponseCRC
		}
		return respLen, nil
	}
	found := -1
	unit := -respLen // respLen -u: a multiple of u
	for n := len(pt) - ev1CRCSize; n >= 0 && n > len(pt)-ev1CRCSize-dfcrypto.BlockSize; n-- {
		if n%unit != 0 || !ev1ZeroTail(pt, n+ev1CRCSize) || !ev1CRCAt(pt, n, status) {
			continue
		}
		if found >= 0 {
			// Two lengths verify: a forgery or a 2^-32 accident; neither
			// can be trusted.
			return 0, fmt.Errorf("data length %d or %d: %w", found, n, ErrResponseCRC)
		}
		found = n
	}
	if found < 0 {
		return 0, ErrResponseCRC
	}
	return found, nil
}

// ev1ZeroTail reports whether pt[from:] is all zero.
func ev1ZeroTail(pt []byte, from int) bool {
	var acc byte
	for _, b := range pt[from:] {
		acc |= b
	}
	return acc == 0
}

// ev1CRCAt reports whether pt[n:n+4] is CRC32(pt[:n] ‖ status).
func ev1CRCAt(pt []byte, n int, status byte) bool {
	crc := ev1ResponseCRC(pt[:n], status)
	return dfcrypto.Equal(crc[:], pt[n:n+ev1CRCSize])
}

// ev1ResponseCRC returns CRC32(data ‖ status) as sent (LSB first) without
// copying data: the DESFire CRC is the complement of CRC-32/IEEE.
func ev1ResponseCRC(data []byte, status byte) [ev1CRCSize]byte {
	c := crc32.Update(crc32.ChecksumIEEE(data), crc32.IEEETable, []byte{status})
	var out [ev1CRCSize]byte
	binary.LittleEndian.PutUint32(out[:], ^c)
	return out
}

// ev1PaddedLen rounds n up to whole blocks (zero padding adds no block to
// aligned data).
func ev1PaddedLen(n int) int {
	return (n + dfcrypto.BlockSize - 1) / dfcrypto.BlockSize * dfcrypto.BlockSize
}

// ev1Concat returns a new slice holding the parts one after the other.
func ev1Concat(parts ...[]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	out := make([]byte, 0, n)
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// ev1StatusErr is the error for a status that does not continue the
// exchange: the card's error, or ErrUnexpectedStatus for a success status
// arriving at the wrong step.
func ev1StatusErr(status byte) error {
	se := NewStatusError(status)
	if status == StatusOK || status == StatusAdditionalFrame {
		return fmt.Errorf("%w: %w", ErrUnexpectedStatus, se)
	}
	return se
}
