package simcard

import (
	"encoding/binary"
	"slices"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/desfire/dfcrypto"
)

// The native commands as a table. Each command declares where it runs
// (level), who may run it (access rules, checked in order before anything
// is read), how its payload is protected (comm), how long its plaintext
// data must be (length) and how its answer is protected (reply); the
// dispatcher, run, applies these once, in that order, and the command's
// own function does only what is particular to it. The first failing rule
// gives the status word, as on a real card.

// level says where a command runs; elsewhere it answers 1C
// ILLEGAL_COMMAND.
type level uint8

const (
	anyLevel  level = iota
	piccLevel       // only with the PICC selected
	appLevel        // only with an application selected
)

// call is one command being run: its code and raw payload, then what the
// rules found.
type call struct {
	code byte
	p    []byte
	// f and mode: for file commands, the file p[0] names and the
	// protection this session gets for it (fileAccess).
	f    *file
	mode desfire.CommMode
	// h and d are the payload's plain header and data, secure
	// messaging removed.
	h, d []byte
	// reply is the protection of the answer.
	reply desfire.CommMode
}

// accessRule checks, before the payload is opened, whether the command may
// run; it answers a status (StatusOK to go on) and may note what it found
// in x.
type accessRule func(c *Card, x *call) byte

// command is one native command's declaration.
type command struct {
	level level
	// deselect ends the session and the transaction before anything
	// else (SelectApplication).
	deselect bool
	access   []accessRule
	// comm says how the payload is protected; nil: not at all (the
	// payload is the data).
	comm func(c *Card, x *call) cmdIn
	// length checks the plaintext data's length (1C7E LENGTH_ERROR
	// when false); nil: any length.
	length func(x *call) bool
	// reply is the answer's protection; nil: plain.
	reply func(c *Card, x *call) desfire.CommMode
	// run does the command's own work.
	run func(c *Card, x *call) result
}

// run executes a complete native command by its declaration.
func (c *Card) run(code byte, p []byte) result {
	cmd, ok := commands[code]
	if !ok || c.gen == GenEV1 && ev2Only[code] {
		return fail(desfire.StatusIllegalCommand)
	}
	if cmd.deselect {
		c.sess = nil
		c.discardTxn()
	}
	switch {
	case cmd.level == piccLevel && !c.sel.isPICC(), cmd.level == appLevel && c.sel.isPICC():
		return fail(desfire.StatusIllegalCommand)
	}
	x := &call{code: code, p: p}
	for _, a := range cmd.access {
		if st := a(c, x); st != desfire.StatusOK {
			return fail(st)
		}
	}
	x.d = p
	if cmd.comm != nil {
		h, d, st := c.open(code, p, cmd.comm(c, x))
		if st != desfire.StatusOK {
			return fail(st)
		}
		x.h, x.d = h, d
	}
	if cmd.length != nil && !cmd.length(x) {
		return fail(desfire.StatusLengthError)
	}
	if cmd.reply != nil {
		x.reply = cmd.reply(c, x)
	}
	return cmd.run(c, x)
}

// okReply answers success with data under the declared reply protection.
func (c *Card) okReply(x *call, data []byte) result { return c.ok(data, x.reply) }

// --- length rules ---

// exactly: the data holds n bytes.
func exactly(n int) func(x *call) bool { return func(x *call) bool { return len(x.d) == n } }

// atMost: the data holds at most n bytes.
func atMost(n int) func(x *call) bool { return func(x *call) bool { return len(x.d) <= n } }

// atLeast: the data holds at least n bytes (the command checks the rest).
func atLeast(n int) func(x *call) bool { return func(x *call) bool { return len(x.d) >= n } }

// --- comm rules ---

// mgmt: a management command, all parameters in the data, MACed when
// authenticated.
func mgmt(c *Card, _ *call) cmdIn { return cmdIn{mode: c.mgmtMode()} }

// full: hdr plain header bytes, then enciphered data of ev1DataLen bytes.
func full(hdr, ev1DataLen int) func(c *Card, x *call) cmdIn {
	return func(*Card, *call) cmdIn { return cmdIn{hdr: hdr, mode: desfire.CommFull, ev1DataLen: ev1DataLen} }
}

// fileRead: a read carries no data, so the command is MACed (EV2) or
// CMAC-chained (EV1) when the file is protected.
func fileRead(hdr int) func(c *Card, x *call) cmdIn {
	return func(_ *Card, x *call) cmdIn { return cmdIn{hdr: hdr, mode: readCmdMode(x.mode)} }
}

// fileWrite: data of n bytes (dataLen) in the file's mode, MACed in EV1.
func fileWrite(hdr int, dataLen func(x *call) int) func(c *Card, x *call) cmdIn {
	return func(_ *Card, x *call) cmdIn {
		return cmdIn{hdr: hdr, mode: x.mode, ev1DataLen: dataLen(x), ev1MAC: true}
	}
}

// --- reply rules ---

// replyMgmt: a management answer, MACed when authenticated.
func replyMgmt(c *Card, _ *call) desfire.CommMode { return c.mgmtMode() }

// replyFile: data read from a file, in the file's protection.
func replyFile(_ *Card, x *call) desfire.CommMode { return x.mode }

// replyWritten: the answer to a write, which carries no data.
func replyWritten(_ *Card, x *call) desfire.CommMode { return writeRespMode(x.mode) }

// replyMode: always m.
func replyMode(m desfire.CommMode) func(*Card, *call) desfire.CommMode {
	return func(*Card, *call) desfire.CommMode { return m }
}

// --- access rules ---

// authenticated: any session (AE AUTHENTICATION_ERROR without one).
func authenticated(c *Card, _ *call) byte {
	if c.sess == nil {
		return desfire.StatusAuthenticationError
	}
	return desfire.StatusOK
}

// masterKey: the selected level's master key (AE without a session, 9D
// PERMISSION_DENIED with another key).
func masterKey(c *Card, _ *call) byte {
	if !c.isKey(0) {
		if c.sess == nil {
			return desfire.StatusAuthenticationError
		}
		return desfire.StatusPermissionDenied
	}
	return desfire.StatusOK
}

