// Package faults is the fault-injection matrix of the relay: card tears
// after every APDU, WebSocket closes after every message, SIGKILLs of a
// real relayd process, and restarts of Redis and PostgreSQL in the middle
// of a top-up. After each fault the card is tapped again and the card's
// own state (value file, top-up log) is compared with the ledger.
//
// The suite lives in the package's tests (TestFaultMatrix); this file only
// documents it. It prints one line,
//
//	faults: scenarios=N double_credits=0 lost_topups=0 unresolved_in_doubt=0
//
// and fails when any of the last three is not zero. `go test ./tests/faults`
// runs a reduced sample (CI); `-faults.full` or FAULTS=full runs all of it.
// docs/RELIABILITY.md describes the families and the invariants.
package faults
