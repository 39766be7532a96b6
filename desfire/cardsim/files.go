package cardsim

import (
	"encoding/binary"

	"github.com/desfire-relay/relay/desfire"
)

// appCommand handles commands inside a selected application.
func (c *Card) appCommand(code byte, body []byte) (byte, []byte) {
	a := c.cur
	switch code {
	case desfire.CmdGetKeySettings:
		return c.getKeySettings(a, code, body)
	case desfire.CmdChangeKey:
		return c.changeKey(a, code, body)
	case desfire.CmdGetFileIDs:
		if _, st := c.unwrap(code, body, 0, c.authMode(), 0, 0); st != ok {
			return st, nil
		}
		var ids []byte
		for no := range a.files {
			ids = append(ids, no)
		}
		return ok, c.wrap(ids, c.authMode())
	case desfire.CmdCreateStdDataFile, desfire.CmdCreateBackupDataFile, desfire.CmdCreateValueFile,
		desfire.CmdCreateLinearRecordFile, desfire.CmdCreateCyclicRecordFile, desfire.CmdCreateTransactionMACFile:
		return c.createFile(a, code, body)
	case desfire.CmdCommitTransaction:
		return c.commitTx(a, code, body)
	case desfire.CmdAbortTransaction:
		if _, st := c.unwrap(code, body, 0, c.authMode(), 0, 0); st != ok {
			return st, nil
		}
		a.abort()
		return ok, c.wrap(nil, c.authMode())
	case desfire.CmdGetValue, desfire.CmdCredit, desfire.CmdDebit, desfire.CmdLimitedCredit,
		desfire.CmdReadData, desfire.CmdWriteData, desfire.CmdReadRecords, desfire.CmdWriteRecord, desfire.CmdClearRecordFile:
		return c.fileCommand(a, code, body)
	}
	return desfire.StatusIllegalCommand, nil
}

func (c *Card) createFile(a *app, code byte, body []byte) (byte, []byte) {
	hdr := map[byte]int{
		desfire.CmdCreateStdDataFile: 7, desfire.CmdCreateBackupDataFile: 7, desfire.CmdCreateValueFile: 17,
		desfire.CmdCreateLinearRecordFile: 10, desfire.CmdCreateCyclicRecordFile: 10, desfire.CmdCreateTransactionMACFile: 5,
	}[code]
	mode, dataLen := c.authMode(), 0
	if code == desfire.CmdCreateTransactionMACFile {
		mode, dataLen = desfire.CommFull, 17
	}
	x, st := c.unwrap(code, body, hdr, mode, dataLen, 0)
	if st != ok {
		return st, nil
	}
	if len(x.data) != dataLen {
		return desfire.StatusLengthError, nil
	}
	if st := c.needMaster(); st != ok && a.keySett1&0x04 == 0 {
		return st, nil
	}
	h := x.header
	no := h[0]
	if no > 31 {
		return desfire.StatusParameterError, nil
	}
	if _, dup := a.files[no]; dup {
		return desfire.StatusDuplicateError, nil
	}
	if len(a.files) >= MaxFiles {
		return desfire.StatusOutOfMemory, nil
	}
	comm := desfire.CommMode(h[1] & 0x03)
	if comm == 2 {
		return desfire.StatusParameterError, nil
	}
	f := &file{comm: comm, access: [2]byte{h[2], h[3]}, committed: &state{}}
	switch code {
	case desfire.CmdCreateStdDataFile, desfire.CmdCreateBackupDataFile:
		f.typ = fileStd
		if code == desfire.CmdCreateBackupDataFile {
			f.typ = fileBackup
		}
		f.size = u24(h[4:7])
		if f.size == 0 || f.size > MaxFileSize {
			return desfire.StatusParameterError, nil
		}
		f.committed.data = make([]byte, f.size)
	case desfire.CmdCreateValueFile:
		f.typ = fileValue
		f.lower = int32(binary.LittleEndian.Uint32(h[4:]))
		f.upper = int32(binary.LittleEndian.Uint32(h[8:]))
		v := int32(binary.LittleEndian.Uint32(h[12:]))
		f.limitedCredit = h[16]&1 != 0
		if f.lower > f.upper || v < f.lower || v > f.upper {
			return desfire.StatusBoundaryError, nil
		}
		f.committed.value = v
	case desfire.CmdCreateLinearRecordFile, desfire.CmdCreateCyclicRecordFile:
		f.typ = fileLinear
		if code == desfire.CmdCreateCyclicRecordFile {
			f.typ = fileCyclic
		}
		f.recSize, f.maxRecs = u24(h[4:7]), u24(h[7:10])
		if f.recSize == 0 || f.maxRecs == 0 || f.maxRecs > MaxRecords || f.recSize*f.maxRecs > MaxFileSize ||
			(f.typ == fileCyclic && f.maxRecs < 2) {
			return desfire.StatusParameterError, nil
		}
	case desfire.CmdCreateTransactionMACFile:
		if h[4] != 0x02 || a.tmacFile() != nil {
			return desfire.StatusParameterError, nil
		}
		f.typ = fileTMAC
		f.tmKey = append([]byte(nil), x.data[:16]...)
		f.tmKeyVer = x.data[16]
		f.tmv = make([]byte, 8)
		tm, err := desfire.NewTransactionMAC(f.tmKey, c.uid)
		if err != nil {
			return desfire.StatusParameterError, nil
		}
		a.tm = tm
	}
	a.files[no] = f
	return ok, c.wrap(nil, c.authMode())
}

