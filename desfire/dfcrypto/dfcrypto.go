package dfcrypto

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"

	"github.com/aead/cmac"
)

// BlockSize is the AES block size.
const BlockSize = aes.BlockSize

// KeySize is the size of an AES-128 key.
const KeySize = 16

var (
	// ErrKeySize is returned for a key that is not 16 bytes.
	ErrKeySize = errors.New("dfcrypto: AES-128 key must be 16 bytes")
	// ErrBlockLength is returned for CBC input that is not whole blocks.
	ErrBlockLength = errors.New("dfcrypto: data is not a multiple of the block size")
	// ErrPadding is returned when ISO/IEC 9797-1 method 2 padding is absent.
	ErrPadding = errors.New("dfcrypto: bad padding")
)

// NewCipher returns the AES-128 block cipher for key.
func NewCipher(key []byte) (cipher.Block, error) {
	if len(key) != KeySize {
		return nil, ErrKeySize
	}
	return aes.NewCipher(key)
}

// CMAC returns the 16-byte AES-CMAC of msg (NIST SP 800-38B, RFC 4493).
func CMAC(key, msg []byte) ([]byte, error) {
	b, err := NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cmac.Sum(msg, b, BlockSize)
}

// CMACWithIV returns AES-CMAC of msg with the chaining value started at iv
// instead of zero, as DESFire EV1 secure messaging uses it (the running IV
// is the previous full CMAC). msg must not be empty. It is computed as the
// standard CMAC of D(K, iv) ‖ msg: the first block then encrypts to iv.
func CMACWithIV(key, iv, msg []byte) ([]byte, error) {
	if len(msg) == 0 {
		return nil, errors.New("dfcrypto: CMAC with IV over empty message")
	}
	if len(iv) != BlockSize {
		return nil, fmt.Errorf("dfcrypto: IV of %d bytes: %w", len(iv), ErrBlockLength)
	}
	b, err := NewCipher(key)
	if err != nil {
		return nil, err
	}
	h, err := cmac.New(b)
	if err != nil {
		return nil, err
	}
	var x [BlockSize]byte
	b.Decrypt(x[:], iv)
	h.Write(x[:])
	h.Write(msg)
	return h.Sum(nil), nil
}

// Truncate returns the EV2 truncated MAC (MACt): the 8 bytes at odd
// indices 1, 3, …, 15 of a full 16-byte CMAC (NT4H2421Gx section 9.1.3).
func Truncate(full []byte) []byte {
	out := make([]byte, 0, len(full)/2)
	for i := 1; i < len(full); i += 2 {
		out = append(out, full[i])
	}
	return out
}

// MACt returns Truncate(CMAC(key, msg)).
func MACt(key, msg []byte) ([]byte, error) {
	full, err := CMAC(key, msg)
	if err != nil {
		return nil, err
	}
	return Truncate(full), nil
}

// MAC computes AES-CMAC under one key whose key schedule and CMAC subkeys
// are derived once: a session key MACs every command and answer of its
// session. It is not safe for concurrent use.
type MAC struct{ h hash.Hash }

// NewMAC returns the MAC of key.
func NewMAC(key []byte) (*MAC, error) {
	b, err := NewCipher(key)
	if err != nil {
		return nil, err
	}
	h, err := cmac.New(b)
	if err != nil {
		return nil, err
	}
	return &MAC{h: h}, nil
}

// MACt returns Truncate(CMAC(key, msg)), as the function MACt does.
func (m *MAC) MACt(msg []byte) []byte {
	m.h.Reset()
	m.h.Write(msg)
	var full [BlockSize]byte
	return Truncate(m.h.Sum(full[:0]))
}

// Equal compares two MACs in constant time.
func Equal(a, b []byte) bool {
	return len(a) == len(b) && subtle.ConstantTimeCompare(a, b) == 1
}

// EncryptCBC returns AES-CBC(key, iv, data); data must be whole blocks.
func EncryptCBC(key, iv, data []byte) ([]byte, error) {
	b, err := NewCipher(key)
	if err != nil {
		return nil, err
	}
	if len(data)%BlockSize != 0 || len(iv) != BlockSize {
		return nil, ErrBlockLength
	}
	out := make([]byte, len(data))
	cipher.NewCBCEncrypter(b, iv).CryptBlocks(out, data)
	return out, nil
}

// DecryptCBC returns the AES-CBC decryption of data; data must be whole blocks.
func DecryptCBC(key, iv, data []byte) ([]byte, error) {
	b, err := NewCipher(key)
	if err != nil {
		return nil, err
	}
	if len(data)%BlockSize != 0 || len(iv) != BlockSize {
		return nil, ErrBlockLength
	}
	out := make([]byte, len(data))
	cipher.NewCBCDecrypter(b, iv).CryptBlocks(out, data)
	return out, nil
}

// EncryptBlock returns E(key, block) for one 16-byte block (an IV derivation).
func EncryptBlock(key, block []byte) ([]byte, error) {
	return EncryptCBC(key, make([]byte, BlockSize), block)
}

// Pad80 applies ISO/IEC 9797-1 padding method 2: 0x80 then zeros up to a
// whole block. A whole-block input gains a full block of padding.
func Pad80(data []byte) []byte {
	n := len(data) + 1
	if r := n % BlockSize; r != 0 {
		n += BlockSize - r
	}
	out := make([]byte, n)
	copy(out, data)
	out[len(data)] = 0x80
	return out
}

// Unpad80 removes ISO/IEC 9797-1 method 2 padding, checking that the pad is
// 0x80 followed by zeros within the final block.
func Unpad80(data []byte) ([]byte, error) {
	if len(data) == 0 || len(data)%BlockSize != 0 {
		return nil, ErrPadding
	}
	for i := len(data) - 1; i >= 0 && i >= len(data)-BlockSize; i-- {
		switch data[i] {
		case 0x00:
			continue
		case 0x80:
			return data[:i], nil
		}
		return nil, ErrPadding
	}
	return nil, ErrPadding
}

// PadZero pads data with zeros to a whole number of blocks (EV1 enciphered
// frames); an input already block-aligned is returned unchanged (copied).
func PadZero(data []byte) []byte {
	n := len(data)
	if r := n % BlockSize; r != 0 {
		n += BlockSize - r
	}
	out := make([]byte, n)
	copy(out, data)
	return out
}

// RotL returns b rotated left by one byte (RndA', RndB').
func RotL(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	out := make([]byte, 0, len(b))
	out = append(out, b[1:]...)
	return append(out, b[0])
}

// CRC32 returns the DESFire CRC32: the reflected IEEE polynomial 0xEDB88320
// with initial value 0xFFFFFFFF and no final XOR (JAMCRC), which is the
// complement of the standard IEEE CRC-32. On the wire it is sent least
// significant byte first.
func CRC32(data []byte) uint32 {
	return ^crc32.ChecksumIEEE(data)
}

// CRC32LE returns CRC32(data) as the 4 bytes sent on the wire.
func CRC32LE(data []byte) []byte {
	return binary.LittleEndian.AppendUint32(nil, CRC32(data))
}
