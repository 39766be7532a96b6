// Package cardscript holds the card transactions of a top-up system as
// phases over a desfire transport that return values: Start or Open
// (select, key version, authenticate), ReadTopUpLog, SealCredit, Stage,
// Commit (returning a Proof) and ReadBalance. They know the card profile
// and the order of commands; they know nothing of ledgers, locks or
// sockets, and call nothing back: the runner in package transaction calls
// the phases in order and writes the ledger between them. TopUp, Balance
// and Recover run whole scripts for tools, tests and benchmarks.
//
// What a log read proves follows the evidence rule of
// docs/ARCHITECTURE.md: record counts come from GetFileSettings under the
// session MAC and records are read under the session MAC, so a bare
// status word (a forged boundary error, say) is an error, never "empty".
//
// Exchange counts with a batching transport (each is one bridge round
// trip), proven by the tests:
//
//	EV2 top-up: 3 — [SelectApplication, GetKeyVersion, AuthenticateEV2First]
//	            [AF: PCD cryptogram] — the card's TI is needed for every MAC
//	            that follows — then [GetCardUID, GetValue, WriteRecord,
//	            Credit, CommitTransaction(TMAC), GetValue], all sealed ahead
//	            because EV2 MACs depend on the command counter only.
//	EV1 top-up: 2 — [SelectApplication, GetKeyVersion, AuthenticateAES]
//	            [AF: PCD cryptogram, WriteRecord, Credit, CommitTransaction,
//	            GetValue]: once RndB is known the card's proof E(K, RndA')
//	            and the MACed empty answers of WriteRecord, Credit and
//	            Commit are fully predictable, so the running CMAC IV of
//	            every later command is known before the card answers.
//
// A card with unresolved (in_doubt) top-ups costs more exchanges: its
// top-up log's MACed settings, then its records (one exchange per frame),
// are read right after authentication and settled before any credit
// (published per session kind in docs/ARCHITECTURE.md).
package cardscript
