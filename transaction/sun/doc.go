// Package sun verifies NTAG 424 DNA Secure Unique NFC (SUN) messages: the
// URL a tag writes on every read, carrying its UID and read counter
// (encrypted PICCData or plain mirrors), optionally encrypted file data,
// and an SDMMAC. A Template says which query parameters carry what, AES or
// LRP mode, and which keys from the key provider apply; a Verifier parses
// the query (bounded, strict), checks the MAC, decrypts, and asks the
// ledger to accept the counter only when it is strictly above the last
// accepted one, atomically. It answers authentic, replayed, invalid,
// unknown_tag or tampered, and records clone signals (counter jumps,
// the same counter with another MAC, quick changes of region).
//
// What it does not do: it does not rate-limit (the HTTP layer does), it
// cannot invalidate a URL that was read from the tag but never submitted
// until a newer counter arrives (max_counter_gap and max_age only raise
// signals), and it does not provision tags or write templates.
package sun
