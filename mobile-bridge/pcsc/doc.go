// Package pcsc is the PC/SC card backend of the reference bridge: a
// desfire.Transport over a contactless reader driven by pcscd through
// libpcsclite (github.com/ebfe/scard, cgo). It selects a reader by name,
// waits for a card, connects in shared mode, reads the UID and ATS with
// the PC/SC GET DATA pseudo-APDU (FF CA) and relays APDUs; a card that
// left the field is reported as bridge.ErrTagLost.
//
// Everything but this comment needs the build tag pcsc (and
// libpcsclite-dev to build), so the rest of the module builds without
// PC/SC: go build -tags pcsc ./mobile-bridge/...
//
// Not done: cancelling an APDU already handed to the reader (a context
// is checked before each APDU; the reader bounds the exchange itself),
// extended APDUs, readers that cannot report the UID.
package pcsc
