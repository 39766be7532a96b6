package simtag

import (
	"encoding/binary"
	"io"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/desfire/dfcrypto"
	"github.com/desfire-relay/relay/desfire/ntag424"
)

const macLen = 8

// native runs one native command (NT4H2421Gx section 10).
func (t *Tag) native(code byte, p []byte) (byte, []byte) {
	if code == desfire.CmdAdditionalFrame {
		a := t.auth
		t.auth = nil
		if a == nil {
			return desfire.StatusIllegalCommand, nil
		}
		return t.authPart2(a, p)
	}
	t.auth = nil
	switch code {
	case cmdAuthFirst:
		return t.authFirst(p)
	case cmdAuthNonFirst:
		return desfire.StatusIllegalCommand, nil
	case cmdGetKeyVersion:
		return t.getKeyVersion(p)
	case cmdGetCardUID:
		return t.getCardUID(p)
	case cmdGetFileSettings:
		return t.getFileSettings(p)
	case cmdChangeFileSett:
		return t.changeFileSettings(p)
	case cmdChangeKey:
		return t.changeKey(p)
	case ntag424.CmdReadData:
		return t.readData(p)
	case ntag424.CmdWriteData:
		return t.writeData(p)
	case ntag424.CmdSetConfiguration:
		return t.setConfiguration(p)
	}
	return desfire.StatusIllegalCommand, nil
}

func (t *Tag) authFirst(p []byte) (byte, []byte) {
	t.sess = nil
	if len(p) < 2 || int(p[1]) > 6 || len(p) != 2+int(p[1]) {
		return desfire.StatusLengthError, nil
	}
	if p[0] >= ntag424.NumKeys {
		return desfire.StatusNoSuchKey, nil
	}
	rndB := make([]byte, 16)
	if _, err := io.ReadFull(t.rnd, rndB); err != nil {
		return desfire.StatusMemoryError, nil
	}
	enc, err := dfcrypto.EncryptCBC(t.keys[p[0]].value[:], make([]byte, 16), rndB)
	if err != nil {
		return desfire.StatusMemoryError, nil
	}
	t.auth = &pendingAuth{keyNo: p[0], rndB: rndB}
	return desfire.StatusAdditionalFrame, enc
}

func (t *Tag) authPart2(a *pendingAuth, p []byte) (byte, []byte) {
	if len(p) != 32 {
		return desfire.StatusLengthError, nil
	}
	k := t.keys[a.keyNo].value[:]
	pt, err := dfcrypto.DecryptCBC(k, make([]byte, 16), p)
	if err != nil {
		return desfire.StatusAuthenticationError, nil
	}
	rndA := pt[:16]
	if !dfcrypto.Equal(pt[16:], dfcrypto.RotL(a.rndB)) {
		return desfire.StatusAuthenticationError, nil
	}
	ti := make([]byte, 4)
	if _, err := io.ReadFull(t.rnd, ti); err != nil {
		return desfire.StatusMemoryError, nil
	}
	resp := append(append(append([]byte(nil), ti...), dfcrypto.RotL(rndA)...), make([]byte, 12)...)
	out, err := dfcrypto.EncryptCBC(k, make([]byte, 16), resp)
	if err != nil {
		return desfire.StatusMemoryError, nil
	}
	enc, mac, err := desfire.EV2SessionKeys(k, rndA, a.rndB)
	if err != nil {
		return desfire.StatusMemoryError, nil
	}
	t.sess = &session{keyNo: a.keyNo, enc: enc, mac: mac, ti: ti}
	return desfire.StatusOK, out
}

