// Package server is the thin, hardened adapter between the network and
// the transaction package: the operator HTTP API, the bridge WebSocket
// endpoint (each session one goroutine, every wait bounded, every byte
// validated), health, readiness and Prometheus metrics, and graceful
// shutdown. It holds no top-up logic of its own.
package server