// masterKeyOr: free when key settings bit is set, otherwise as masterKey.
func masterKeyOr(bit byte) accessRule {
	return func(c *Card, x *call) byte {
		if c.sel.ks1&bit != 0 {
			return desfire.StatusOK
		}
		return masterKey(c, x)
	}
}

// payload: the raw payload holds at least n bytes (the plain header).
func payload(n int) accessRule {
	return func(_ *Card, x *call) byte {
		if len(x.p) < n {
			return desfire.StatusLengthError
		}
		return desfire.StatusOK
	}
}

// fileAccess: p[0] names an existing file of one of types (nil: any),
// and the session holds one of the rights the file gives for the command
// (a free right means plain); sets x.f and x.mode.
func fileAccess(types []byte, rights func(f *file, code byte) []byte) accessRule {
	return func(c *Card, x *call) byte {
		if len(x.p) < 1 {
			return desfire.StatusLengthError
		}
		f, st := c.fileOf(x.p[0])
		if st != desfire.StatusOK {
			return st
		}
		if types != nil && !slices.Contains(types, f.typ) {
			return desfire.StatusParameterError
		}
		mode, st := c.fileMode(f, rights(f, x.code)...)
		if st != desfire.StatusOK {
			return st
		}
		x.f, x.mode = f, mode
		return desfire.StatusOK
	}
}

// readRights: Read or ReadWrite.
func readRights(f *file, _ byte) []byte { return f.rights(kRead, kRW) }

// readWriteRight: ReadWrite only.
func readWriteRight(f *file, _ byte) []byte { return f.rights(kRW) }

// changeRight: Change only.
func changeRight(f *file, _ byte) []byte { return f.rights(kChange) }

// anyValueRight: GetValue takes any right of the value file.
func anyValueRight(f *file, _ byte) []byte { return f.rights(kRead, kWrite, kRW) }

// valueOpRights: Credit needs ReadWrite; Debit any right; LimitedCredit
// Write or ReadWrite.
func valueOpRights(f *file, code byte) []byte {
	switch code {
	case cmdCredit:
		return f.rights(kRW)
	case cmdDebit:
		return f.rights(kRead, kWrite, kRW)
	default:
		return f.rights(kWrite, kRW)
	}
}

var (
	dataFiles   = []byte{FileStandard, FileBackup, FileTMAC}
	valueFiles  = []byte{FileValue}
	recordFiles = []byte{FileLinear, FileCyclic}
)

// commands is every native command but the additional frame.
var commands map[byte]command

