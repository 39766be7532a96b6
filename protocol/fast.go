package protocol

import (
	"encoding/json"
	"strconv"
)

// The hot messages of every exchange (the server's transceive, the
// bridge's responses) have hand-written codecs here. They change nothing
// on the wire: AppendJSON writes the bytes encoding/json writes, and
// decodeResponsesFast accepts only a plain subset of the frames Decode
// accepts, yielding the same Message, and leaves everything else to the
// general decoder. The fuzz targets in fast_test.go hold both to that.

const upperHex = "0123456789ABCDEF"

// AppendJSON appends t as encoding/json encodes it (json.Marshal(t)).
func (t Transceive) AppendJSON(dst []byte) []byte {
	if !plain(t.Type) {
		return marshalAppend(dst, t)
	}
	for _, c := range t.CAPDUs {
		for _, s := range c.Expect {
			if !plain(s) {
				return marshalAppend(dst, t)
			}
		}
	}
	dst = append(dst, `{"type":"`...)
	dst = append(dst, t.Type...)
	dst = append(dst, `","id":`...)
	dst = strconv.AppendUint(dst, t.ID, 10)
	dst = append(dst, `,"capdus":`...)
	if t.CAPDUs == nil {
		return append(dst, "null}"...)
	}
	dst = append(dst, '[')
	for i, c := range t.CAPDUs {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"apdu":"`...)
		for _, b := range c.APDU {
			dst = append(dst, upperHex[b>>4], upperHex[b&0x0f])
		}
		dst = append(dst, '"')
		if len(c.Expect) > 0 {
			dst = append(dst, `,"expect":[`...)
			for j, s := range c.Expect {
				if j > 0 {
					dst = append(dst, ',')
				}
				dst = append(dst, '"')
				dst = append(dst, s...)
				dst = append(dst, '"')
			}
			dst = append(dst, ']')
		}
		dst = append(dst, '}')
	}
	return append(dst, "]}"...)
}

// plain reports whether encoding/json writes s between quotes unchanged:
// printable ASCII without the characters it escapes.
func plain(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c >= 0x7f, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}

// marshalAppend is the general path of AppendJSON. A Transceive has no
// value encoding/json cannot encode, so the error is impossible.
func marshalAppend(dst []byte, t Transceive) []byte {
	b, _ := json.Marshal(t)
	return append(dst, b...)
}

// AppendSW appends a status word as an expect entry writes it (SW).
func AppendSW(dst []byte, sw uint16) []byte {
	return append(dst, upperHex[sw>>12], upperHex[sw>>8&0x0f], upperHex[sw>>4&0x0f], upperHex[sw&0x0f])
}

// scanner reads the plain JSON subset of decodeResponsesFast. Any byte it
// does not expect makes the fast path give up (ok false), never an error.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// consume skips white space and then c, reporting whether c was there.
func (s *scanner) consume(c byte) bool {
	s.space()
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// str reads a string without escapes of printable ASCII and returns its
// contents (a sub-slice of the frame).
func (s *scanner) str() ([]byte, bool) {
	if !s.consume('"') {
		return nil, false
	}
	start := s.i
	for ; s.i < len(s.b); s.i++ {
		switch c := s.b[s.i]; {
		case c == '"':
			s.i++
			return s.b[start : s.i-1], true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return nil, false
		}
	}
	return nil, false
}

// uint reads a decimal integer without sign, fraction or leading zero
// that fits 19 digits (always inside uint64).
func (s *scanner) uint() (uint64, bool) {
	s.space()
	start := s.i
	var v uint64
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' && s.i-start < 19 {
		v = v*10 + uint64(s.b[s.i]-'0')
		s.i++
	}
	n := s.i - start
	if n == 0 || (n > 1 && s.b[start] == '0') || s.i < len(s.b) && (s.b[s.i] >= '0' && s.b[s.i] <= '9' || s.b[s.i] == '.' || s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		return 0, false
	}
	return v, true
}

// hexValue decodes hex of either case; ok false on odd length or another
// character.
func hexValue(src []byte) (HexBytes, bool) {
	if len(src)%2 != 0 {
		return nil, false
	}
	out := make(HexBytes, len(src)/2)
	for i := range out {
		hi, ok1 := fromHex(src[2*i])
		lo, ok2 := fromHex(src[2*i+1])
		if !ok1 || !ok2 {
			return nil, false
		}
		out[i] = hi<<4 | lo
	}
	return out, true
}

func fromHex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// decodeResponsesFast decodes a valid `responses` frame written plainly:
// one object whose keys are exactly type, id, rapdus and optionally error,
// each once, in any order, with strings free of escapes. For such a frame
// it returns what Decode returns. For anything else (another type, other
// keys, escapes, null, numbers in other notations, an invalid value) it
// returns ok false and Decode runs its general path.
func decodeResponsesFast(frame []byte) (m *Message, ok bool) {
	s := scanner{b: frame}
	if !s.consume('{') {
		return nil, false
	}
	r := new(Responses)
	var seenType, seenID, seenRAPDUs, seenError bool
	for first := true; ; first = false {
		if s.consume('}') {
			if first {
				return nil, false
			}
			break
		}
		if !first && !s.consume(',') {
			return nil, false
		}
		key, ok := s.str()
		if !ok || !s.consume(':') {
			return nil, false
		}
		switch string(key) {
		case "type":
			v, ok := s.str()
			if !ok || seenType || string(v) != TypeResponses {
				return nil, false
			}
			seenType = true
		case "id":
			v, ok := s.uint()
			if !ok || seenID {
				return nil, false
			}
			r.ID, seenID = v, true
		case "rapdus":
			if seenRAPDUs || !s.rapdus(r) {
				return nil, false
			}
			seenRAPDUs = true
		case "error":
			v, ok := s.str()
			if !ok || seenError {
				return nil, false
			}
			r.Error, seenError = string(v), true
		default:
			return nil, false
		}
	}
	s.space()
	if !seenType || !seenID || !seenRAPDUs || s.i != len(frame) || r.validate() != nil {
		return nil, false
	}
	return &Message{Type: TypeResponses, Responses: r}, true
}

// rapdus reads the array of hex strings into r.RAPDUs.
func (s *scanner) rapdus(r *Responses) bool {
	if !s.consume('[') {
		return false
	}
	r.RAPDUs = make([]HexBytes, 0, 8)
	if s.consume(']') {
		return true
	}
	for {
		v, ok := s.str()
		if !ok || len(r.RAPDUs) == maxRAPDUs {
			return false
		}
		a, ok := hexValue(v)
		if !ok {
			return false
		}
		r.RAPDUs = append(r.RAPDUs, a)
		if s.consume(']') {
			return true
		}
		if !s.consume(',') {
			return false
		}
	}
}