// open checks a command under the session: header is the first hdr bytes
// of p; in MAC and Full mode the last 8 bytes are the MAC, in Full mode
// the data is enciphered. Without a session the command must be plain.
func (t *Tag) open(code byte, p []byte, hdr int, mode desfire.CommMode) (header, data []byte, st byte) {
	if len(p) < hdr {
		return nil, nil, desfire.StatusLengthError
	}
	s := t.sess
	if s == nil || mode == desfire.CommPlain {
		return p[:hdr], p[hdr:], desfire.StatusOK
	}
	if len(p) < hdr+macLen {
		return nil, nil, desfire.StatusLengthError
	}
	header, body, mac := p[:hdr], p[hdr:len(p)-macLen], p[len(p)-macLen:]
	want, err := desfire.EV2CommandMAC(s.mac, code, s.ctr, s.ti, header, body)
	if err != nil || !dfcrypto.Equal(want, mac) {
		return nil, nil, desfire.StatusIntegrityError
	}
	if mode != desfire.CommFull || len(body) == 0 {
		return header, body, desfire.StatusOK
	}
	if len(body)%16 != 0 {
		return nil, nil, desfire.StatusLengthError
	}
	iv, err := desfire.EV2CommandIV(s.enc, s.ti, s.ctr)
	if err != nil {
		return nil, nil, desfire.StatusIntegrityError
	}
	pt, err := dfcrypto.DecryptCBC(s.enc, iv, body)
	if err != nil {
		return nil, nil, desfire.StatusIntegrityError
	}
	if data, err = dfcrypto.Unpad80(pt); err != nil {
		return nil, nil, desfire.StatusIntegrityError
	}
	return header, data, desfire.StatusOK
}

// ok answers a successful command under the session in mode and advances
// the command counter.
func (t *Tag) ok(data []byte, mode desfire.CommMode) (byte, []byte) {
	s := t.sess
	if s == nil {
		return desfire.StatusOK, data
	}
	ctr := s.ctr
	s.ctr++
	if mode == desfire.CommPlain {
		return desfire.StatusOK, data
	}
	body := data
	if mode == desfire.CommFull && len(data) > 0 {
		iv, err := desfire.EV2ResponseIV(s.enc, s.ti, ctr)
		if err != nil {
			return desfire.StatusMemoryError, nil
		}
		if body, err = dfcrypto.EncryptCBC(s.enc, iv, dfcrypto.Pad80(data)); err != nil {
			return desfire.StatusMemoryError, nil
		}
	}
	mac, err := desfire.EV2ResponseMAC(s.mac, desfire.StatusOK, ctr, s.ti, body)
	if err != nil {
		return desfire.StatusMemoryError, nil
	}
	return desfire.StatusOK, append(append([]byte(nil), body...), mac...)
}

func (t *Tag) sessMode(m desfire.CommMode) desfire.CommMode {
	if t.sess == nil {
		return desfire.CommPlain
	}
	return m
}

func (t *Tag) getKeyVersion(p []byte) (byte, []byte) {
	h, d, st := t.open(cmdGetKeyVersion, p, 1, t.sessMode(desfire.CommMAC))
	if st != desfire.StatusOK {
		return st, nil
	}
	if len(d) != 0 {
		return desfire.StatusLengthError, nil
	}
	if h[0] >= ntag424.NumKeys {
		return desfire.StatusNoSuchKey, nil
	}
	return t.ok([]byte{t.keys[h[0]].version}, t.sessMode(desfire.CommMAC))
}

func (t *Tag) getCardUID(p []byte) (byte, []byte) {
	if t.sess == nil {
		return desfire.StatusAuthenticationError, nil
	}
	_, d, st := t.open(cmdGetCardUID, p, 0, desfire.CommMAC)
	if st != desfire.StatusOK {
		return st, nil
	}
	if len(d) != 0 {
		return desfire.StatusLengthError, nil
	}
	return t.ok(t.uid, desfire.CommFull)
}

func (t *Tag) fileOf(no byte) (*file, byte) {
	f, ok := t.files[no]
	if !ok {
		return nil, desfire.StatusFileNotFound
	}
	return f, desfire.StatusOK
}

func (t *Tag) getFileSettings(p []byte) (byte, []byte) {
	h, d, st := t.open(cmdGetFileSettings, p, 1, t.sessMode(desfire.CommMAC))
	if st != desfire.StatusOK {
		return st, nil
	}
	if len(d) != 0 {
		return desfire.StatusLengthError, nil
	}
	f, st := t.fileOf(h[0])
	if st != desfire.StatusOK {
		return st, nil
	}
	enc, err := f.settings.Encode()
	if err != nil {
		return desfire.StatusMemoryError, nil
	}
	size := len(f.data)
	out := append([]byte{0x00, enc[0], enc[1], enc[2], byte(size), byte(size >> 8), byte(size >> 16)}, enc[3:]...)
	return t.ok(out, t.sessMode(desfire.CommMAC))
}

