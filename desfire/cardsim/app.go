package cardsim

import (
	"github.com/desfire-relay/relay/desfire"
)

// File types (GetFileSettings numbering).
const (
	fileStd    = 0x00
	fileBackup = 0x01
	fileValue  = 0x02
	fileLinear = 0x03
	fileCyclic = 0x04
	fileTMAC   = 0x05
)

type key struct {
	value   [16]byte
	version byte
}

// app is an application (or the PICC level, AID 0).
type app struct {
	aid      uint32
	keySett1 byte
	keySett2 byte
	keys     []key
	files    map[byte]*file
	// tx is the open transaction's working state per file (nil: none).
	tx map[byte]*state
	// tm accumulates the transaction input for the Transaction MAC.
	tm *desfire.TransactionMAC
}

func newApp(aid uint32, ks1, ks2 byte) *app {
	n := int(ks2 & 0x0F)
	if n == 0 {
		n = 1
	}
	return &app{aid: aid, keySett1: ks1, keySett2: ks2, keys: make([]key, n), files: map[byte]*file{}}
}

// state is the mutable content of a file.
type state struct {
	data    []byte
	value   int32
	records [][]byte
	// pending record of a record file inside a transaction
	rec []byte
	// limited credit available after debits in this transaction
	debited int32
}

func (s *state) clone() *state {
	n := &state{data: append([]byte(nil), s.data...), value: s.value, debited: s.debited}
	n.records = append([][]byte(nil), s.records...)
	return n
}

type file struct {
	typ    byte
	comm   desfire.CommMode
	access [2]byte // as sent: RW<<4|Change, Read<<4|Write
	size   int
	// value files
	lower, upper  int32
	limitedCredit bool
	// record files
	recSize, maxRecs int
	// transaction MAC file
	tmKey    []byte
	tmKeyVer byte
	tmc      uint32
	tmv      []byte

	committed *state
}

func (f *file) read() byte      { return f.access[1] >> 4 }
func (f *file) write() byte     { return f.access[1] & 0x0F }
func (f *file) readWrite() byte { return f.access[0] >> 4 }

// work returns the file's state inside the open transaction, creating the
// working copy on first use.
func (a *app) work(no byte, f *file) *state {
	if a.tx == nil {
		a.tx = map[byte]*state{}
	}
	s, ok := a.tx[no]
	if !ok {
		s = f.committed.clone()
		a.tx[no] = s
	}
	return s
}

// abort discards the open transaction.
func (a *app) abort() {
	a.tx = nil
	if a.tm != nil {
		a.tm.Reset()
	}
}

// commit makes the working copies durable; it reports whether anything
// changed.
func (a *app) commit() bool {
	changed := len(a.tx) > 0
	for no, s := range a.tx {
		f := a.files[no]
		if s.rec != nil {
			f.appendRecord(s)
		}
		s.rec, s.debited = nil, 0
		f.committed = s
	}
	a.tx = nil
	return changed
}

func (f *file) appendRecord(s *state) {
	rec := s.rec
	if f.typ == fileCyclic && len(s.records) >= f.maxRecs-1 {
		s.records = append([][]byte(nil), s.records[1:]...)
	}
	s.records = append(s.records, rec)
}

func (a *app) tmacFile() *file {
	for _, f := range a.files {
		if f.typ == fileTMAC {
			return f
		}
	}
	return nil
}
