// Package cardscript holds the card transactions of a top-up system as
// plain synchronous functions over a desfire transport: TopUp, Balance and
// Recover. They know the card profile and the order of commands; they know
// nothing of ledgers, locks or sockets (the runner in package transaction
// supplies those through callbacks).
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
// A card with unresolved (in_doubt) top-ups costs one more exchange: its
// top-up log is read right after authentication and resolved before any
// credit.
package cardscript