// allowed reports whether the session satisfies access right k.
func (t *Tag) allowed(k byte) bool {
	return k == desfire.AccessFree || (t.sess != nil && k < ntag424.NumKeys && t.sess.keyNo == k)
}

func (t *Tag) changeFileSettings(p []byte) (byte, []byte) {
	if len(p) < 1 {
		return desfire.StatusLengthError, nil
	}
	f, st := t.fileOf(p[0])
	if st != desfire.StatusOK {
		return st, nil
	}
	ch := f.settings.Access.Change()
	if !t.allowed(ch) {
		return desfire.StatusPermissionDenied, nil
	}
	mode := desfire.CommFull
	if ch == desfire.AccessFree {
		mode = desfire.CommPlain
	}
	_, d, st := t.open(cmdChangeFileSett, p, 1, t.sessMode(mode))
	if st != desfire.StatusOK {
		return st, nil
	}
	fs, err := ntag424.ParseChangeFileSettings(d)
	if err != nil {
		return desfire.StatusParameterError, nil
	}
	if fs.SDM != nil && p[0] != ntag424.FileNDEF {
		return desfire.StatusParameterError, nil
	}
	if err := fs.Validate(len(f.data)); err != nil {
		return desfire.StatusParameterError, nil
	}
	f.settings = fs
	t.changes++
	return t.ok(nil, t.sessMode(desfire.CommMAC))
}

// changeKey needs key 0 (the application master key). For another key
// the cryptogram is (new ⊕ old) ‖ version ‖ CRC32(new): with a wrong old
// value the CRC fails and the tag answers 1E, key unchanged.
func (t *Tag) changeKey(p []byte) (byte, []byte) {
	if t.sess == nil || t.sess.keyNo != 0 {
		return desfire.StatusAuthenticationError, nil
	}
	h, d, st := t.open(cmdChangeKey, p, 1, desfire.CommFull)
	if st != desfire.StatusOK {
		return st, nil
	}
	no := h[0]
	if no >= ntag424.NumKeys {
		return desfire.StatusNoSuchKey, nil
	}
	if no == 0 {
		if len(d) != 17 {
			return desfire.StatusLengthError, nil
		}
		copy(t.keys[0].value[:], d[:16])
		t.keys[0].version = d[16]
		t.changes++
		t.sess = nil // the session ends; the answer carries no MAC
		return desfire.StatusOK, nil
	}
	if len(d) != 21 {
		return desfire.StatusLengthError, nil
	}
	var nk [16]byte
	for i := range nk {
		nk[i] = d[i] ^ t.keys[no].value[i]
	}
	if binary.LittleEndian.Uint32(d[17:21]) != dfcrypto.CRC32(nk[:]) {
		return desfire.StatusIntegrityError, nil
	}
	t.keys[no] = key{value: nk, version: d[16]}
	t.changes++
	return t.ok(nil, desfire.CommMAC)
}

func rangeOf(h []byte, size int) (off, n int, ok bool) {
	off = int(h[1]) | int(h[2])<<8 | int(h[3])<<16
	n = int(h[4]) | int(h[5])<<8 | int(h[6])<<16
	if n == 0 {
		n = size - off
	}
	return off, n, off <= size && n >= 0 && off+n <= size
}

// fileMode is the comm mode of an access to f granted by right k: plain
// for free access, the file's mode otherwise.
func (t *Tag) fileMode(f *file, k byte) desfire.CommMode {
	if k == desfire.AccessFree || t.sess == nil {
		return desfire.CommPlain
	}
	return f.settings.Mode
}