// init builds the command table (a function of its own: the rules refer
// to the commands' functions, which refer to the table through run).
func init() {
	auth := command{run: func(c *Card, x *call) result { return c.cmdAuthenticate(x.code, x.p) }}
	createFile := command{level: appLevel, access: []accessRule{masterKeyOr(0x04)}, comm: mgmt,
		reply: replyMgmt, run: (*Card).cmdCreateFile}
	create := func(hdr int) command { c := createFile; c.length = exactly(hdr); return c }
	valueOp := command{access: []accessRule{fileAccess(valueFiles, valueOpRights)},
		comm: fileWrite(1, func(*call) int { return 4 }), length: exactly(4), reply: replyWritten, run: (*Card).cmdValueOp}
	write := command{access: []accessRule{writeAccess},
		comm:   fileWrite(7, func(x *call) int { return le24(x.p[4:7]) }),
		length: func(x *call) bool { return len(x.d) == le24(x.p[4:7]) }, reply: replyWritten, run: (*Card).cmdWrite}
	commands = map[byte]command{
		cmdAuthAES:         auth,
		cmdAuthEV2First:    auth,
		cmdAuthEV2NonFirst: auth,

		// PICC and application level.
		cmdSelectApplication: {deselect: true, length: exactly(3), run: (*Card).cmdSelectApplication},
		cmdGetVersion:        {comm: mgmt, length: exactly(0), reply: replyMgmt, run: (*Card).cmdGetVersion},
		cmdGetCardUID: {access: []accessRule{authenticated}, comm: mgmt, length: exactly(0),
			reply: replyMode(desfire.CommFull), run: (*Card).cmdGetCardUID},
		cmdGetKeyVersion:  {comm: mgmt, length: exactly(1), reply: replyMgmt, run: (*Card).cmdGetKeyVersion},
		cmdGetKeySettings: {comm: mgmt, length: exactly(0), reply: replyMgmt, run: (*Card).cmdGetKeySettings},
		cmdGetApplicationIDs: {level: piccLevel, access: []accessRule{listAccess}, comm: mgmt, length: exactly(0),
			reply: replyMgmt, run: (*Card).cmdGetApplicationIDs},
		cmdFormatPICC: {level: piccLevel, access: []accessRule{formatAccess}, comm: mgmt, length: exactly(0),
			reply: replyMgmt, run: (*Card).cmdFormatPICC},
		cmdCreateApplication: {level: piccLevel, access: []accessRule{masterKeyOr(0x04)}, comm: mgmt, length: atLeast(5),
			reply: replyMgmt, run: (*Card).cmdCreateApplication},
		cmdDeleteApplication: {access: []accessRule{payload(3), deleteAppAccess}, comm: mgmt, length: exactly(3),
			reply: replyMgmt, run: (*Card).cmdDeleteApplication},
		cmdChangeKeySettings: {access: []accessRule{masterKey, settingsChangeable}, comm: full(0, 1), length: exactly(1),
			reply: replyMode(desfire.CommMAC), run: (*Card).cmdChangeKeySettings},
		cmdChangeKey: {access: []accessRule{payload(1), authenticated, changeKeyAccess},
			comm:  func(*Card, *call) cmdIn { return cmdIn{hdr: 1, mode: desfire.CommFull, rawEV1: true} },
			reply: replyMode(desfire.CommMAC), run: (*Card).cmdChangeKey},

		// File management.
		cmdGetFileIDs: {level: appLevel, access: []accessRule{masterKeyOr(0x02)}, comm: mgmt, length: exactly(0),
			reply: replyMgmt, run: (*Card).cmdGetFileIDs},
		cmdGetFileSettings: {level: appLevel, access: []accessRule{masterKeyOr(0x02)}, comm: mgmt, length: exactly(1),
			reply: replyMgmt, run: (*Card).cmdGetFileSettings},
		cmdCreateStdDataFile:  create(7),
		cmdCreateBackupFile:   create(7),
		cmdCreateValueFile:    create(17),
		cmdCreateLinearRecord: create(10),
		cmdCreateCyclicRecord: create(10),
		cmdCreateTMACFile: {level: appLevel, access: []accessRule{masterKeyOr(0x04), authenticated},
			comm: full(5, 17), length: exactly(17), reply: replyMgmt, run: (*Card).cmdCreateFile},
		cmdDeleteFile: {level: appLevel, access: []accessRule{masterKeyOr(0x04)}, comm: mgmt, length: exactly(1),
			reply: replyMgmt, run: (*Card).cmdDeleteFile},
		cmdChangeFileSettings: {level: appLevel, access: []accessRule{fileAccess(nil, changeRight)},
			comm:   func(_ *Card, x *call) cmdIn { return cmdIn{hdr: 1, mode: settingsMode(x.f), ev1DataLen: 3} },
			length: func(x *call) bool { return len(x.d) >= 3 },
			reply:  func(_ *Card, x *call) desfire.CommMode { return writeRespMode(settingsMode(x.f)) },
			run:    (*Card).cmdChangeFileSettings},

		// Data.
		cmdReadData: {access: []accessRule{fileAccess(dataFiles, readRights)}, comm: fileRead(7), length: exactly(0),
			reply: replyFile, run: (*Card).cmdReadData},
		cmdWriteData:   write,
		cmdWriteRecord: write,
		cmdGetValue: {access: []accessRule{fileAccess(valueFiles, anyValueRight)}, comm: fileRead(1), length: exactly(0),
			reply: replyFile, run: (*Card).cmdGetValue},
		cmdCredit:        valueOp,
		cmdDebit:         valueOp,
		cmdLimitedCredit: valueOp,
		cmdReadRecords: {access: []accessRule{fileAccess(recordFiles, readRights)}, comm: fileRead(7), length: exactly(0),
			reply: replyFile, run: (*Card).cmdReadRecords},
		// No data travels: MACed like a management command when
		// authenticated.
		cmdClearRecordFile: {access: []accessRule{fileAccess(recordFiles, readWriteRight)},
			comm:   func(c *Card, _ *call) cmdIn { return cmdIn{hdr: 1, mode: c.mgmtMode()} },
			length: exactly(0), reply: replyMgmt, run: (*Card).cmdClearRecordFile},

		// Transactions.
		cmdCommitTransaction: {level: appLevel, comm: mgmt, length: atMost(1), reply: replyMgmt, run: (*Card).cmdCommitTransaction},
		cmdAbortTransaction:  {level: appLevel, comm: mgmt, length: exactly(0), reply: replyMgmt, run: (*Card).cmdAbortTransaction},
		cmdCommitReaderID: {level: appLevel, access: []accessRule{readerIDAccess}, comm: mgmt, length: exactly(desfire.TMRISize),
			reply: replyMgmt, run: (*Card).cmdCommitReaderID},
	}
}

// le24 reads a 3-byte little-endian number.
func le24(b []byte) int { return int(b[0]) | int(b[1])<<8 | int(b[2])<<16 }

// le32 reads a 4-byte little-endian signed number.
func le32(b []byte) int32 { return int32(binary.LittleEndian.Uint32(b)) }

// put24 writes a 3-byte little-endian number.
func put24(v int) []byte { return []byte{byte(v), byte(v >> 8), byte(v >> 16)} }

// isKey reports whether the session is authenticated with key k.
func (c *Card) isKey(k byte) bool { return c.sess != nil && c.sess.keyNo == k }

// fileMode decides whether a file command may run and with which
// protection: a free right (E) means plain; otherwise the session's key
// must be one of rights and the file's mode applies.
func (c *Card) fileMode(f *file, rights ...byte) (desfire.CommMode, byte) {
	never := true
	for _, r := range rights {
		if r == accessFree {
			return desfire.CommPlain, desfire.StatusOK
		}
		if r != accessNever {
			never = false
		}
	}
	if never {
		return 0, desfire.StatusPermissionDenied
	}
	if c.sess == nil {
		return 0, desfire.StatusAuthenticationError
	}
	for _, r := range rights {
		if r == c.sess.keyNo {
			return f.comm, desfire.StatusOK
		}
	}
	return 0, desfire.StatusPermissionDenied
}

// readCmdMode: a read carries no data, so the command is MACed (EV2) or
// CMAC-chained (EV1) when the file is protected.
func readCmdMode(m desfire.CommMode) desfire.CommMode {
	if m == desfire.CommPlain {
		return desfire.CommPlain
	}
	return desfire.CommMAC
}

// writeRespMode: an answer without data is MACed for MAC and Full files.
func writeRespMode(m desfire.CommMode) desfire.CommMode {
	if m == desfire.CommFull {
		return desfire.CommMAC
	}
	return m
}

// fileOf returns the selected application's file no (F0 FILE_NOT_FOUND
// when missing).
func (c *Card) fileOf(no byte) (*file, byte) {
	f := c.sel.files[no]
	if f == nil {
		return nil, desfire.StatusFileNotFound
	}
	return f, desfire.StatusOK
}

// --- PICC and application level ---

