package sdm

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"

	"github.com/desfire-relay/relay/desfire/dfcrypto"
)

// Key derivation of nfc-developer/sdm-backend (libsdm/derive.py, the
// scheme since 2023-01-24). It is that backend's own scheme, not NXP's
// AN10922; it is here so tags provisioned for it can be verified.
var (
	backendPICCDataKey   = []byte("PICCDataKey")
	backendSlotMasterKey = []byte("SlotMasterKey")
	backendDivBaseKey    = []byte("DivBaseKey")
)

func hmacSHA256(key, msg []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	return m.Sum(nil)
}

// backendZero reports the all-zero 16-byte master, which the scheme maps
// to all-zero keys (factory tags).
func backendZero(master []byte) bool {
	return len(master) == dfcrypto.KeySize && bytes.Equal(master, make([]byte, dfcrypto.KeySize))
}

// BackendTagKey derives key keyNo of the tag with this UID:
// CMAC(HMAC-SHA256(M, "SlotMasterKey" ‖ keyNo)[:16],
// 01 ‖ HMAC-SHA256(HMAC-SHA256(M, "DivBaseKey"), UID)[:16]).
func BackendTagKey(master, uid []byte, keyNo byte) ([]byte, error) {
	if len(master) == 0 || len(uid) != UIDSize {
		return nil, fmt.Errorf("sdm-backend tag key: master of %d bytes, UID of %d: %w", len(master), len(uid), ErrInput)
	}
	if backendZero(master) {
		return make([]byte, dfcrypto.KeySize), nil
	}
	slot := hmacSHA256(master, append(append([]byte(nil), backendSlotMasterKey...), keyNo))[:dfcrypto.KeySize]
	div := hmacSHA256(hmacSHA256(master, backendDivBaseKey), uid)[:dfcrypto.KeySize]
	k, err := dfcrypto.CMAC(slot, append([]byte{0x01}, div...))
	if err != nil {
		return nil, fmt.Errorf("sdm-backend tag key: %w", err)
	}
	return k, nil
}

// BackendMetaReadKey derives the undiversified key 1 (the SDM meta-read
// key): HMAC-SHA256(M, "PICCDataKey")[:16].
func BackendMetaReadKey(master []byte) ([]byte, error) {
	if len(master) == 0 {
		return nil, fmt.Errorf("sdm-backend meta read key: empty master: %w", ErrInput)
	}
	if backendZero(master) {
		return make([]byte, dfcrypto.KeySize), nil
	}
	return hmacSHA256(master, backendPICCDataKey)[:dfcrypto.KeySize], nil
}