// dataAccess finds the file a ReadData or WriteData names (p[0], with at
// least the 7-byte header) and the right that grants the access: the
// file's want right, else its Read&Write right.
func (t *Tag) dataAccess(p []byte, want func(desfire.AccessRights) byte) (*file, byte, byte) {
	if len(p) < 7 {
		return nil, 0, desfire.StatusLengthError
	}
	f, st := t.fileOf(p[0])
	if st != desfire.StatusOK {
		return nil, 0, st
	}
	a := f.settings.Access
	switch {
	case t.allowed(want(a)):
		return f, want(a), desfire.StatusOK
	case t.allowed(a.ReadWrite()):
		return f, a.ReadWrite(), desfire.StatusOK
	}
	return nil, 0, desfire.StatusPermissionDenied
}

func (t *Tag) readData(p []byte) (byte, []byte) {
	f, k, st := t.dataAccess(p, desfire.AccessRights.Read)
	if st != desfire.StatusOK {
		return st, nil
	}
	mode := t.fileMode(f, k)
	h, d, st := t.open(ntag424.CmdReadData, p, 7, desfire.ReadMode(mode))
	if st != desfire.StatusOK {
		return st, nil
	}
	if len(d) != 0 {
		return desfire.StatusLengthError, nil
	}
	off, n, ok := rangeOf(h, len(f.data))
	if !ok {
		return desfire.StatusBoundaryError, nil
	}
	content := f.data
	if k == desfire.AccessFree && t.sess == nil {
		var st byte
		if content, st = t.readView(p[0], f); st != desfire.StatusOK {
			return st, nil
		}
	}
	return t.ok(append([]byte(nil), content[off:off+n]...), mode)
}

func (t *Tag) writeData(p []byte) (byte, []byte) {
	f, k, st := t.dataAccess(p, desfire.AccessRights.Write)
	if st != desfire.StatusOK {
		return st, nil
	}
	mode := t.fileMode(f, k)
	h, d, st := t.open(ntag424.CmdWriteData, p, 7, mode)
	if st != desfire.StatusOK {
		return st, nil
	}
	off, n, ok := rangeOf(h, len(f.data))
	if !ok || n != len(d) {
		return desfire.StatusBoundaryError, nil
	}
	copy(f.data[off:], d)
	t.changes++
	return t.ok(nil, desfire.ReadMode(mode))
}

// setConfiguration implements option 00 (PICCConfig): bit 1 switches the
// random ID on for good, effective at the next activation; and on a
// TagTamper tag option 07 (setTagTamper). Other options are not
// simulated and answer 9E.
func (t *Tag) setConfiguration(p []byte) (byte, []byte) {
	if t.sess == nil || t.sess.keyNo != 0 {
		return desfire.StatusPermissionDenied, nil
	}
	h, d, st := t.open(ntag424.CmdSetConfiguration, p, 1, desfire.CommFull)
	if st != desfire.StatusOK {
		return st, nil
	}
	if h[0] == ntag424.ConfigTagTamper {
		return t.setTagTamper(d)
	}
	if h[0] != ntag424.ConfigPICC || len(d) != 1 || d[0]&^ntag424.PICCUseRandomID != 0 {
		return desfire.StatusParameterError, nil
	}
	if d[0]&ntag424.PICCUseRandomID != 0 && !t.randomID {
		t.randomID = true
		t.changes++
	}
	return t.ok(nil, desfire.CommMAC)
}

// setTagTamper implements option 07 of a TagTamper tag: TTEnable(1) ‖
// access right(1) of GetTTStatus. Enabling starts tamper detection: from
// then on the status is mirrored (see Tag.mirror). A tag without the
// tamper loop answers 9E, as does a malformed payload.
func (t *Tag) setTagTamper(d []byte) (byte, []byte) {
	if !t.tt || len(d) != 2 || d[0]&^ntag424.TTEnable != 0 || !keyOrSpecial(d[1]) {
		return desfire.StatusParameterError, nil
	}
	if d[0] == ntag424.TTEnable && !t.ttOn {
		t.ttOn = true
		t.changes++
	}
	return t.ok(nil, desfire.CommMAC)
}

func keyOrSpecial(k byte) bool {
	return k < ntag424.NumKeys || k == desfire.AccessFree || k == desfire.AccessNever
}
