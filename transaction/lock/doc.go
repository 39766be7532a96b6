// Package lock keeps two sessions off one card: per-card-UID mutual
// exclusion across many relay processes, with fencing tokens.
//
// A Locker hands out at most one Lock per key at a time. Each Lock carries
// a fencing token (Fence) that is strictly greater than the token of every
// earlier Lock on the same key, so the ledger can refuse a write from a
// session whose lock has since passed to another session (Kleppmann's
// fencing argument: a lease alone cannot stop a paused holder from writing
// after it expired; the store that checks the token can).
//
// Two implementations:
//
//   - Redis (NewRedis): the lock is a key set with SET NX PX and a random
//     token, kept alive by a renewal goroutine (compare-and-PEXPIRE in Lua
//     every TTL/3) and removed by compare-and-delete in Lua, so a holder
//     never extends or deletes a lock it no longer owns. The fence comes
//     from INCR on a separate key, in the same Lua script as the SET, so
//     fences follow acquisition order. Both keys share a hash tag so the
//     scheme also works on Redis Cluster.
//   - In-process (NewMemory): the embedded single-node default, with the
//     same semantics and no TTL.
//
// What it does not do: it is a single-instance Redis lock, not Redlock
// across several independent masters; safety against a Redis fail-over
// that loses the lock key, or a restart that loses the fence counter,
// rests on the ledger's fence check, and the fence counter only stays
// increasing across Redis restarts when Redis persists its data (AOF or
// RDB). Waiting for a held lock polls with backoff; there is no queue and
// no fairness between waiters.
package lock
