package simcard

import (
	"github.com/desfire-relay/relay/desfire"
)

// Native command codes the card understands (DESFire EV1 command set as
// published in libfreefare and proxmark3; DESFire Light MF2DLHX0 and NTAG
// 424 DNA NT4H2421Gx data sheets for the EV2 ones).
const (
	cmdAuthAES            = 0xAA // KeyNo
	cmdAuthEV2First       = 0x71 // KeyNo | LenCap | PCDcap2(LenCap)
	cmdAuthEV2NonFirst    = 0x77 // KeyNo
	cmdSelectApplication  = 0x5A // AID(3)
	cmdGetVersion         = 0x60 // — ; 7, 7, 14 bytes in three frames
	cmdGetCardUID         = 0x51 // — ; UID(7), Full
	cmdGetKeyVersion      = 0x64 // KeyNo ; KeyVer
	cmdGetApplicationIDs  = 0x6A // — ; AID(3)×n
	cmdGetFileIDs         = 0x6F // — ; FileNo×n
	cmdGetFileSettings    = 0xF5 // FileNo ; settings
	cmdGetKeySettings     = 0x45 // — ; KeySett1 | KeySett2
	cmdFormatPICC         = 0xFC // —
	cmdCreateApplication  = 0xCA // AID(3) | KS1 | KS2 [| ISOFID(2) | DFName]
	cmdDeleteApplication  = 0xDA // AID(3)
	cmdChangeKey          = 0xC4 // KeyNo | cryptogram (Full)
	cmdChangeKeySettings  = 0x54 // KS1 (Full)
	cmdCreateStdDataFile  = 0xCD // FileNo | Comm | Access(2) | Size(3)
	cmdCreateBackupFile   = 0xCB // FileNo | Comm | Access(2) | Size(3)
	cmdCreateValueFile    = 0xCC // FileNo | Comm | Access(2) | Lower(4) | Upper(4) | Value(4) | LC(1)
	cmdCreateLinearRecord = 0xC1 // FileNo | Comm | Access(2) | RecSize(3) | MaxRecs(3)
	cmdCreateCyclicRecord = 0xC0 // FileNo | Comm | Access(2) | RecSize(3) | MaxRecs(3)
	cmdCreateTMACFile     = 0xCE // FileNo | Comm | Access(2) | KeyOpt ‖ TMKey(16) | TMKeyVer (Full)
	cmdDeleteFile         = 0xDF // FileNo
	cmdChangeFileSettings = 0x5F // FileNo ‖ Comm | Access(2) (Full unless Change is free)
	cmdGetValue           = 0x6C // FileNo ; Value(4)
	cmdCredit             = 0x0C // FileNo | Value(4)
	cmdDebit              = 0xDC // FileNo | Value(4)
	cmdLimitedCredit      = 0x1C // FileNo | Value(4)
	cmdReadData           = 0xBD // FileNo | Offset(3) | Length(3)
	cmdWriteData          = 0x3D // FileNo | Offset(3) | Length(3) | Data
	cmdReadRecords        = 0xBB // FileNo | RecNo(3) | RecCount(3)
	cmdWriteRecord        = 0x3B // FileNo | Offset(3) | Length(3) | Data
	cmdClearRecordFile    = 0xEB // FileNo
	cmdCommitTransaction  = 0xC7 // [Option] ; option 01: TMC(4) | TMV(8)
	cmdAbortTransaction   = 0xA7 // —
	cmdCommitReaderID     = 0xC8 // TMRI(16) ; EncTMRI(16) when authenticated
)

// File types as GetFileSettings reports them.
const (
	FileStandard = 0x00
	FileBackup   = 0x01
	FileValue    = 0x02
	FileLinear   = 0x03
	FileCyclic   = 0x04
	FileTMAC     = 0x05
)

// Access right nibbles.
const (
	accessFree  = 0x0E
	accessNever = 0x0F
)

type key struct {
	value   [16]byte
	version byte
}

// app is an application or the PICC level (AID 000000).
type app struct {
	aid    [3]byte
	ks1    byte
	ks2    byte
	keys   []key
	files  map[byte]*file
	isoFID []byte
	dfName []byte
}

func newApp(aid [3]byte, ks1, ks2 byte) *app {
	n := int(ks2 & 0x0F)
	return &app{aid: aid, ks1: ks1, ks2: ks2, keys: make([]key, n), files: map[byte]*file{}}
}

