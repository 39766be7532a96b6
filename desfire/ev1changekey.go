package desfire

import (
	"fmt"

	"github.com/desfire-relay/relay/desfire/dfcrypto"
)

// EV1ChangeKeyData returns the parts of an EV1 AES ChangeKey (0xC4)
// cryptogram around the command CRC that Full mode inserts (libfreefare
// mifare_desfire_change_key; traces in ev1_secure_messaging.json):
//
//	same key  (the authenticated one): data = NewKey ‖ KeyVer, no trailer
//	other key:  data = (NewKey ⊕ OldKey) ‖ KeyVer, trailer = CRC32(NewKey)
//
// The plaintext sent is data ‖ CRC32(C4 ‖ KeyNo ‖ data) ‖ trailer, zero
// padded (EV1CommandPlaintext). oldKey is ignored for the same key.
func EV1ChangeKeyData(sameKey bool, newKey, oldKey []byte, keyVer byte) (data, trailer []byte, err error) {
	if len(newKey) != dfcrypto.KeySize {
		return nil, nil, fmt.Errorf("change key: new key of %d bytes: %w", len(newKey), dfcrypto.ErrKeySize)
	}
	if sameKey {
		return ev1Concat(newKey, []byte{keyVer}), nil, nil
	}
	if len(oldKey) != dfcrypto.KeySize {
		return nil, nil, fmt.Errorf("change key: old key of %d bytes: %w", len(oldKey), dfcrypto.ErrKeySize)
	}
	data = make([]byte, dfcrypto.KeySize, dfcrypto.KeySize+1)
	for i := range data {
		data[i] = newKey[i] ^ oldKey[i]
	}
	return append(data, keyVer), dfcrypto.CRC32LE(newKey), nil
}

// EV1ChangeKeyCryptogram returns the padded plaintext ChangeKey cryptogram
// for key keyNo, before encryption with the running IV.
func EV1ChangeKeyCryptogram(keyNo byte, sameKey bool, newKey, oldKey []byte, keyVer byte) ([]byte, error) {
	data, trailer, err := EV1ChangeKeyData(sameKey, newKey, oldKey, keyVer)
	if err != nil {
		return nil, err
	}
	return EV1CommandPlaintext(CmdChangeKey, []byte{keyNo}, data, trailer), nil
}

// EV1ChangeKey builds ChangeKey for an EV1 session authenticated with key
// authKeyNo. Sealed on an EV1Channel it goes out enciphered with the running
// IV. Changing another key is answered with a MAC (predictable, so commands
// may be pipelined behind it). Changing the authenticated key makes the
// card answer 9100 without a MAC and end the session: the channel expects
// exactly that and closes itself after opening the reply, so the caller
// authenticates again with the new key.
func EV1ChangeKey(keyNo, authKeyNo byte, newKey, oldKey []byte, keyVer byte) (*Command, error) {
	same := sameKey(keyNo, authKeyNo)
	data, trailer, err := EV1ChangeKeyData(same, newKey, oldKey, keyVer)
	if err != nil {
		return nil, fmt.Errorf("change key %d: %w", keyNo, err)
	}
	return changeKeyCmd(keyNo, same, data, trailer), nil
}
