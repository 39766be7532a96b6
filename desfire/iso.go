package desfire

import "fmt"

// ISO 7816-4 wrapping of native commands: CLA 90, INS = native command,
// P1 = P2 = 00, Lc and data when present, Le = 00 (DESFire EV1/EV2 data
// sheets, "ISO/IEC 7816-4 wrapping of native commands"; NXP AN12196 shows
// the same framing in every trace).
const (
	claNative  = 0x90
	swOK       = 0x9000
	swNativeOK = 0x9100
	swMore     = 0x91AF
)

// MaxShortData is the largest Lc of a short APDU.
const MaxShortData = 255

// WrapNative builds the ISO 7816-4 APDU for native command cmd with payload
// data (everything after the command byte).
func WrapNative(cmd byte, data []byte) ([]byte, error) {
	if len(data) > MaxShortData {
		return nil, fmt.Errorf("wrap command %02X with %d bytes: %w", cmd, len(data), ErrFrameTooLong)
	}
	apdu := make([]byte, 0, 6+len(data))
	apdu = append(apdu, claNative, cmd, 0x00, 0x00)
	if len(data) > 0 {
		apdu = append(apdu, byte(len(data)))
		apdu = append(apdu, data...)
	}
	return append(apdu, 0x00), nil
}

// UnwrapNative parses an ISO 7816-4 command APDU that carries a native
// command and returns the command code and payload. It is the inverse of
// WrapNative and is what a card (or simulated card) runs on input.
func UnwrapNative(apdu []byte) (cmd byte, data []byte, err error) {
	if len(apdu) < 4 {
		return 0, nil, fmt.Errorf("command APDU of %d bytes: %w", len(apdu), ErrShortResponse)
	}
	if apdu[0] != claNative || apdu[2] != 0 || apdu[3] != 0 {
		return 0, nil, fmt.Errorf("command APDU header %X: %w", apdu[:4], ErrParameter)
	}
	cmd = apdu[1]
	body := apdu[4:]
	switch {
	case len(body) == 0: // case 1: no Lc, no Le
		return cmd, nil, nil
	case len(body) == 1: // case 2: Le only
		return cmd, nil, nil
	}
	lc := int(body[0])
	if lc == 0 {
		return 0, nil, fmt.Errorf("command APDU with Lc 0: %w", ErrLength)
	}
	switch len(body) {
	case 1 + lc: // case 3: no Le
	case 2 + lc: // case 4: Le present
	default:
		return 0, nil, fmt.Errorf("command APDU Lc %d with %d body bytes: %w", lc, len(body), ErrLength)
	}
	return cmd, body[1 : 1+lc], nil
}

// StatusWord returns SW1SW2 of a response APDU.
func StatusWord(rapdu []byte) (uint16, error) {
	if len(rapdu) < 2 {
		return 0, fmt.Errorf("response APDU of %d bytes: %w", len(rapdu), ErrShortResponse)
	}
	n := len(rapdu)
	return uint16(rapdu[n-2])<<8 | uint16(rapdu[n-1]), nil
}

// SplitResponse splits a response APDU to a native command into its native
// status byte and data. A status word whose SW1 is not 0x91 (an ISO error
// such as 6A82 or 6700) is returned as a *StatusError.
func SplitResponse(rapdu []byte) (status byte, data []byte, err error) {
	sw, err := StatusWord(rapdu)
	if err != nil {
		return 0, nil, err
	}
	data = rapdu[:len(rapdu)-2]
	switch {
	case sw == swOK:
		return StatusOK, data, nil
	case sw>>8 == 0x91:
		return byte(sw), data, nil
	default:
		return 0, nil, &StatusError{SW: sw}
	}
}

// NativeResponse builds the response APDU for a native status and data; the
// simulated card uses it.
func NativeResponse(status byte, data []byte) []byte {
	out := make([]byte, 0, len(data)+2)
	out = append(out, data...)
	return append(out, 0x91, status)
}