func (a *app) isPICC() bool { return a.aid == [3]byte{} }

// tmacFile returns the application's Transaction MAC file, or nil.
func (a *app) tmacFile() *file {
	for _, f := range a.files {
		if f.typ == FileTMAC {
			return f
		}
	}
	return nil
}

// file is one file's committed (durable) image.
type file struct {
	no     byte
	typ    byte
	comm   desfire.CommMode
	access uint16 // Read<<12 | Write<<8 | ReadWrite<<4 | Change
	// addAccess are the additional access condition sets (EV2, set by
	// ChangeFileSettings with FileOption bit 7), same layout.
	addAccess []uint16

	size int    // data files
	data []byte // data files: committed image

	lower, upper, value int32 // value files
	lcFlags             byte
	lcValue             int32 // limited credit available

	recSize, maxRecs int      // record files
	records          [][]byte // oldest first

	tmKey    []byte // Transaction MAC file
	tmKeyVer byte
	tmc      uint32
	tmv      []byte
	tmri     []byte // TMRI of the last committed transaction
}

// Access kinds of an access condition set, for rights.
const (
	kRead = iota
	kWrite
	kRW
	kChange
)

// rights returns the keys (or E/F) that grant any of kinds, from the
// primary access condition set and every additional one (EV2 multiple
// access condition sets, NXP AN12113 section 3.1).
func (f *file) rights(kinds ...int) []byte {
	sets := append([]uint16{f.access}, f.addAccess...)
	var out []byte
	for _, a := range sets {
		for _, k := range kinds {
			out = append(out, byte(a>>(12-4*k)&0xF))
		}
	}
	return out
}

func (f *file) change() byte { return byte(f.access & 0xF) }

// storage is the number of bytes the file takes from Capacity.
func (f *file) storage() int {
	switch f.typ {
	case FileStandard:
		return f.size
	case FileBackup:
		return 2 * f.size
	case FileLinear, FileCyclic:
		return f.recSize * f.maxRecs
	}
	return 32
}

// work is one file's working image inside a transaction.
type work struct {
	data    []byte // backup data file
	value   int64  // value file
	debited int64
	credit  bool
	lc      bool
	cleared bool   // record file: ClearRecordFile
	newRec  []byte // record file: record being written
}

// txn is the open transaction of the selected application.
type txn struct {
	files map[byte]*work
	tm    *desfire.TransactionMAC
	tmri  []byte // CommitReaderID of this transaction
}

// discardTxn drops every uncommitted change (abort, selection, new
// authentication, tear).
func (c *Card) discardTxn() { c.txn = nil }

// work returns (creating) the working image of f.
func (c *Card) work(f *file) *work {
	if c.txn == nil {
		c.txn = &txn{files: map[byte]*work{}}
	}
	w := c.txn.files[f.no]
	if w == nil {
		w = &work{}
		switch f.typ {
		case FileBackup:
			w.data = append([]byte(nil), f.data...)
		case FileValue:
			w.value = int64(f.value)
		}
		c.txn.files[f.no] = w
	}
	return w
}

// peekWork returns the working image of f without creating one.
func (c *Card) peekWork(f *file) *work {
	if c.txn == nil {
		return nil
	}
	return c.txn.files[f.no]
}

// feedTMI adds a successful command to the Transaction MAC input when the
// selected application has a Transaction MAC file.
func (c *Card) feedTMI(code byte, header, data, resp []byte, recSize int) {
	tf := c.sel.tmacFile()
	if tf == nil {
		return
	}
	if c.txn == nil {
		c.txn = &txn{files: map[byte]*work{}}
	}
	if c.txn.tm == nil {
		tm, err := desfire.NewTransactionMAC(tf.tmKey, c.uid)
		if err != nil {
			return
		}
		c.txn.tm = tm
	}
	_ = c.txn.tm.AddRecords(code, header, data, resp, recSize)
}

// Generation is a DESFire card generation.
type Generation uint8

// Generations the simulated card can play.
const (
	GenEV1 Generation = iota + 1
	GenEV2
	GenEV3
)

// ev2Only lists the native commands EV2 introduced; an EV1 card answers
// them with ILLEGAL_COMMAND.
var ev2Only = map[byte]bool{
	cmdAuthEV2First:    true,
	cmdAuthEV2NonFirst: true,
	cmdCreateTMACFile:  true,
	cmdCommitReaderID:  true,
}
