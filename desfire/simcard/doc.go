// Package simcard is a simulated MIFARE DESFire EV2/EV3 card that
// implements desfire.Transport, so every card script can run against it
// exactly as against a real card behind a bridge.
//
// The card side of the secure messaging (EV1 AuthenticateAES and EV2
// AuthenticateEV2First/NonFirst, MAC and Full communication modes, IV and
// command counter handling) is implemented here independently of the host
// code in package desfire, built only from the dfcrypto primitives, so a
// host bug shows up as a failed exchange instead of being mirrored. The
// one shared part is the Transaction MAC input (TMI) rule set, taken from
// desfire.TransactionMAC so host and card follow one documented rule.
//
// What it models: PICC level and applications with AES keys, key settings
// and key versions; standard, backup, value, linear record, cyclic record
// and Transaction MAC files with access rights and communication modes;
// transactions with a committed and a working image; additional frames in
// both directions (frames of at most Options.MaxFrame data bytes, 59 by
// default: a 64-byte FSC minus the ISO/native framing); status codes and
// the loss of authentication after errors; random UID mode; fault knobs
// (removal after n APDUs, tearing right after a commit, response
// corruption, latency) and an inspection API for tests.
//
// What it does not model: DES/2K3DES/3K3DES keys, LRP, ISO 7816-4 file
// commands (ISOSelect, ISOReadBinary ...), UpdateRecord, SetConfiguration,
// the proximity check, the Transaction MAC counter limit and the
// CommitReaderID-required option, and delays on repeated failed
// authentications. Capacity is bounded (Options.Capacity bytes of file
// storage, 28 applications, 32 files each) so arbitrary APDUs can never
// make it allocate without bound.
package simcard
