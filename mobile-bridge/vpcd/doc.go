// Package vpcd presents a card to PC/SC through the vsmartcard virtual
// reader driver (vpcd, Debian package vsmartcard-vpcd): pcscd loads the
// driver, which listens on a TCP port (35963 by default) for a virtual
// ICC; this package is that virtual ICC, in pure Go. It lets the PC/SC
// bridge and its tests run the real pcscd and libpcsclite stack against
// the simulated DESFire card, without hardware.
//
// Wire format (vsmartcard's vpcd/vicc protocol): every message in either
// direction is a 2-byte big-endian length followed by that many bytes. A
// 1-byte message from vpcd is a control code (power off, power on, reset,
// get ATR); only get ATR is answered (with the ATR). Any longer message is
// a command APDU, answered with the response APDU. vpcd treats an empty
// answer or a closed connection as a card that left the field.
//
// The package also plays the contactless reader's part that a bare card
// does not: it answers the PC/SC pseudo-APDU GET DATA (FF CA) with the UID
// or the ATS, and derives the contactless ATR of PC/SC part 3 from the
// ATS. A card whose transport reports that it left the field
// (bridge.ErrTagLost, simcard.ErrCardRemoved) makes the virtual reader
// drop the connection, so PC/SC sees the card removed.
//
// Not done: extended-length APDUs beyond what vpcd frames (65535 bytes),
// resetting the card's volatile state on power off/reset (the simulated
// card resets when it is presented again), and serving several cards.
package vpcd
