package simcard

import (
	"encoding/binary"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/desfire/dfcrypto"
)

func le24(b []byte) int { return int(b[0]) | int(b[1])<<8 | int(b[2])<<16 }

func le32(b []byte) int32 { return int32(binary.LittleEndian.Uint32(b)) }

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

// openMgmt opens a management command: all parameters in the header.
func (c *Card) openMgmt(code byte, p []byte) ([]byte, byte) {
	_, d, st := c.open(code, p, cmdIn{mode: c.mgmtMode()})
	return d, st
}

func (c *Card) fileOf(no byte) (*file, byte) {
	f := c.sel.files[no]
	if f == nil {
		return nil, desfire.StatusFileNotFound
	}
	return f, desfire.StatusOK
}

// --- PICC and application level ---

func (c *Card) cmdSelectApplication(code byte, p []byte) result {
	c.sess = nil
	c.discardTxn()
	if len(p) != 3 {
		return fail(desfire.StatusLengthError)
	}
	aid := [3]byte{p[0], p[1], p[2]}
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
	versionHW = []byte{0x04, 0x01, 0x01, 0x33, 0x00, 0x18, 0x05}
	versionSW = []byte{0x04, 0x01, 0x01, 0x03, 0x00, 0x18, 0x05}
)

func (c *Card) cmdGetVersion(code byte, p []byte) result {
	d, st := c.openMgmt(code, p)
	if st != desfire.StatusOK {
		return fail(st)
	}
	if len(d) != 0 {
		return fail(desfire.StatusLengthError)
	}
	uid := c.uid
	if c.randomID {
		uid = make([]byte, 7)
	}
	data := append(append(append([]byte(nil), versionHW...), versionSW...), uid...)
	data = append(data, 0xBA, 0x7C, 0x40, 0x00, 0x00, 0x25, 0x24) // batch, week, year
	sealed := c.seal(data, c.mgmtMode())
	c.pend = pending{kind: pendChunks, chunks: [][]byte{sealed[7:14], sealed[14:]}}
	return result{status: desfire.StatusAdditionalFrame, data: sealed[:7]}
}

func (c *Card) cmdGetCardUID(code byte, p []byte) result {
	if c.sess == nil {
		return fail(desfire.StatusAuthenticationError)
	}
	d, st := c.openMgmt(code, p)
	if st != desfire.StatusOK {
		return fail(st)
	}
	if len(d) != 0 {
		return fail(desfire.StatusLengthError)
	}
	return c.ok(append([]byte(nil), c.uid...), desfire.CommFull)
}

func (c *Card) cmdGetKeyVersion(code byte, p []byte) result {
	d, st := c.openMgmt(code, p)
	if st != desfire.StatusOK {
		return fail(st)
	}
	if len(d) != 1 {
		return fail(desfire.StatusLengthError)
	}
	k := int(d[0])
	if c.sel.isPICC() {
		k = int(d[0] & 0x3F)
	}
	if k >= len(c.sel.keys) {
		return fail(desfire.StatusNoSuchKey)
	}
	return c.ok([]byte{c.sel.keys[k].version}, c.mgmtMode())
}

func (c *Card) cmdGetKeySettings(code byte, p []byte) result {
	d, st := c.openMgmt(code, p)
	if st != desfire.StatusOK {
		return fail(st)
	}
	if len(d) != 0 {
		return fail(desfire.StatusLengthError)
	}
	return c.ok([]byte{c.sel.ks1, c.sel.ks2}, c.mgmtMode())
}

func (c *Card) cmdGetApplicationIDs(code byte, p []byte) result {
	if !c.sel.isPICC() {
		return fail(desfire.StatusIllegalCommand)
	}
	if c.sel.ks1&0x02 == 0 && !c.isKey(0) {
		return fail(desfire.StatusPermissionDenied)
	}
	d, st := c.openMgmt(code, p)
	if st != desfire.StatusOK {
		return fail(st)
	}
	if len(d) != 0 {
		return fail(desfire.StatusLengthError)
	}
	out := []byte{}
	for _, aid := range c.appOrder {
		out = append(out, aid[:]...)
	}
	return c.ok(out, c.mgmtMode())
}

