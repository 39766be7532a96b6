package desfire

import (
	"fmt"

	"github.com/desfire-relay/relay/desfire/dfcrypto"
)

// EV2 key data layouts: MF2DLHX0 section 11.5.1, AN12343 section 9.2.

// EV2ChangeKeyData returns the plaintext key data of ChangeKey under EV2
// secure messaging, before Full-mode padding and encryption:
//
//	other key (case 1): (NewKey ⊕ OldKey) ‖ KeyVer ‖ CRC32(NewKey)
//	same key  (case 2): NewKey ‖ KeyVer
//
// sameKey is true when the key being changed is the one the session is
// authenticated with (AN12343 Tables 39 and 40). oldKey is ignored then.
func EV2ChangeKeyData(sameKey bool, newKey, oldKey []byte, keyVer byte) ([]byte, error) {
	if len(newKey) != dfcrypto.KeySize {
		return nil, fmt.Errorf("change key: new key: %w", dfcrypto.ErrKeySize)
	}
	if sameKey {
		return append(append(make([]byte, 0, dfcrypto.KeySize+1), newKey...), keyVer), nil
	}
	if len(oldKey) != dfcrypto.KeySize {
		return nil, fmt.Errorf("change key: old key: %w", dfcrypto.ErrKeySize)
	}
	out := make([]byte, dfcrypto.KeySize, dfcrypto.KeySize+5)
	for i := range out {
		out[i] = newKey[i] ^ oldKey[i]
	}
	out = append(out, keyVer)
	return append(out, dfcrypto.CRC32LE(newKey)...), nil
}

// EV2ChangeKey builds the ChangeKey command for an EV2 session authenticated
// with authKeyNo. Sealed on an EV2Channel it goes out in Full mode. When
// keyNo is the authenticated key the card answers 9100 without a MAC and
// ends the session; the channel closes itself after opening that reply, so
// the caller authenticates again with the new key.
func EV2ChangeKey(keyNo, authKeyNo byte, newKey, oldKey []byte, keyVer byte) (*Command, error) {
	same := sameKey(keyNo, authKeyNo)
	data, err := EV2ChangeKeyData(same, newKey, oldKey, keyVer)
	if err != nil {
		return nil, fmt.Errorf("change key %d: %w", keyNo, err)
	}
	return changeKeyCmd(keyNo, same, data, nil), nil
}

// ev2EndsSession reports whether cmd is a ChangeKey of the key the session
// is authenticated with.
func ev2EndsSession(cmd *Command, authKeyNo byte) bool {
	return cmd.Code == CmdChangeKey && len(cmd.Header) >= 1 && sameKey(cmd.Header[0], authKeyNo)
}
