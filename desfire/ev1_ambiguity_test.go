package desfire

import (
	"bytes"
	"errors"
	"testing"

	"github.com/desfire-relay/relay/desfire/dfcrypto"
)

// When the first CRC byte of an EV1 enciphered answer is 00, the answer
// also verifies as one byte longer (a zero byte shifts the reflected CRC
// by a byte). A record read knows its unit and must decode it; a read of
// unknown length must refuse it rather than guess.
func TestEV1FullAnswerCRCZeroByte(t *testing.T) {
	key, iv := bytes.Repeat([]byte{7}, 16), make([]byte, 16)
	var data []byte
	for i := 0; ; i++ {
		data = bytes.Repeat([]byte{byte(i), byte(i >> 8)}, 8)
		if dfcrypto.CRC32LE(append(append([]byte(nil), data...), 0))[0] == 0 {
			break
		}
	}
	plain := append(append([]byte(nil), data...), dfcrypto.CRC32LE(append(append([]byte(nil), data...), 0))...)
	ct, _ := dfcrypto.EncryptCBC(key, iv, dfcrypto.PadZero(plain))
	got, _, err := EV1DecipherResponse(key, iv, ct, StatusOK, -16)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("record read: %X %v", got, err)
	}
	if _, _, err := EV1DecipherResponse(key, iv, ct, StatusOK, -1); !errors.Is(err, ErrResponseCRC) {
		t.Fatalf("unknown length accepted a two-way answer: %v", err)
	}
}