// cmdSelectApplication: AID(3); 000000 selects the PICC. Any selection
// ends the session (deselect).
func (c *Card) cmdSelectApplication(x *call) result {
	aid := [3]byte{x.d[0], x.d[1], x.d[2]}
	if aid == ([3]byte{}) {
		c.sel = c.picc
		return result{status: desfire.StatusOK}
	}
	a := c.apps[aid]
	if a == nil {
		c.sel = c.picc
		return fail(desfire.StatusApplicationNotFound)
	}
	c.sel = a
	return result{status: desfire.StatusOK}
}

// version data: EV3, 4 KB, ISO 14443-2 and -3 (frames of 7, 7 and 14).
var (
	// versions holds GetVersion's hardware and software parts per
	// generation (vendor NXP, type DESFire, major.minor, 4 KB, ISO
	// 14443-2 and -3): major hardware version 0x01 EV1, 0x12 EV2, 0x33 EV3.
	versions = map[Generation][2][]byte{
		GenEV1: {{0x04, 0x01, 0x01, 0x01, 0x00, 0x18, 0x05}, {0x04, 0x01, 0x01, 0x01, 0x04, 0x18, 0x05}},
		GenEV2: {{0x04, 0x01, 0x01, 0x12, 0x00, 0x18, 0x05}, {0x04, 0x01, 0x01, 0x02, 0x01, 0x18, 0x05}},
		GenEV3: {{0x04, 0x01, 0x01, 0x33, 0x00, 0x18, 0x05}, {0x04, 0x01, 0x01, 0x03, 0x00, 0x18, 0x05}},
	}
)

// cmdGetVersion answers the version data in three frames (7, 7, 14 bytes).
func (c *Card) cmdGetVersion(x *call) result {
	uid := c.uid
	if c.randomID || len(uid) != 7 {
		uid = make([]byte, 7)
	}
	v := versions[c.gen]
	data := append(append(append([]byte(nil), v[0]...), v[1]...), uid...)
	data = append(data, 0xBA, 0x7C, 0x40, 0x00, 0x00, 0x25, 0x24) // batch, week, year
	sealed := c.seal(data, x.reply)
	c.pend = pending{kind: pendChunks, chunks: [][]byte{sealed[7:14], sealed[14:]}}
	return result{status: desfire.StatusAdditionalFrame, data: sealed[:7]}
}

// cmdGetCardUID answers the real UID, enciphered.
func (c *Card) cmdGetCardUID(x *call) result {
	return c.okReply(x, append([]byte(nil), c.uid...))
}

// cmdGetKeyVersion: KeyNo(1); answers the key's version.
func (c *Card) cmdGetKeyVersion(x *call) result {
	k := int(x.d[0])
	if c.sel.isPICC() {
		k = int(x.d[0] & 0x3F)
	}
	if k >= len(c.sel.keys) {
		return fail(desfire.StatusNoSuchKey)
	}
	return c.okReply(x, []byte{c.sel.keys[k].version})
}

// cmdGetKeySettings answers KeySett1 ‖ KeySett2 of the selected level.
func (c *Card) cmdGetKeySettings(x *call) result {
	return c.okReply(x, []byte{c.sel.ks1, c.sel.ks2})
}

// listAccess: listing applications is free when key settings bit 1 is
// set, otherwise it needs the PICC master key (9D either way).
func listAccess(c *Card, _ *call) byte {
	if c.sel.ks1&0x02 == 0 && !c.isKey(0) {
		return desfire.StatusPermissionDenied
	}
	return desfire.StatusOK
}

// cmdGetApplicationIDs answers the AIDs in creation order.
func (c *Card) cmdGetApplicationIDs(x *call) result {
	out := []byte{}
	for _, aid := range c.appOrder {
		out = append(out, aid[:]...)
	}
	return c.okReply(x, out)
}

// formatAccess: formatting needs the PICC master key (AE otherwise).
func formatAccess(c *Card, _ *call) byte {
	if !c.isKey(0) {
		return desfire.StatusAuthenticationError
	}
	return desfire.StatusOK
}

// cmdFormatPICC deletes every application.
func (c *Card) cmdFormatPICC(x *call) result {
	c.apps = map[[3]byte]*app{}
	c.appOrder = nil
	c.used = 0
	c.discardTxn()
	return c.okReply(x, nil)
}

// cmdCreateApplication: AID(3) ‖ KeySett1 ‖ KeySett2 [‖ ISOFileID(2) ‖
// DFName(0..16)].
func (c *Card) cmdCreateApplication(x *call) result {
	d := x.d
	aid := [3]byte{d[0], d[1], d[2]}
	ks1, ks2 := d[3], d[4]
	var fid, name []byte
	if ks2&0x20 != 0 {
		if len(d) < 7 || len(d) > 7+16 {
			return fail(desfire.StatusLengthError)
		}
		fid, name = d[5:7], d[7:]
	} else if len(d) != 5 {
		return fail(desfire.StatusLengthError)
	}
	n := int(ks2 & 0x0F)
	if aid == ([3]byte{}) || ks2&0xC0 != 0x80 || n < 1 || n > MaxKeys {
		return fail(desfire.StatusParameterError)
	}
	if c.apps[aid] != nil {
		return fail(desfire.StatusDuplicateError)
	}
	if len(c.apps) >= MaxApplications {
		return fail(desfire.StatusCountError)
	}
	if c.used+64 > c.capacity {
		return fail(desfire.StatusOutOfMemory)
	}
	a := newApp(aid, ks1, ks2)
	a.isoFID, a.dfName = append([]byte(nil), fid...), append([]byte(nil), name...)
	c.apps[aid] = a
	c.appOrder = append(c.appOrder, aid)
	c.used += 64
	return c.okReply(x, nil)
}

// deleteAppAccess: the application exists, and the session holds the PICC
// master key, or the application's own master key when it is selected.
func deleteAppAccess(c *Card, x *call) byte {
	a := c.apps[[3]byte{x.p[0], x.p[1], x.p[2]}]
	if a == nil {
		return desfire.StatusApplicationNotFound
	}
	if !(c.sel.isPICC() && c.isKey(0)) && !(c.sel == a && c.isKey(0)) {
		if c.sess == nil {
			return desfire.StatusAuthenticationError
		}
		return desfire.StatusPermissionDenied
	}
	return desfire.StatusOK
}

