// Package transaction is the top-up domain: it turns an operator's request
// into exactly one credit on one card over an untrusted bridge. It holds
// the Service (operator operations: create top-ups idempotently, issue
// single-use bridge tokens, read outcomes) and the session runner, which
// takes a card lock, walks the ledger's state machine and runs the card
// scripts (package transaction/cardscript) over a desfire transport.
//
// The rule it keeps: a top-up is credited to a card at most once and never
// lost. The ledger records in_doubt before any commit is sent; every
// in_doubt (or orphaned in_progress) top-up of a card is resolved from the
// card's own top-up log the next time that card is tapped, whatever the tap
// is for.
//
// It imports desfire and its own subpackages, never server. Sessions are
// plain synchronous calls; the only goroutines are the lock's renewal.
package transaction