// access decides whether the session may use file f for an operation that
// any of the given access conditions allows. It returns the comm mode
// that applies (plain when the right is free).
func (c *Card) access(f *file, rights ...byte) (desfire.CommMode, byte) {
	for _, r := range rights {
		if r == accFree {
			return desfire.CommPlain, ok
		}
	}
	if c.auth == nil {
		return 0, desfire.StatusAuthenticationError
	}
	for _, r := range rights {
		if r == c.auth.keyNo {
			return f.comm, ok
		}
	}
	return 0, desfire.StatusPermissionDenied
}

// fileCommand handles reads, writes and value operations.
func (c *Card) fileCommand(a *app, code byte, body []byte) (byte, []byte) {
	if len(body) < 1 {
		return desfire.StatusLengthError, nil
	}
	f, found := a.files[body[0]]
	if !found {
		return desfire.StatusFileNotFound, nil
	}
	var rights []byte
	switch code {
	case desfire.CmdGetValue, desfire.CmdDebit:
		rights = []byte{f.read(), f.write(), f.readWrite()}
	case desfire.CmdCredit, desfire.CmdClearRecordFile:
		rights = []byte{f.readWrite()}
	case desfire.CmdLimitedCredit, desfire.CmdWriteData, desfire.CmdWriteRecord:
		rights = []byte{f.write(), f.readWrite()}
	case desfire.CmdReadData, desfire.CmdReadRecords:
		rights = []byte{f.read(), f.readWrite()}
	}
	mode, st := c.access(f, rights...)
	if st != ok {
		return st, nil
	}
	cmdMode := mode // reads: MACed command, protected answer
	switch code {
	case desfire.CmdGetValue, desfire.CmdReadData, desfire.CmdReadRecords, desfire.CmdClearRecordFile:
		if mode == desfire.CommFull {
			cmdMode = desfire.CommMAC
		}
	}
	hdr := 1
	dataLen := 0
	switch code {
	case desfire.CmdCredit, desfire.CmdDebit, desfire.CmdLimitedCredit:
		dataLen = 4
	case desfire.CmdReadData, desfire.CmdReadRecords:
		hdr = 7
	case desfire.CmdWriteData, desfire.CmdWriteRecord:
		hdr = 7
		if len(body) < 7 {
			return desfire.StatusLengthError, nil
		}
		dataLen = u24(body[4:7])
	}
	x, st := c.unwrap(code, body, hdr, cmdMode, dataLen, 0)
	if st != ok {
		return st, nil
	}
	if len(x.data) != dataLen {
		return desfire.StatusLengthError, nil
	}
	resp, st := c.fileOp(a, f, x)
	if st != ok {
		return st, nil
	}
	if a.tm != nil {
		// The transaction input (DESFire Light data sheet rules, shared
		// with the host in desfire.TMIUpdate).
		_ = a.tm.AddRecords(x.code, x.header, x.data, resp, f.recSize)
	}
	return ok, c.wrap(resp, mode)
}