// cmdDeleteApplication: AID(3); deleting the selected application ends
// the session and selects the PICC.
func (c *Card) cmdDeleteApplication(x *call) result {
	aid := [3]byte{x.p[0], x.p[1], x.p[2]}
	a := c.apps[aid]
	res := c.okReply(x, nil)
	for _, f := range a.files {
		c.used -= f.storage()
	}
	c.used -= 64
	delete(c.apps, aid)
	for i, id := range c.appOrder {
		if id == aid {
			c.appOrder = append(c.appOrder[:i:i], c.appOrder[i+1:]...)
			break
		}
	}
	if c.sel == a {
		c.sel = c.picc
		c.sess = nil
		c.discardTxn()
	}
	return res
}

// settingsChangeable: key settings bit 3 allows changing the settings.
func settingsChangeable(c *Card, _ *call) byte {
	if c.sel.ks1&0x08 == 0 {
		return desfire.StatusPermissionDenied
	}
	return desfire.StatusOK
}

// cmdChangeKeySettings: KeySett1(1), enciphered.
func (c *Card) cmdChangeKeySettings(x *call) result {
	c.sel.ks1 = x.d[0]
	return c.okReply(x, nil)
}

// changeKeyAccess: KeyNo names an existing key of the selected level (the
// PICC takes 0 with an optional AES flag, 80), and the session's key may
// change it (key settings bits 7-4 and bit 0).
func changeKeyAccess(c *Card, x *call) byte {
	keyNo := x.p[0]
	k := int(keyNo & 0x3F)
	if c.sel.isPICC() {
		if keyNo&0x3F != 0 || (keyNo&0xC0 != 0x80 && keyNo&0xC0 != 0) {
			return desfire.StatusParameterError
		}
	} else if keyNo&0xC0 != 0 {
		return desfire.StatusParameterError
	}
	if k >= len(c.sel.keys) {
		return desfire.StatusNoSuchKey
	}
	ck := c.sel.ks1 >> 4
	switch {
	case k == 0 || c.sel.isPICC():
		if !c.isKey(0) || c.sel.ks1&0x01 == 0 {
			return desfire.StatusPermissionDenied
		}
	case ck == 0x0F:
		return desfire.StatusPermissionDenied
	case ck == 0x0E:
		if !c.isKey(byte(k)) {
			return desfire.StatusPermissionDenied
		}
	default:
		if !c.isKey(ck) {
			return desfire.StatusPermissionDenied
		}
	}
	return desfire.StatusOK
}

// cmdChangeKey: KeyNo ‖ cryptogram. Same key: NewKey ‖ KeyVer; other key:
// (NewKey ⊕ OldKey) ‖ KeyVer ‖ CRC32(NewKey). EV1 puts CRC32(C4 ‖ KeyNo ‖
// those 17 bytes) after them and pads with zeros; EV2 pads with 80 00...
func (c *Card) cmdChangeKey(x *call) result {
	keyNo := x.p[0]
	k := int(keyNo & 0x3F)
	same := c.sess.keyNo == byte(k)
	d := x.d
	var nk []byte
	old := c.sel.keys[k].value[:]
	var ver byte
	switch c.sess.kind {
	case kindEV1:
		n := 17
		if !same {
			n = 21
		}
		if len(d) != 32 {
			return fail(desfire.StatusLengthError)
		}
		for _, b := range d[n+4:] {
			if b != 0 {
				return fail(desfire.StatusIntegrityError)
			}
		}
		crc := dfcrypto.CRC32LE(append([]byte{x.code, keyNo}, d[:17]...))
		if !dfcrypto.Equal(crc, d[17:21]) {
			return fail(desfire.StatusIntegrityError)
		}
		nk, ver = keyFrom(d[:16], old, same), d[16]
		if !same && !dfcrypto.Equal(dfcrypto.CRC32LE(nk), d[21:25]) {
			return fail(desfire.StatusIntegrityError)
		}
	default:
		if same && len(d) != 17 || !same && len(d) != 21 {
			return fail(desfire.StatusLengthError)
		}
		nk, ver = keyFrom(d[:16], old, same), d[16]
		if !same && !dfcrypto.Equal(dfcrypto.CRC32LE(nk), d[17:21]) {
			return fail(desfire.StatusIntegrityError)
		}
	}
	copy(c.sel.keys[k].value[:], nk)
	c.sel.keys[k].version = ver
	if same {
		// Changing the session's own key ends the session: plain answer.
		c.sess = nil
		return result{status: desfire.StatusOK}
	}
	return c.okReply(x, nil)
}

// keyFrom recovers the new key from the cryptogram (XORed with the old
// one when another key than the session's changes).
func keyFrom(d, old []byte, same bool) []byte {
	nk := append([]byte(nil), d...)
	if !same {
		for i := range nk {
			nk[i] ^= old[i]
		}
	}
	return nk
}

// --- file management ---

// cmdGetFileIDs answers the file numbers of the selected application.
func (c *Card) cmdGetFileIDs(x *call) result {
	out := []byte{}
	for i := 0; i < MaxFiles; i++ {
		if c.sel.files[byte(i)] != nil {
			out = append(out, byte(i))
		}
	}
	return c.okReply(x, out)
}

// cmdGetFileSettings: FileNo(1); answers fileSettings.
func (c *Card) cmdGetFileSettings(x *call) result {
	f, st := c.fileOf(x.d[0])
	if st != desfire.StatusOK {
		return fail(st)
	}
	return c.okReply(x, fileSettings(f))
}

