package lrp

import (
	"crypto/aes"
	"errors"
	"fmt"
)

// BlockSize is the AES block size LRP works on.
const BlockSize = aes.BlockSize

// Parameters fixed by AN12304 for the 128-bit instance NXP products use:
// m = 4 (a nibble per step), 16 plaintexts, 4 updated keys.
const (
	nibbleBits     = 4
	numPlaintexts  = 1 << nibbleBits
	numUpdatedKeys = 4
)

var (
	// ErrInput is returned for a key, counter or data of a wrong size.
	ErrInput = errors.New("lrp: malformed input")
	// ErrPadding is returned when decrypted data does not end in ISO/IEC
	// 9797-1 method 2 padding.
	ErrPadding = errors.New("lrp: invalid padding")
)

var (
	blk55 = repeat(0x55)
	blkAA = repeat(0xAA)
	zero  = make([]byte, BlockSize)
)

func repeat(b byte) []byte {
	out := make([]byte, BlockSize)
	for i := range out {
		out[i] = b
	}
	return out
}

// LRP is an LRP instance for one secret key and one updated key: the
// precomputed plaintexts and the chosen updated key. It holds no counter,
// so it is safe for concurrent use.
type LRP struct {
	pt [numPlaintexts][]byte
	ku []byte
}

func encrypt(key, in []byte) ([]byte, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("lrp: AES key: %w", ErrInput)
	}
	out := make([]byte, BlockSize)
	b.Encrypt(out, in)
	return out, nil
}

