package desfire

import "fmt"

// checkLen reports an answer of got bytes where exactly want are required.
func checkLen(got, want int) error {
	switch {
	case got < want:
		return fmt.Errorf("%d bytes, want %d: %w", got, want, ErrShortResponse)
	case got > want:
		return fmt.Errorf("%d bytes, want %d: %w", got, want, ErrLongResponse)
	}
	return nil
}

// checkRespLen applies a Command's RespLen rule to n plaintext bytes:
// exactly RespLen when it is ≥ 0, a multiple of -RespLen when it is below
// -1, anything for -1.
func checkRespLen(n, respLen int) error {
	switch {
	case respLen >= 0:
		return checkLen(n, respLen)
	case respLen < -1 && n%-respLen != 0:
		return fmt.Errorf("%d bytes, not a multiple of %d: %w", n, -respLen, ErrLongResponse)
	}
	return nil
}

// keyNoMask keeps the key number of a ChangeKey or authentication KeyNo
// byte; at PICC level the upper bits carry the key type.
const keyNoMask = 0x3F

// sameKey reports whether ChangeKey of keyNo changes the authenticated key.
func sameKey(keyNo, authKeyNo byte) bool { return keyNo&keyNoMask == authKeyNo&keyNoMask }

// changeKeyCmd builds ChangeKey (0xC4): KeyNo in plain, the key data in
// Full mode. Changing the authenticated key ends the session: the card
// answers without a MAC.
func changeKeyCmd(keyNo byte, same bool, data, ev1Trailer []byte) *Command {
	resp := CommMAC
	if same {
		resp = CommPlain
	}
	return &Command{
		Code:        CmdChangeKey,
		Header:      []byte{keyNo},
		Data:        data,
		Mode:        CommFull,
		RespMode:    resp,
		RespLen:     0,
		Predictable: true,
		Predicted:   []byte{},
		Name:        fmt.Sprintf("change key %d", keyNo),
		ev1Trailer:  ev1Trailer,
		endsSession: same,
	}
}
