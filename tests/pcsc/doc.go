// Package pcsc holds the end-to-end test of the PC/SC bridge over the
// real PC/SC stack: the relay server in-process, a simulated card
// presented through the vsmartcard virtual reader (vpcd) to a private
// pcscd, and the bridge reading it through libpcsclite. It needs the
// build tag pcsc and the pcscd that scripts/pcscd.sh starts:
//
//	./scripts/pcscd.sh go test -tags pcsc -race ./tests/pcsc/
//
// Without pcscd the test skips, or fails under CI=true.
package pcsc