// fileSettings is the GetFileSettings answer: Type ‖ Comm ‖ Access(2) ‖
// type-specific fields.
func fileSettings(f *file) []byte {
	out := []byte{f.typ, byte(f.comm), byte(f.access), byte(f.access >> 8)}
	switch f.typ {
	case FileStandard, FileBackup:
		out = append(out, put24(f.size)...)
	case FileValue:
		out = binary.LittleEndian.AppendUint32(out, uint32(f.lower))
		out = binary.LittleEndian.AppendUint32(out, uint32(f.upper))
		out = binary.LittleEndian.AppendUint32(out, uint32(f.lcValue))
		out = append(out, f.lcFlags)
	case FileLinear, FileCyclic:
		out = append(out, put24(f.recSize)...)
		out = append(out, put24(f.maxRecs)...)
		out = append(out, put24(len(f.records))...)
	case FileTMAC:
		out = append(out, 0x02, f.tmKeyVer)
	}
	if len(f.addAccess) > 0 {
		out[1] |= 0x80
		out = append(out, byte(len(f.addAccess)))
		for _, a := range f.addAccess {
			out = append(out, byte(a), byte(a>>8))
		}
	}
	return out
}

// cmdCreateFile creates any file type: FileNo ‖ Comm ‖ Access(2) ‖
// type-specific header; the Transaction MAC file's key travels enciphered
// after its header.
func (c *Card) cmdCreateFile(x *call) result {
	code, h, d := x.code, x.d, x.d
	if code == cmdCreateTMACFile {
		h = x.h
	}
	no := h[0]
	if no >= MaxFiles {
		return fail(desfire.StatusParameterError)
	}
	comm := desfire.CommMode(h[1])
	if comm != desfire.CommPlain && comm != desfire.CommMAC && comm != desfire.CommFull {
		return fail(desfire.StatusParameterError)
	}
	f := &file{no: no, comm: comm, access: uint16(h[2]) | uint16(h[3])<<8}
	switch code {
	case cmdCreateStdDataFile, cmdCreateBackupFile:
		f.typ = FileStandard
		if code == cmdCreateBackupFile {
			f.typ = FileBackup
		}
		f.size = le24(h[4:7])
		if f.size == 0 {
			return fail(desfire.StatusParameterError)
		}
	case cmdCreateValueFile:
		f.typ = FileValue
		f.lower, f.upper, f.value, f.lcFlags = le32(h[4:8]), le32(h[8:12]), le32(h[12:16]), h[16]
		if f.lower > f.upper || f.value < f.lower || f.value > f.upper {
			return fail(desfire.StatusBoundaryError)
		}
	case cmdCreateLinearRecord, cmdCreateCyclicRecord:
		f.typ = FileLinear
		if code == cmdCreateCyclicRecord {
			f.typ = FileCyclic
		}
		f.recSize, f.maxRecs = le24(h[4:7]), le24(h[7:10])
		if f.recSize == 0 || f.maxRecs == 0 || (f.typ == FileCyclic && f.maxRecs < 2) {
			return fail(desfire.StatusParameterError)
		}
	case cmdCreateTMACFile:
		f.typ = FileTMAC
		if h[4] != 0x02 {
			return fail(desfire.StatusParameterError)
		}
		f.tmKey, f.tmKeyVer = append([]byte(nil), d[:16]...), d[16]
		f.tmv = make([]byte, 8)
		f.tmri = make([]byte, 16)
		if c.sel.tmacFile() != nil {
			return fail(desfire.StatusDuplicateError)
		}
	}
	if c.sel.files[no] != nil {
		return fail(desfire.StatusDuplicateError)
	}
	if f.storage() > c.capacity-c.used || f.storage() < 0 {
		return fail(desfire.StatusOutOfMemory)
	}
	if f.typ == FileStandard || f.typ == FileBackup {
		f.data = make([]byte, f.size)
	}
	c.used += f.storage()
	c.sel.files[no] = f
	return c.okReply(x, nil)
}

// cmdDeleteFile: FileNo(1); drops pending changes to the file.
func (c *Card) cmdDeleteFile(x *call) result {
	f, st := c.fileOf(x.d[0])
	if st != desfire.StatusOK {
		return fail(st)
	}
	c.used -= f.storage()
	delete(c.sel.files, f.no)
	if c.txn != nil {
		delete(c.txn.files, f.no)
	}
	return c.okReply(x, nil)
}

// settingsMode: new file settings travel enciphered unless the change
// right is free.
func settingsMode(f *file) desfire.CommMode {
	if f.change() != accessFree {
		return desfire.CommFull
	}
	return desfire.CommPlain
}

// cmdChangeFileSettings: FileNo(1) ‖ FileOption ‖ Access(2) [‖
// NrAddARs(1) ‖ AddARs(2×n) when FileOption bit 7: EV2 multiple access
// condition sets, up to 7 more], enciphered unless the Change right is
// free.
func (c *Card) cmdChangeFileSettings(x *call) result {
	d, f := x.d, x.f
	var add []uint16
	if d[0]&0x80 != 0 {
		if len(d) < 4 || d[3] < 1 || d[3] > 7 || len(d) != 4+2*int(d[3]) || f.typ == FileTMAC {
			return fail(desfire.StatusLengthError)
		}
		if c.sess == nil || c.sess.kind != kindEV2 {
			return fail(desfire.StatusPermissionDenied)
		}
		for i := 0; i < int(d[3]); i++ {
			add = append(add, uint16(d[4+2*i])|uint16(d[5+2*i])<<8)
		}
	} else if len(d) != 3 {
		return fail(desfire.StatusLengthError)
	}
	comm := desfire.CommMode(d[0] & 0x7F)
	if comm != desfire.CommPlain && comm != desfire.CommMAC && comm != desfire.CommFull {
		return fail(desfire.StatusParameterError)
	}
	f.comm, f.access, f.addAccess = comm, uint16(d[1])|uint16(d[2])<<8, add
	return c.okReply(x, nil)
}

// --- data commands ---