// Plaintexts returns the 16 plaintexts P0..P15 of key k (AN12304
// Algorithm 1).
func Plaintexts(k []byte) ([][]byte, error) {
	h, err := encrypt(k, blk55)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, 0, numPlaintexts)
	for i := 0; i < numPlaintexts; i++ {
		p, err := encrypt(h, blkAA)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
		if h, err = encrypt(h, blk55); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// UpdatedKeys returns the updated keys UK0..UK3 of key k (AN12304
// Algorithm 2).
func UpdatedKeys(k []byte) ([][]byte, error) {
	h, err := encrypt(k, blkAA)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, 0, numUpdatedKeys)
	for i := 0; i < numUpdatedKeys; i++ {
		u, err := encrypt(h, blkAA)
		if err != nil {
			return nil, err
		}
		out = append(out, u)
		if h, err = encrypt(h, blk55); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// New returns the LRP instance of key k using updated key number u
// (0..3). SDM uses u = 0 for PICCData, MACs and session keys and u = 1
// for file data encryption.
func New(k []byte, u int) (*LRP, error) {
	if len(k) != BlockSize {
		return nil, fmt.Errorf("lrp: key of %d bytes: %w", len(k), ErrInput)
	}
	if u < 0 || u >= numUpdatedKeys {
		return nil, fmt.Errorf("lrp: updated key %d: %w", u, ErrInput)
	}
	ps, err := Plaintexts(k)
	if err != nil {
		return nil, err
	}
	uks, err := UpdatedKeys(k)
	if err != nil {
		return nil, err
	}
	l := &LRP{ku: uks[u]}
	copy(l.pt[:], ps)
	return l, nil
}

// Eval computes EvalLRP(P, UK, x, final) over the nibbles of x, most
// significant nibble first (AN12304 Algorithm 3).
func (l *LRP) Eval(x []byte, final bool) ([]byte, error) {
	y := append([]byte(nil), l.ku...)
	for _, b := range x {
		for _, nb := range [2]byte{b >> 4, b & 0x0F} {
			var err error
			if y, err = encrypt(y, l.pt[nb]); err != nil {
				return nil, err
			}
		}
	}
	if final {
		return encrypt(y, zero)
	}
	return y, nil
}

// incr adds one to the big-endian counter r in place, wrapping to zero.
func incr(r []byte) {
	for i := len(r) - 1; i >= 0; i-- {
		r[i]++
		if r[i] != 0 {
			return
		}
	}
}

// EncryptNoPad is LRICBEnc without padding: data must be a non-empty
// multiple of 16 bytes; counter is the initial counter (any length; it is
// not modified).
func (l *LRP) EncryptNoPad(counter, data []byte) ([]byte, error) {
	return l.lricb(counter, data, true)
}

// DecryptNoPad is LRICBDec without padding removal.
func (l *LRP) DecryptNoPad(counter, data []byte) ([]byte, error) {
	return l.lricb(counter, data, false)
}

// Encrypt pads data with 80 00.. to a multiple of 16 bytes and encrypts
// it with LRICB (AN12304 Algorithm 4).
func (l *LRP) Encrypt(counter, data []byte) ([]byte, error) {
	padded := append(append([]byte(nil), data...), 0x80)
	for len(padded)%BlockSize != 0 {
		padded = append(padded, 0)
	}
	return l.EncryptNoPad(counter, padded)
}

// Decrypt decrypts with LRICB and removes the 80 00.. padding (AN12304
// Algorithm 5).
func (l *LRP) Decrypt(counter, data []byte) ([]byte, error) {
	pt, err := l.DecryptNoPad(counter, data)
	if err != nil {
		return nil, err
	}
	for i := len(pt) - 1; i >= 0; i-- {
		switch pt[i] {
		case 0x00:
			continue
		case 0x80:
			return pt[:i], nil
		}
		break
	}
	return nil, ErrPadding
}

func (l *LRP) lricb(counter, data []byte, enc bool) ([]byte, error) {
	if len(data) == 0 || len(data)%BlockSize != 0 {
		return nil, fmt.Errorf("lrp: LRICB data of %d bytes: %w", len(data), ErrInput)
	}
	if len(counter) == 0 || len(counter) > BlockSize {
		return nil, fmt.Errorf("lrp: LRICB counter of %d bytes: %w", len(counter), ErrInput)
	}
	r := append([]byte(nil), counter...)
	out := make([]byte, len(data))
	for i := 0; i < len(data); i += BlockSize {
		k, err := l.Eval(r, true)
		if err != nil {
			return nil, err
		}
		b, err := aes.NewCipher(k)
		if err != nil {
			return nil, fmt.Errorf("lrp: block key: %w", ErrInput)
		}
		if enc {
			b.Encrypt(out[i:i+BlockSize], data[i:i+BlockSize])
		} else {
			b.Decrypt(out[i:i+BlockSize], data[i:i+BlockSize])
		}
		incr(r)
	}
	return out, nil
}

// dbl multiplies a block by x in GF(2^128) (polynomial x^128+x^7+x^2+x+1).
func dbl(in []byte) []byte {
	out := make([]byte, BlockSize)
	var carry byte
	for i := BlockSize - 1; i >= 0; i-- {
		out[i] = in[i]<<1 | carry
		carry = in[i] >> 7
	}
	if carry != 0 {
		out[BlockSize-1] ^= 0x87
	}
	return out
}

// Subkeys returns the CMAC_LRP subkeys K1 = 2·K0 and K2 = 4·K0 where
// K0 = EvalLRP(0^128, final).
func (l *LRP) Subkeys() (k1, k2 []byte, err error) {
	k0, err := l.Eval(zero, true)
	if err != nil {
		return nil, nil, err
	}
	k1 = dbl(k0)
	return k1, dbl(k1), nil
}

// CMAC computes CMAC_LRP: CMAC with EvalLRP in place of the block cipher
// (AN12304 section 3.3).
func (l *LRP) CMAC(msg []byte) ([]byte, error) {
	k1, k2, err := l.Subkeys()
	if err != nil {
		return nil, err
	}
	y := make([]byte, BlockSize)
	n := len(msg)
	// All blocks but the last go through EvalLRP directly.
	for n > BlockSize {
		for i := 0; i < BlockSize; i++ {
			y[i] ^= msg[i]
		}
		if y, err = l.Eval(y, true); err != nil {
			return nil, err
		}
		msg, n = msg[BlockSize:], n-BlockSize
	}
	last := make([]byte, BlockSize)
	copy(last, msg)
	sub := k1
	if n < BlockSize {
		last[n] = 0x80
		sub = k2
	}
	for i := 0; i < BlockSize; i++ {
		y[i] ^= last[i] ^ sub[i]
	}
	return l.Eval(y, true)
}

// Truncate returns the odd-indexed bytes of a 16-byte MAC (bytes 1, 3,
// .., 15), the 8-byte MACt of NXP secure messaging and SDM.
func Truncate(full []byte) []byte {
	out := make([]byte, 0, len(full)/2)
	for i := 1; i < len(full); i += 2 {
		out = append(out, full[i])
	}
	return out
}
