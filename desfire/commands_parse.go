package desfire

import (
	"encoding/binary"
	"fmt"
)

// respReader consumes a card answer field by field. The first short read
// sticks: later reads return zero values and done reports ErrShortResponse,
// so a parser reads its whole layout and checks once. done also fails on
// leftover bytes.
type respReader struct {
	b    []byte
	what string
	err  error
}

func newRespReader(what string, b []byte) *respReader { return &respReader{b: b, what: what} }

// bytes returns the next n bytes (a copy).
func (r *respReader) bytes(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || len(r.b) < n {
		r.err = fmt.Errorf("%s: %d bytes left, need %d: %w", r.what, len(r.b), n, ErrShortResponse)
		return nil
	}
	out := append([]byte(nil), r.b[:n]...)
	r.b = r.b[n:]
	return out
}

func (r *respReader) byte() byte {
	if b := r.bytes(1); b != nil {
		return b[0]
	}
	return 0
}

// u24 reads a 3-byte little-endian number.
func (r *respReader) u24() uint32 {
	if b := r.bytes(3); b != nil {
		return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16
	}
	return 0
}

// u32 reads a 4-byte little-endian number.
func (r *respReader) u32() uint32 {
	if b := r.bytes(4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

// left is the number of unread bytes.
func (r *respReader) left() int { return len(r.b) }

// done returns the first error, or ErrLongResponse when bytes are left.
func (r *respReader) done() error {
	if r.err != nil {
		return r.err
	}
	if len(r.b) != 0 {
		return fmt.Errorf("%s: %d bytes left over: %w", r.what, len(r.b), ErrLongResponse)
	}
	return nil
}

// le24 encodes v as 3 bytes, little endian (offsets, lengths, sizes).
func le24(v uint32) []byte { return []byte{byte(v), byte(v >> 8), byte(v >> 16)} }

// le32 encodes v as 4 bytes, little endian (values, limits).
func le32(v int32) []byte { return binary.LittleEndian.AppendUint32(nil, uint32(v)) }

// max24 is the largest 3-byte field.
const max24 = 1<<24 - 1