// cmdReadData: FileNo ‖ Offset(3) ‖ Length(3) (0: to the end); the
// Transaction MAC file reads as TMC(4) ‖ TMV(8).
func (c *Card) cmdReadData(x *call) result {
	f, h := x.f, x.h
	img := f.data
	if f.typ == FileTMAC {
		img = binary.LittleEndian.AppendUint32(nil, f.tmc)
		img = append(img, f.tmv...)
	}
	off, n := le24(h[1:4]), le24(h[4:7])
	if off >= len(img) || off+n > len(img) {
		return fail(desfire.StatusBoundaryError)
	}
	if n == 0 {
		n = len(img) - off
	}
	out := append([]byte(nil), img[off:off+n]...)
	if f.typ != FileTMAC {
		c.feedTMI(x.code, h, nil, out, 0)
	}
	return c.okReply(x, out)
}

// writeTarget parses the first frame of WriteData/WriteRecord: the file,
// its protection and the total payload length the card must receive.
func (c *Card) writeTarget(code byte, p []byte) (f *file, mode desfire.CommMode, need int, st byte) {
	if len(p) < 7 {
		return nil, 0, 0, desfire.StatusLengthError
	}
	f, st = c.fileOf(p[0])
	if st != desfire.StatusOK {
		return nil, 0, 0, st
	}
	switch {
	case code == cmdWriteData && (f.typ == FileStandard || f.typ == FileBackup):
	case code == cmdWriteRecord && (f.typ == FileLinear || f.typ == FileCyclic):
	default:
		return nil, 0, 0, desfire.StatusParameterError
	}
	mode, st = c.fileMode(f, f.rights(kWrite, kRW)...)
	if st != desfire.StatusOK {
		return nil, 0, 0, st
	}
	off, n := le24(p[1:4]), le24(p[4:7])
	limit := f.size
	if code == cmdWriteRecord {
		limit = f.recSize
	}
	if n == 0 {
		return nil, 0, 0, desfire.StatusLengthError
	}
	if off >= limit || off+n > limit {
		return nil, 0, 0, desfire.StatusBoundaryError
	}
	return f, mode, 7 + c.protectedLen(n, mode), desfire.StatusOK
}

// chainNeed is the total payload a command needs before it can run
// (more than the first frame only for WriteData and WriteRecord, whose
// header gives the length: the card asks for the rest with 91AF whatever
// the size of the first frame).
func (c *Card) chainNeed(code byte, p []byte) (int, byte) {
	if code != cmdWriteData && code != cmdWriteRecord || len(p) < 7 {
		return len(p), desfire.StatusOK
	}
	_, _, need, st := c.writeTarget(code, p)
	if st != desfire.StatusOK {
		return 0, st
	}
	if len(p) > need {
		return 0, desfire.StatusLengthError
	}
	return need, desfire.StatusOK
}

// writeAccess: the first frame of WriteData/WriteRecord names a file of
// the right type the session may write, and the whole payload arrived.
func writeAccess(c *Card, x *call) byte {
	f, mode, need, st := c.writeTarget(x.code, x.p)
	if st != desfire.StatusOK {
		return st
	}
	if len(x.p) != need {
		return desfire.StatusLengthError
	}
	x.f, x.mode = f, mode
	return desfire.StatusOK
}

// cmdWrite is WriteData and WriteRecord: FileNo ‖ Offset(3) ‖ Length(3)
// ‖ data; backup and record files change in the transaction's image.
func (c *Card) cmdWrite(x *call) result {
	f, h, d := x.f, x.h, x.d
	off := le24(h[1:4])
	switch f.typ {
	case FileStandard:
		copy(f.data[off:], d)
	case FileBackup:
		copy(c.work(f).data[off:], d)
	default:
		if w := c.peekWork(f); w != nil && w.cleared {
			return fail(desfire.StatusPermissionDenied)
		}
		w := c.work(f)
		if w.newRec == nil {
			held := len(f.records)
			if f.typ == FileLinear && held >= f.maxRecs {
				return fail(desfire.StatusBoundaryError)
			}
			w.newRec = make([]byte, f.recSize)
		}
		copy(w.newRec[off:], d)
	}
	c.feedTMI(x.code, h, d, nil, 0)
	return c.okReply(x, nil)
}

// cmdGetValue: FileNo(1); answers the committed value (LE32).
func (c *Card) cmdGetValue(x *call) result {
	out := binary.LittleEndian.AppendUint32(nil, uint32(x.f.value))
	c.feedTMI(x.code, x.h, nil, out, 0)
	return c.okReply(x, out)
}

// cmdValueOp is Credit, Debit and LimitedCredit: FileNo ‖ Value(4).
func (c *Card) cmdValueOp(x *call) result {
	code, f, d := x.code, x.f, x.d
	v := int64(le32(d))
	if v < 0 {
		return fail(desfire.StatusParameterError)
	}
	if code == cmdLimitedCredit && f.lcFlags&0x01 == 0 {
		return fail(desfire.StatusPermissionDenied)
	}
	w := c.work(f)
	switch code {
	case cmdCredit:
		if w.value+v > int64(f.upper) {
			return fail(desfire.StatusBoundaryError)
		}
		w.value += v
		w.credit = true
	case cmdDebit:
		if w.value-v < int64(f.lower) {
			return fail(desfire.StatusBoundaryError)
		}
		w.value -= v
		w.debited += v
	default:
		if w.lc || v > int64(f.lcValue) || w.value+v > int64(f.upper) {
			return fail(desfire.StatusBoundaryError)
		}
		w.value += v
		w.lc = true
	}
	c.feedTMI(code, x.h, d, nil, 0)
	return c.okReply(x, nil)
}

// cmdReadRecords: RecNo counts back from the newest record (0), RecCount 0
// reads to the oldest; records are returned oldest first (chronological
// order, as the DESFire EV1 command description states).
func (c *Card) cmdReadRecords(x *call) result {
	f, h := x.f, x.h
	n := len(f.records)
	recNo, cnt := le24(h[1:4]), le24(h[4:7])
	if recNo >= n {
		return fail(desfire.StatusBoundaryError)
	}
	if cnt == 0 {
		cnt = n - recNo
	}
	if recNo+cnt > n {
		return fail(desfire.StatusBoundaryError)
	}
	var out []byte
	for _, r := range f.records[n-recNo-cnt : n-recNo] {
		out = append(out, r...)
	}
	c.feedTMI(x.code, h, nil, out, f.recSize)
	return c.okReply(x, out)
}

