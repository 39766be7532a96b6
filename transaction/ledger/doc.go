// Package ledger is the durable record of top-ups, the sessions that try
// to put them on a card, and the bridge tokens that open those sessions.
//
// Its job is to make a top-up reach a card at most once whatever the
// bridges, the network or the server processes do. It does so with four
// mechanisms, all enforced inside the database so that several server
// processes can share one ledger:
//
//   - idempotent creation: an operator's Idempotency-Key maps to exactly one
//     top-up, and reusing it for a different request is refused;
//   - an explicit state machine (Status, CheckTransition) where every change
//     is one compare-and-set on the current status in one transaction;
//   - fencing: each card remembers the highest fencing token that touched it,
//     so a session that lost its card lock can no longer write;
//   - single-use bridge tokens, stored only as SHA-256 digests.
//
// The state in_doubt is recorded before a commit is sent to the card, so a
// crash at any point leaves a state the recovery path understands.
//
// Two backends implement Ledger with the same schema: ledger/sqlite (the
// embedded default) and ledger/postgres; ledger/ledgertest is the
// behavioural suite both pass. The ledger does not talk to cards, take
// locks or decide policy (who may retry, how long tokens live): callers do.
// It does not yet prune old sessions and tokens.
package ledger
