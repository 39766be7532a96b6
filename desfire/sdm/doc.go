// Package sdm verifies NTAG 424 DNA (and DESFire EV3) Secure Dynamic
// Messaging / SUN messages in AES and LRP (AN12304, package lrp) modes:
// it decrypts the mirrored PICCData,
// derives the SDM session keys, checks the SDMMAC and decrypts the mirrored
// file data (NXP NT4H2421Gx section 9.3, AN12196 section 4).
//
// It exists to prove the published SDM vectors with the same primitives as
// the secure channels in package desfire; it does not parse URLs or NDEF
// records (transaction/sun does). Per-tag keys: dfcrypto.Diversify for
// AN10922, or BackendTagKey for the scheme of nfc-developer/sdm-backend.
package sdm
