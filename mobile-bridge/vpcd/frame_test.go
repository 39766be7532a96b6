package vpcd

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"
)

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

func TestReadFrame(t *testing.T) {
	long := append([]byte{0xFF, 0xFF}, bytes.Repeat([]byte{0xAB}, MaxMessage)...)
	cases := []struct {
		name    string
		in      []byte
		want    []byte
		wantErr error
		errText string
	}{
		{"control ATR", mustHex(t, "0001 04"), mustHex(t, "04"), nil, ""},
		{"APDU", mustHex(t, "0005 FFCA000000"), mustHex(t, "FFCA000000"), nil, ""},
		{"largest message", long, long[2:], nil, ""},
		{"trailing bytes stay unread", mustHex(t, "0001 01 0001"), mustHex(t, "01"), nil, ""},
		{"clean close", nil, nil, io.EOF, ""},
		{"half a length prefix", mustHex(t, "00"), nil, io.ErrUnexpectedEOF, "length prefix"},
		{"zero length", mustHex(t, "0000"), nil, ErrFrame, "length 0"},
		{"body truncated", mustHex(t, "0100 0102"), nil, io.ErrUnexpectedEOF, "message of 256 bytes truncated after 2"},
		{"body missing", mustHex(t, "0003"), nil, io.ErrUnexpectedEOF, "truncated after 0"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ReadFrame(bytes.NewReader(c.in))
			if c.wantErr != nil {
				if !errors.Is(err, c.wantErr) || !strings.Contains(err.Error(), c.errText) {
					t.Fatalf("error %v, want %v containing %q", err, c.wantErr, c.errText)
				}
				return
			}
			if err != nil || !bytes.Equal(got, c.want) {
				t.Fatalf("got %X, %v; want %X", got, err, c.want)
			}
		})
	}
}

func TestWriteFrame(t *testing.T) {
	cases := []struct {
		name    string
		msg     []byte
		want    []byte
		wantErr error
	}{
		{"ATR", mustHex(t, "3B81800180 80"), mustHex(t, "0006 3B8180018080"), nil},
		{"status word", mustHex(t, "9000"), mustHex(t, "0002 9000"), nil},
		{"too long", make([]byte, MaxMessage+1), nil, ErrFrame},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var buf bytes.Buffer
			err := WriteFrame(&buf, c.msg)
			if c.wantErr != nil {
				if !errors.Is(err, c.wantErr) || buf.Len() != 0 {
					t.Fatalf("error %v (wrote %d bytes), want %v", err, buf.Len(), c.wantErr)
				}
				return
			}
			if err != nil || !bytes.Equal(buf.Bytes(), c.want) {
				t.Fatalf("wrote %X, %v; want %X", buf.Bytes(), err, c.want)
			}
			back, err := ReadFrame(&buf)
			if err != nil || !bytes.Equal(back, c.msg) {
				t.Fatalf("round trip %X, %v", back, err)
			}
		})
	}
}

// FuzzReadFrame reads frames from arbitrary bytes until an error: it must
// never panic, every frame read must re-encode to exactly the bytes it
// consumed, and errors must be the documented ones.
func FuzzReadFrame(f *testing.F) {
	for _, s := range []string{"", "00", "0000", "000104", "0005FFCA000000", "0100", "FFFF00", "0001000001010001020001040002"} {
		b, _ := hex.DecodeString(s)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		consumed := 0
		for {
			msg, err := ReadFrame(r)
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, ErrFrame) {
					t.Fatalf("unexpected error kind: %v", err)
				}
				return
			}
			var buf bytes.Buffer
			if err := WriteFrame(&buf, msg); err != nil {
				t.Fatalf("re-encode: %v", err)
			}
			if !bytes.Equal(buf.Bytes(), in[consumed:consumed+buf.Len()]) {
				t.Fatalf("frame %X does not re-encode to the input", msg)
			}
			consumed += buf.Len()
		}
	})
}
