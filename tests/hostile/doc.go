// Package hostile is the hostile-bridge suite: the real relay server,
// in-process over a real WebSocket, faces bridges that alter, truncate,
// replay, reorder, drop and inject responses, answer for another card,
// send garbage, hold sockets open and misuse tokens. Every case ends with
// assertions on the ledger and on the card: nothing is wrongly applied, a
// top-up is credited at most once, a legitimate retry credits it exactly
// once, and the server keeps serving other sessions.
//
// Run it with the shared backends as CI does:
//
//	./scripts/services.sh go test -race -count=1 -v ./tests/hostile/
package hostile
