// Package desfire speaks the MIFARE DESFire EV1/EV2/EV3 native command set
// over an ISO 7816-4 transport: status words, AES secure messaging (EV1
// AuthenticateAES and EV2 AuthenticateEV2First/NonFirst), the commands a
// stored-value top-up needs, the Transaction MAC and command pipelining for
// batched relays.
//
// The package imports only the standard library and its CMAC dependency; it
// never logs and holds no global state besides sentinel errors. It does not
// implement DES/2K3DES/3K3DES authentication (AES keys only), LRP mode or
// the proximity check.
package desfire
