// Package server is the thin, hardened adapter between the network and
// the transaction package: the operator HTTP API, the bridge WebSocket
// endpoint (each session one goroutine, every wait bounded, every byte
// validated), health, readiness, and graceful shutdown. It holds no top-up
// logic of its own.
//
// The public handler (Handler) puts every request through the edge: a
// request id in and out, a per-address rate limit, a bound on the body's
// size and read time. Operator requests then need an API key, which names
// a tenant (only that tenant's objects exist for the request), pass a
// per-key rate limit and leave one audit line. The admin handler
// (AdminHandler) serves metrics, the OpenAPI document and optional pprof
// on a separate, private listener. TLSConfig is the server's TLS policy.
//
// Not done here: rate limits are per process (several replicas each allow
// the full rate), and client addresses are the TCP peer's (behind a proxy,
// the proxy's); see docs/SECURITY.md.
package server
