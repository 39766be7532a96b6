package dfcrypto

import (
	"errors"
	"fmt"
)

// MaxDiversificationInput is the longest diversification input M that
// AN10922 allows for AES-128 (31 bytes, so that 01 ‖ M fits two blocks).
const MaxDiversificationInput = 31

// ErrDiversificationInput is returned for an empty or overlong input M.
var ErrDiversificationInput = errors.New("dfcrypto: AN10922 diversification input must be 1..31 bytes")

// DiversificationInput builds M = UID ‖ AID ‖ SystemIdentifier, the input
// AN10922 section 2.2 uses in its example (AID least significant byte first,
// as it is sent to the card).
func DiversificationInput(uid, aid, systemID []byte) []byte {
	m := make([]byte, 0, len(uid)+len(aid)+len(systemID))
	m = append(m, uid...)
	m = append(m, aid...)
	return append(m, systemID...)
}

// Diversify derives a card key from master key and input M with NXP AN10922
// section 2.2 (AES-128): D = 01 ‖ M; when D is shorter than 32 bytes it is
// padded with 80 00 … to 32 bytes and the last block is XORed with the CMAC
// subkey K2, otherwise with K1; the key is the CBC-MAC of D under a zero IV.
func Diversify(master, m []byte) ([]byte, error) {
	if len(m) == 0 || len(m) > MaxDiversificationInput {
		return nil, fmt.Errorf("diversify %d-byte input: %w", len(m), ErrDiversificationInput)
	}
	b, err := NewCipher(master)
	if err != nil {
		return nil, err
	}
	k1, k2 := Subkeys(master)
	d := make([]byte, 32)
	d[0] = 0x01
	copy(d[1:], m)
	last := k1
	if n := 1 + len(m); n < 32 {
		d[n] = 0x80
		last = k2
	}
	for i := range BlockSize {
		d[BlockSize+i] ^= last[i]
	}
	var state [BlockSize]byte
	for blk := 0; blk < 2; blk++ {
		for i := range BlockSize {
			state[i] ^= d[blk*BlockSize+i]
		}
		b.Encrypt(state[:], state[:])
	}
	return state[:], nil
}

// Subkeys returns the CMAC subkeys K1 and K2 of key (RFC 4493 section 2.3).
// key must be 16 bytes; callers check it.
func Subkeys(key []byte) (k1, k2 []byte) {
	b, err := NewCipher(key)
	if err != nil {
		return nil, nil
	}
	l := make([]byte, BlockSize)
	b.Encrypt(l, l)
	k1 = dbl(l)
	k2 = dbl(k1)
	return k1, k2
}

// dbl doubles a block in GF(2^128) with the CMAC constant Rb = 0x87.
func dbl(in []byte) []byte {
	out := make([]byte, BlockSize)
	var carry byte
	for i := BlockSize - 1; i >= 0; i-- {
		out[i] = in[i]<<1 | carry
		carry = in[i] >> 7
	}
	if in[0]&0x80 != 0 {
		out[BlockSize-1] ^= 0x87
	}
	return out
}
