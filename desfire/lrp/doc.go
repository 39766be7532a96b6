// Package lrp implements NXP's Leakage Resilient Primitive (AN12304) as a
// verifier needs it: the plaintext and updated-key tables (Algorithms 1
// and 2), EvalLRP (Algorithm 3), LRICB encryption and decryption
// (Algorithms 4 and 5) and CMAC_LRP. It serves the LRP mode of NTAG 424
// DNA Secure Dynamic Messaging (package sdm).
//
// It runs on the server side only: it makes no attempt to resist the side
// channels LRP was designed against on a card, and it does not implement
// the LRP secure-messaging session (AuthenticateLRPFirst) yet.
package lrp
