// Package dfcrypto holds the pure cryptographic functions DESFire secure
// messaging is built from: AES-128 CMAC (RFC 4493, through
// github.com/aead/cmac) with and without a running IV, the EV2 truncated
// MAC, the DESFire CRC32, ISO/IEC 9797-1 padding, AES-CBC helpers and
// NXP AN10922 AES-128 key diversification. Nothing here holds session
// state; the secure channels in package desfire do.
package dfcrypto