func (c *Card) cmdFormatPICC(code byte, p []byte) result {
	if !c.sel.isPICC() {
		return fail(desfire.StatusIllegalCommand)
	}
	if !c.isKey(0) {
		return fail(desfire.StatusAuthenticationError)
	}
	d, st := c.openMgmt(code, p)
	if st != desfire.StatusOK {
		return fail(st)
	}
	if len(d) != 0 {
		return fail(desfire.StatusLengthError)
	}
	c.apps = map[[3]byte]*app{}
	c.appOrder = nil
	c.used = 0
	c.discardTxn()
	return c.ok(nil, c.mgmtMode())
}

func (c *Card) cmdCreateApplication(code byte, p []byte) result {
	if !c.sel.isPICC() {
		return fail(desfire.StatusIllegalCommand)
	}
	if c.sel.ks1&0x04 == 0 && !c.isKey(0) {
		if c.sess == nil {
			return fail(desfire.StatusAuthenticationError)
		}
		return fail(desfire.StatusPermissionDenied)
	}
	d, st := c.openMgmt(code, p)
	if st != desfire.StatusOK {
		return fail(st)
	}
	if len(d) < 5 {
		return fail(desfire.StatusLengthError)
	}
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
	return c.ok(nil, c.mgmtMode())
}

func (c *Card) cmdDeleteApplication(code byte, p []byte) result {
	if len(p) < 3 {
		return fail(desfire.StatusLengthError)
	}
	aid := [3]byte{p[0], p[1], p[2]}
	a := c.apps[aid]
	if a == nil {
		return fail(desfire.StatusApplicationNotFound)
	}
	// PICC master key, or the application's own master key when selected.
	if !(c.sel.isPICC() && c.isKey(0)) && !(c.sel == a && c.isKey(0)) {
		if c.sess == nil {
			return fail(desfire.StatusAuthenticationError)
		}
		return fail(desfire.StatusPermissionDenied)
	}
	d, st := c.openMgmt(code, p)
	if st != desfire.StatusOK {
		return fail(st)
	}
	if len(d) != 3 {
		return fail(desfire.StatusLengthError)
	}
	res := c.ok(nil, c.mgmtMode())
	for _, f := range a.files {
		c.used -= f.storage()
	}
	c.used -= 64
	delete(c.apps, aid)
	for i, x := range c.appOrder {
		if x == aid {
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

func (c *Card) cmdChangeKeySettings(code byte, p []byte) result {
	if !c.isKey(0) {
		if c.sess == nil {
			return fail(desfire.StatusAuthenticationError)
		}
		return fail(desfire.StatusPermissionDenied)
	}
	if c.sel.ks1&0x08 == 0 {
		return fail(desfire.StatusPermissionDenied)
	}
	_, d, st := c.open(code, p, cmdIn{mode: desfire.CommFull, ev1DataLen: 1})
	if st != desfire.StatusOK {
		return fail(st)
	}
	if len(d) != 1 {
		return fail(desfire.StatusLengthError)
	}
	c.sel.ks1 = d[0]
	return c.ok(nil, desfire.CommMAC)
}

// cmdChangeKey: KeyNo ‖ cryptogram. Same key: NewKey ‖ KeyVer; other key:
// (NewKey ⊕ OldKey) ‖ KeyVer ‖ CRC32(NewKey). EV1 puts CRC32(C4 ‖ KeyNo ‖
// those 17 bytes) after them and pads with zeros; EV2 pads with 80 00...
func (c *Card) cmdChangeKey(code byte, p []byte) result {
	if len(p) < 1 {
		return fail(desfire.StatusLengthError)
	}
	if c.sess == nil {
		return fail(desfire.StatusAuthenticationError)
	}
	keyNo := p[0]
	k := int(keyNo & 0x3F)
	if c.sel.isPICC() {
		if keyNo&0x3F != 0 || (keyNo&0xC0 != 0x80 && keyNo&0xC0 != 0) {
			return fail(desfire.StatusParameterError)
		}
	} else if keyNo&0xC0 != 0 {
		return fail(desfire.StatusParameterError)
	}
	if k >= len(c.sel.keys) {
		return fail(desfire.StatusNoSuchKey)
	}
	// Who may change key k (key settings bits 7-4 and bit 0).
	ck := c.sel.ks1 >> 4
	switch {
	case k == 0 || c.sel.isPICC():
		if !c.isKey(0) || c.sel.ks1&0x01 == 0 {
			return fail(desfire.StatusPermissionDenied)
		}
	case ck == 0x0F:
		return fail(desfire.StatusPermissionDenied)
	case ck == 0x0E:
		if !c.isKey(byte(k)) {
			return fail(desfire.StatusPermissionDenied)
		}
	default:
		if !c.isKey(ck) {
			return fail(desfire.StatusPermissionDenied)
		}
	}
	same := c.sess.keyNo == byte(k)
	_, d, st := c.open(code, p, cmdIn{hdr: 1, mode: desfire.CommFull, rawEV1: true})
	if st != desfire.StatusOK {
		return fail(st)
	}
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
		crc := dfcrypto.CRC32LE(append([]byte{code, keyNo}, d[:17]...))
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
	return c.ok(nil, desfire.CommMAC)
}

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

func (c *Card) cmdGetFileIDs(code byte, p []byte) result {
	if c.sel.isPICC() {
		return fail(desfire.StatusIllegalCommand)
	}
	if c.sel.ks1&0x02 == 0 && !c.isKey(0) {
		if c.sess == nil {
			return fail(desfire.StatusAuthenticationError)
		}
		return fail(desfire.StatusPermissionDenied)
	}
	d, st := c.openMgmt(code, p)
	if st != desfire.StatusOK {
		return fail(st)
	}
	if len(d) != 0 {
		return fail(desfire.StatusLengthError)
	}
	out := []byte{}
	for i := 0; i < MaxFiles; i++ {
		if c.sel.files[byte(i)] != nil {
			out = append(out, byte(i))
		}
	}
	return c.ok(out, c.mgmtMode())
}

func (c *Card) cmdGetFileSettings(code byte, p []byte) result {
	if c.sel.isPICC() {
		return fail(desfire.StatusIllegalCommand)
	}
	if c.sel.ks1&0x02 == 0 && !c.isKey(0) {
		if c.sess == nil {
			return fail(desfire.StatusAuthenticationError)
		}
		return fail(desfire.StatusPermissionDenied)
	}
	d, st := c.openMgmt(code, p)
	if st != desfire.StatusOK {
		return fail(st)
	}
	if len(d) != 1 {
		return fail(desfire.StatusLengthError)
	}
	f, st := c.fileOf(d[0])
	if st != desfire.StatusOK {
		return fail(st)
	}
	return c.ok(fileSettings(f), c.mgmtMode())
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

// createHeader is the length of the plain header of each create command.
var createHeader = map[byte]int{
	cmdCreateStdDataFile:  7,
	cmdCreateBackupFile:   7,
	cmdCreateValueFile:    17,
	cmdCreateLinearRecord: 10,
	cmdCreateCyclicRecord: 10,
	cmdCreateTMACFile:     5,
}

func (c *Card) cmdCreateFile(code byte, p []byte) result {
	if c.sel.isPICC() {
		return fail(desfire.StatusIllegalCommand)
	}
	if c.sel.ks1&0x04 == 0 && !c.isKey(0) {
		if c.sess == nil {
			return fail(desfire.StatusAuthenticationError)
		}
		return fail(desfire.StatusPermissionDenied)
	}
	hl := createHeader[code]
	var h, d []byte
	var st byte
	if code == cmdCreateTMACFile {
		if c.sess == nil {
			return fail(desfire.StatusAuthenticationError)
		}
		h, d, st = c.open(code, p, cmdIn{hdr: hl, mode: desfire.CommFull, ev1DataLen: 17})
		if st == desfire.StatusOK && len(d) != 17 {
			st = desfire.StatusLengthError
		}
	} else {
		var all []byte
		all, st = c.openMgmt(code, p)
		if st == desfire.StatusOK && len(all) != hl {
			st = desfire.StatusLengthError
		}
		h = all
	}
	if st != desfire.StatusOK {
		return fail(st)
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
	return c.ok(nil, c.mgmtMode())
}

func (c *Card) cmdDeleteFile(code byte, p []byte) result {
	if c.sel.isPICC() {
		return fail(desfire.StatusIllegalCommand)
	}
	if c.sel.ks1&0x04 == 0 && !c.isKey(0) {
		if c.sess == nil {
			return fail(desfire.StatusAuthenticationError)
		}
		return fail(desfire.StatusPermissionDenied)
	}
	d, st := c.openMgmt(code, p)
	if st != desfire.StatusOK {
		return fail(st)
	}
	if len(d) != 1 {
		return fail(desfire.StatusLengthError)
	}
	f, st := c.fileOf(d[0])
	if st != desfire.StatusOK {
		return fail(st)
	}
	c.used -= f.storage()
	delete(c.sel.files, f.no)
	if c.txn != nil {
		delete(c.txn.files, f.no)
	}
	return c.ok(nil, c.mgmtMode())
}

func (c *Card) cmdChangeFileSettings(code byte, p []byte) result {
	if c.sel.isPICC() {
		return fail(desfire.StatusIllegalCommand)
	}
	if len(p) < 1 {
		return fail(desfire.StatusLengthError)
	}
	f, st := c.fileOf(p[0])
	if st != desfire.StatusOK {
		return fail(st)
	}
	if _, st := c.fileMode(f, f.rights(kChange)...); st != desfire.StatusOK {
		return fail(st)
	}
	mode := desfire.CommPlain
	if f.change() != accessFree {
		mode = desfire.CommFull // the new settings travel enciphered
	}
	_, d, st := c.open(code, p, cmdIn{hdr: 1, mode: mode, ev1DataLen: 3})
	if st != desfire.StatusOK {
		return fail(st)
	}
	// FileOption ‖ AccessRights(2) [‖ NrAddARs(1) ‖ AddARs(2×n) when
	// FileOption bit 7: EV2 multiple access condition sets, up to 7 more].
	if len(d) < 3 {
		return fail(desfire.StatusLengthError)
	}
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
	return c.ok(nil, writeRespMode(mode))
}

// --- data commands ---

func (c *Card) cmdReadData(code byte, p []byte) result {
	if len(p) < 1 {
		return fail(desfire.StatusLengthError)
	}
	f, st := c.fileOf(p[0])
	if st != desfire.StatusOK {
		return fail(st)
	}
	if f.typ != FileStandard && f.typ != FileBackup && f.typ != FileTMAC {
		return fail(desfire.StatusParameterError)
	}
	mode, st := c.fileMode(f, f.rights(kRead, kRW)...)
	if st != desfire.StatusOK {
		return fail(st)
	}
	h, d, st := c.open(code, p, cmdIn{hdr: 7, mode: readCmdMode(mode)})
	if st != desfire.StatusOK {
		return fail(st)
	}
	if len(d) != 0 {
		return fail(desfire.StatusLengthError)
	}
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
		c.feedTMI(code, h, nil, out, 0)
	}
	return c.ok(out, mode)
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

func (c *Card) cmdWrite(code byte, p []byte) result {
	f, mode, need, st := c.writeTarget(code, p)
	if st != desfire.StatusOK {
		return fail(st)
	}
	if len(p) != need {
		return fail(desfire.StatusLengthError)
	}
	n := le24(p[4:7])
	h, d, st := c.open(code, p, cmdIn{hdr: 7, mode: mode, ev1DataLen: n, ev1MAC: true})
	if st != desfire.StatusOK {
		return fail(st)
	}
	if len(d) != n {
		return fail(desfire.StatusLengthError)
	}
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
	c.feedTMI(code, h, d, nil, 0)
	return c.ok(nil, writeRespMode(mode))
}

func (c *Card) cmdGetValue(code byte, p []byte) result {
	if len(p) < 1 {
		return fail(desfire.StatusLengthError)
	}
	f, st := c.fileOf(p[0])
	if st != desfire.StatusOK {
		return fail(st)
	}
	if f.typ != FileValue {
		return fail(desfire.StatusParameterError)
	}
	mode, st := c.fileMode(f, f.rights(kRead, kWrite, kRW)...)
	if st != desfire.StatusOK {
		return fail(st)
	}
	h, d, st := c.open(code, p, cmdIn{hdr: 1, mode: readCmdMode(mode)})
	if st != desfire.StatusOK {
		return fail(st)
	}
	if len(d) != 0 {
		return fail(desfire.StatusLengthError)
	}
	out := binary.LittleEndian.AppendUint32(nil, uint32(f.value))
	c.feedTMI(code, h, nil, out, 0)
	return c.ok(out, mode)
}

// cmdValueOp is Credit, Debit and LimitedCredit: FileNo ‖ Value(4).
func (c *Card) cmdValueOp(code byte, p []byte) result {
	if len(p) < 1 {
		return fail(desfire.StatusLengthError)
	}
	f, st := c.fileOf(p[0])
	if st != desfire.StatusOK {
		return fail(st)
	}
	if f.typ != FileValue {
		return fail(desfire.StatusParameterError)
	}
	var rights []byte
	switch code {
	case cmdCredit:
		rights = f.rights(kRW)
	case cmdDebit:
		rights = f.rights(kRead, kWrite, kRW)
	default:
		rights = f.rights(kWrite, kRW)
	}
	mode, st := c.fileMode(f, rights...)
	if st != desfire.StatusOK {
		return fail(st)
	}
	h, d, st := c.open(code, p, cmdIn{hdr: 1, mode: mode, ev1DataLen: 4, ev1MAC: true})
	if st != desfire.StatusOK {
		return fail(st)
	}
	if len(d) != 4 {
		return fail(desfire.StatusLengthError)
	}
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
	c.feedTMI(code, h, d, nil, 0)
	return c.ok(nil, writeRespMode(mode))
}

// cmdReadRecords: RecNo counts back from the newest record (0), RecCount 0
// reads to the oldest; records are returned oldest first (chronological
// order, as the DESFire EV1 command description states).
func (c *Card) cmdReadRecords(code byte, p []byte) result {
	if len(p) < 1 {
		return fail(desfire.StatusLengthError)
	}
	f, st := c.fileOf(p[0])
	if st != desfire.StatusOK {
		return fail(st)
	}
	if f.typ != FileLinear && f.typ != FileCyclic {
		return fail(desfire.StatusParameterError)
	}
	mode, st := c.fileMode(f, f.rights(kRead, kRW)...)
	if st != desfire.StatusOK {
		return fail(st)
	}
	h, d, st := c.open(code, p, cmdIn{hdr: 7, mode: readCmdMode(mode)})
	if st != desfire.StatusOK {
		return fail(st)
	}
	if len(d) != 0 {
		return fail(desfire.StatusLengthError)
	}
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
	c.feedTMI(code, h, nil, out, f.recSize)
	return c.ok(out, mode)
}

func (c *Card) cmdClearRecordFile(code byte, p []byte) result {
	if len(p) < 1 {
		return fail(desfire.StatusLengthError)
	}
	f, st := c.fileOf(p[0])
	if st != desfire.StatusOK {
		return fail(st)
	}
	if f.typ != FileLinear && f.typ != FileCyclic {
		return fail(desfire.StatusParameterError)
	}
	if _, st := c.fileMode(f, f.rights(kRW)...); st != desfire.StatusOK {
		return fail(st)
	}
	// No data travels: MACed like a management command when authenticated.
	mode := c.mgmtMode()
	h, d, st := c.open(code, p, cmdIn{hdr: 1, mode: mode})
	if st != desfire.StatusOK {
		return fail(st)
	}
	if len(d) != 0 {
		return fail(desfire.StatusLengthError)
	}
	if w := c.peekWork(f); w != nil && w.newRec != nil {
		return fail(desfire.StatusPermissionDenied)
	}
	c.work(f).cleared = true
	c.feedTMI(code, h, nil, nil, 0)
	return c.ok(nil, mode)
}

// --- transactions ---

func (c *Card) cmdCommitTransaction(code byte, p []byte) result {
	if c.sel.isPICC() {
		return fail(desfire.StatusIllegalCommand)
	}
	d, st := c.openMgmt(code, p)
	if st != desfire.StatusOK {
		return fail(st)
	}
	if len(d) > 1 {
		return fail(desfire.StatusLengthError)
	}
	tf := c.sel.tmacFile()
	withTM := len(d) == 1 && d[0]&0x01 != 0
	if len(d) == 1 && (d[0]&^0x01 != 0 || withTM && tf == nil) {
		return fail(desfire.StatusParameterError)
	}
	if c.txn == nil && !withTM && !c.noChgOK {
		return c.noChanges()
	}
	c.commit()
	var out []byte
	if withTM {
		out = desfire.CommitTransactionTMAC(tf.tmc, tf.tmv)
	}
	res := c.ok(out, c.mgmtMode())
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

func (c *Card) cmdAbortTransaction(code byte, p []byte) result {
	if c.sel.isPICC() {
		return fail(desfire.StatusIllegalCommand)
	}
	d, st := c.openMgmt(code, p)
	if st != desfire.StatusOK {
		return fail(st)
	}
	if len(d) != 0 {
		return fail(desfire.StatusLengthError)
	}
	if c.txn == nil && !c.noChgOK {
		return c.noChanges()
	}
	c.discardTxn()
	return c.ok(nil, c.mgmtMode())
}

// noChanges answers 0C NO_CHANGES ("CommitTransaction / AbortTransaction
// not necessary"): a success-class status that keeps the session; its
// answer MAC covers status 0C.
func (c *Card) noChanges() result {
	return result{status: desfire.StatusNoChanges, data: c.sealStatus(desfire.StatusNoChanges, nil, c.mgmtMode())}
}

// cmdCommitReaderID: TMRI(16); the answer is EncTMRI = E(SesTMENCKey,
// TMRIPrev) when authenticated, nothing otherwise. Allowed by the Write
// right of the Transaction MAC file, once per transaction.
func (c *Card) cmdCommitReaderID(code byte, p []byte) result {
	if c.sel.isPICC() {
		return fail(desfire.StatusIllegalCommand)
	}
	tf := c.sel.tmacFile()
	if tf == nil {
		return fail(desfire.StatusPermissionDenied)
	}
	if _, st := c.fileMode(tf, tf.rights(kWrite)...); st != desfire.StatusOK {
		return fail(st)
	}
	d, st := c.openMgmt(code, p)
	if st != desfire.StatusOK {
		return fail(st)
	}
	if len(d) != desfire.TMRISize {
		return fail(desfire.StatusLengthError)
	}
	if c.txn != nil && c.txn.tmri != nil {
		return fail(desfire.StatusPermissionDenied)
	}
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
	c.feedTMI(code, nil, d, enc, 0)
	c.txn.tmri = append([]byte(nil), d...)
	return c.ok(enc, c.mgmtMode())
}