// cmdClearRecordFile: FileNo(1); clears the records at commit.
func (c *Card) cmdClearRecordFile(x *call) result {
	if w := c.peekWork(x.f); w != nil && w.newRec != nil {
		return fail(desfire.StatusPermissionDenied)
	}
	c.work(x.f).cleared = true
	c.feedTMI(x.code, x.h, nil, nil, 0)
	return c.okReply(x, nil)
}

// --- transactions ---

// cmdCommitTransaction: [Option(1), bit 0: answer TMC ‖ TMV].
func (c *Card) cmdCommitTransaction(x *call) result {
	d := x.d
	tf := c.sel.tmacFile()
	withTM := len(d) == 1 && d[0]&0x01 != 0
	if len(d) == 1 && (d[0]&^0x01 != 0 || withTM && tf == nil) {
		return fail(desfire.StatusParameterError)
	}
	if c.txn == nil && !withTM && !c.noChgOK {
		return c.noChanges()
	}
	if c.txn != nil && c.txn.tm != nil && !c.txn.tm.Empty() && c.txn.tmri == nil && readerIDRequired(tf) {
		// The Transaction MAC file requires a reader ID in every
		// transaction: without CommitReaderID nothing is committed.
		c.discardTxn()
		return fail(desfire.StatusPermissionDenied)
	}
	c.commit()
	var out []byte
	if withTM {
		out = desfire.CommitTransactionTMAC(tf.tmc, tf.tmv)
	}
	res := c.okReply(x, out)
	res.tear = true
	return res
}

// commit makes the working images durable and runs the Transaction MAC.
func (c *Card) commit() {
	t := c.txn
	c.txn = nil
	if t == nil {
		return
	}
	for no, w := range t.files {
		f := c.sel.files[no]
		if f == nil {
			continue
		}
		switch f.typ {
		case FileBackup:
			copy(f.data, w.data)
		case FileValue:
			f.value = int32(w.value)
			switch {
			case w.lc || w.credit:
				f.lcValue = 0
			case w.debited > 0:
				f.lcValue = int32(min(w.debited, int64(f.upper)-int64(f.lower)))
			}
		case FileLinear, FileCyclic:
			if w.cleared {
				f.records = nil
			}
			if w.newRec != nil {
				f.records = append(f.records, w.newRec)
				keep := f.maxRecs
				if f.typ == FileCyclic {
					keep = f.maxRecs - 1
				}
				if len(f.records) > keep {
					f.records = append([][]byte(nil), f.records[len(f.records)-keep:]...)
				}
			}
		}
	}
	if tf := c.sel.tmacFile(); tf != nil && t.tm != nil && !t.tm.Empty() {
		tf.tmc++
		tf.tmv = t.tm.Compute(tf.tmc)
		if t.tmri != nil {
			tf.tmri = t.tmri
		}
	}
}

// cmdAbortTransaction discards the transaction's images.
func (c *Card) cmdAbortTransaction(x *call) result {
	if c.txn == nil && !c.noChgOK {
		return c.noChanges()
	}
	c.discardTxn()
	return c.okReply(x, nil)
}

// noChanges answers 0C NO_CHANGES ("CommitTransaction / AbortTransaction
// not necessary"): a success-class status that keeps the session; its
// answer MAC covers status 0C.
func (c *Card) noChanges() result {
	return result{status: desfire.StatusNoChanges, data: c.sealStatus(desfire.StatusNoChanges, nil, c.mgmtMode())}
}

// readerIDAccess: the application has a Transaction MAC file whose
// ReadWrite access right (AppCommitReaderIDKey, MF2DLHX0 section 8.2.3.6)
// enables CommitReaderID — a key number: enabled for a session
// authenticated with that key; E: enabled with free access; F: disabled —
// and the session meets it.
func readerIDAccess(c *Card, _ *call) byte {
	tf := c.sel.tmacFile()
	if tf == nil {
		return desfire.StatusPermissionDenied
	}
	rights := tf.rights(kRW)
	if slicesAll(rights, accessNever) {
		return desfire.StatusPermissionDenied
	}
	_, st := c.fileMode(tf, rights...)
	return st
}

// slicesAll reports whether every element of b is v.
func slicesAll(b []byte, v byte) bool {
	for _, x := range b {
		if x != v {
			return false
		}
	}
	return true
}

// readerIDRequired: the Transaction MAC file names a key for
// CommitReaderID, so every transaction must commit a reader ID under it
// before CommitTransaction.
func readerIDRequired(tf *file) bool {
	if tf == nil {
		return false
	}
	for _, k := range tf.rights(kRW) {
		if k < accessFree {
			return true
		}
	}
	return false
}

// cmdCommitReaderID: TMRI(16); the answer is EncTMRI = E(SesTMENCKey,
// TMRIPrev) when authenticated, nothing otherwise. Allowed by the
// ReadWrite right (AppCommitReaderIDKey) of the Transaction MAC file, once
// per transaction.
func (c *Card) cmdCommitReaderID(x *call) result {
	d := x.d
	if c.txn != nil && c.txn.tmri != nil {
		return fail(desfire.StatusPermissionDenied)
	}
	tf := c.sel.tmacFile()
	var enc []byte
	if c.sess != nil {
		tm, err := desfire.NewTransactionMAC(tf.tmKey, c.uid)
		if err != nil {
			return fail(desfire.StatusMemoryError)
		}
		if enc, err = tm.EncryptReaderID(tf.tmc+1, tf.tmri); err != nil {
			return fail(desfire.StatusMemoryError)
		}
	}
	c.feedTMI(x.code, nil, d, enc, 0)
	c.txn.tmri = append([]byte(nil), d...)
	return c.okReply(x, enc)
}