func (c *Card) fileOp(a *app, f *file, x in) ([]byte, byte) {
	no := x.header[0]
	switch x.code {
	case desfire.CmdGetValue:
		if f.typ != fileValue {
			return nil, desfire.StatusParameterError
		}
		v := f.committed.value
		if s, open := a.tx[no]; open {
			v = s.value
		}
		return binary.LittleEndian.AppendUint32(nil, uint32(v)), ok
	case desfire.CmdCredit, desfire.CmdDebit, desfire.CmdLimitedCredit:
		if f.typ != fileValue {
			return nil, desfire.StatusParameterError
		}
		amt := int32(binary.LittleEndian.Uint32(x.data))
		if amt < 0 {
			return nil, desfire.StatusParameterError
		}
		s := a.work(no, f)
		switch x.code {
		case desfire.CmdCredit:
			if int64(s.value)+int64(amt) > int64(f.upper) {
				return nil, desfire.StatusBoundaryError
			}
			s.value += amt
		case desfire.CmdDebit:
			if int64(s.value)-int64(amt) < int64(f.lower) {
				return nil, desfire.StatusBoundaryError
			}
			s.value -= amt
			s.debited += amt
		case desfire.CmdLimitedCredit:
			if !f.limitedCredit || amt > s.debited {
				return nil, desfire.StatusBoundaryError
			}
			s.value += amt
		}
		return nil, ok
	case desfire.CmdReadData:
		if f.typ != fileStd && f.typ != fileBackup {
			return nil, desfire.StatusParameterError
		}
		off, n := u24(x.header[1:4]), u24(x.header[4:7])
		data := f.committed.data
		if n == 0 {
			n = len(data) - off
		}
		if off > len(data) || n < 0 || off+n > len(data) {
			return nil, desfire.StatusBoundaryError
		}
		return append([]byte(nil), data[off:off+n]...), ok
	case desfire.CmdWriteData:
		if f.typ != fileStd && f.typ != fileBackup {
			return nil, desfire.StatusParameterError
		}
		off, n := u24(x.header[1:4]), len(x.data)
		if n == 0 || off+n > f.size {
			return nil, desfire.StatusBoundaryError
		}
		if f.typ == fileStd {
			copy(f.committed.data[off:], x.data)
		} else {
			copy(a.work(no, f).data[off:], x.data)
		}
		return nil, ok
	case desfire.CmdReadRecords:
		if f.typ != fileLinear && f.typ != fileCyclic {
			return nil, desfire.StatusParameterError
		}
		recs := f.committed.records
		from, cnt := u24(x.header[1:4]), u24(x.header[4:7])
		if from >= len(recs) {
			return nil, desfire.StatusBoundaryError
		}
		if cnt == 0 {
			cnt = len(recs) - from
		}
		if from+cnt > len(recs) {
			return nil, desfire.StatusBoundaryError
		}
		// Newest is record 0; the answer runs from the oldest requested
		// to the newest requested.
		var out []byte
		for i := from + cnt - 1; i >= from; i-- {
			out = append(out, recs[len(recs)-1-i]...)
		}
		return out, ok
	case desfire.CmdWriteRecord:
		if f.typ != fileLinear && f.typ != fileCyclic {
			return nil, desfire.StatusParameterError
		}
		off, n := u24(x.header[1:4]), len(x.data)
		if n == 0 || off+n > f.recSize {
			return nil, desfire.StatusBoundaryError
		}
		s := a.work(no, f)
		if f.typ == fileLinear && len(s.records) >= f.maxRecs && s.rec == nil {
			return nil, desfire.StatusBoundaryError
		}
		if s.rec == nil {
			s.rec = make([]byte, f.recSize)
		}
		copy(s.rec[off:], x.data)
		return nil, ok
	case desfire.CmdClearRecordFile:
		if f.typ != fileLinear && f.typ != fileCyclic {
			return nil, desfire.StatusParameterError
		}
		s := a.work(no, f)
		s.records, s.rec = nil, nil
		return nil, ok
	}
	return nil, desfire.StatusIllegalCommand
}

// commitTx commits; with option 01 and a Transaction MAC file the answer is
// TMC ‖ TMV.
func (c *Card) commitTx(a *app, code byte, body []byte) (byte, []byte) {
	// Option byte present? EV2 sessions append an 8-byte MAC.
	hdr := len(body)
	if c.auth != nil && c.auth.gen == genEV2 {
		hdr -= 8
	}
	if hdr < 0 || hdr > 1 {
		return desfire.StatusLengthError, nil
	}
	x, st := c.unwrap(code, body, hdr, c.authMode(), 0, 0)
	if st != ok || len(x.data) != 0 {
		return orLen(st), nil
	}
	withTMAC := hdr == 1 && x.header[0] == 0x01
	if hdr == 1 && x.header[0] > 1 {
		return desfire.StatusParameterError, nil
	}
	tf := a.tmacFile()
	if withTMAC && tf == nil {
		return desfire.StatusParameterError, nil
	}
	changed := a.commit()
	var resp []byte
	if tf != nil {
		if changed || !a.tm.Empty() {
			tf.tmc++
			tf.tmv = a.tm.Compute(tf.tmc)
		}
		a.tm.Reset()
		if withTMAC {
			resp = desfire.CommitTransactionTMAC(tf.tmc, tf.tmv)
		}
	}
	if c.tearAfterCommit {
		c.tearAfterCommit = false
		c.removed = true
		c.reset()
		return ok, nil
	}
	return ok, c.wrap(resp, c.authMode())
}
