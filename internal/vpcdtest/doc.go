// Package vpcdtest is the PC/SC test setup shared by mobile-bridge/pcsc and
// tests/pcsc: it finds the private pcscd with the vpcd virtual reader that
// scripts/pcscd.sh starts (skipping locally, failing under CI=true when it
// is missing), serialises test binaries on the one virtual reader, and
// presents a simulated card to it.
//
// Everything but this comment is built on Unix only (it takes a file lock).
package vpcdtest
