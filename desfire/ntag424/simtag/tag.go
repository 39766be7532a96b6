// Package simtag is a software NTAG 424 DNA behind desfire.Transport,
// written from the NT4H2421Gx data sheet and NXP AN12196: ISO SELECT of
// the NDEF application by name and of its files by FID, ISOReadBinary
// and ISOUpdateBinary, AuthenticateEV2First with EV2 secure messaging,
// GetKeyVersion, GetCardUID, GetFileSettings, ChangeFileSettings with the
// SDM options, ChangeKey with the old-key rule, ReadData and WriteData,
// SDM mirroring on unauthenticated reads (UID, counter, encrypted PICC
// data, encrypted file data, SDMMAC, the counter incremented once per
// read after selecting the file), random ID, and the TagTamper variant
// (SetConfiguration option 07, the tamper status mirrored into the
// encrypted file data). Tests use its knobs to
// tear a session after any APDU, executed or not.
package simtag

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/desfire/dfcrypto"
	"github.com/desfire-relay/relay/desfire/ntag424"
)

// ErrRemoved is what Transmit returns once the tag has left the field.
var ErrRemoved = errors.New("simtag: tag removed from the field")

// Native command codes the tag implements.
const (
	cmdAuthFirst       = 0x71
	cmdAuthNonFirst    = 0x77
	cmdGetKeyVersion   = 0x64
	cmdGetCardUID      = 0x51
	cmdGetFileSettings = 0xF5
	cmdChangeFileSett  = 0x5F
	cmdChangeKey       = 0xC4
	cmdGetVersion      = 0x60
)

// Options configure a new tag.
type Options struct {
	// UID is the 7-byte UID (random when nil).
	UID []byte
	// RandomID makes anticollision show a fresh random 4-byte ID
	// (08 ‖ 3 random bytes); GetCardUID still returns UID.
	RandomID bool
	// Rand is the randomness of RndB, TI and PICCData padding (crypto/rand
	// when nil).
	Rand io.Reader
	// TagTamper makes an NTAG 424 DNA TagTamper (NT4H2421Tx): a tamper
	// loop (closed until OpenLoop) whose status, once enabled with
	// SetConfiguration option 07, is mirrored into the SDM encrypted file
	// data.
	TagTamper bool
}

type key struct {
	value   [16]byte
	version byte
}

type file struct {
	data     []byte
	settings ntag424.FileSettings
}

type session struct {
	keyNo    byte
	enc, mac []byte
	ti       []byte
	ctr      uint16
}

type pendingAuth struct {
	keyNo byte
	rndB  []byte
}

// Tag is a simulated NTAG 424 DNA. It is safe for concurrent use; each
// APDU runs under one lock.
type Tag struct {
	mu       sync.Mutex
	rnd      io.Reader
	uid      []byte
	randomID bool
	anticol  []byte
	keys     [ntag424.NumKeys]key
	files    map[byte]*file
	sdmCtr   uint32
	// TagTamper: tt says the chip has the loop, ttOn that detection is
	// enabled; ttEverOpen and loopOpen give the permanent and current
	// status.
	tt, ttOn, ttEverOpen, loopOpen bool

	// volatile
	appSel  bool
	ef      byte
	counted bool
	sess    *session
	auth    *pendingAuth

	removed     bool
	removeAfter int
	tearAt      int
	apdus       int
	changes     int
}

// New returns a tag in factory state (NT4H2421Gx section 8.2): all keys
// zero at version 00, the CC file, an empty NDEF file readable and
// writable by anyone, the proprietary file (read key 2, write key 3, Full
// mode), SDM off.
func New(o Options) (*Tag, error) {
	t := &Tag{rnd: o.Rand, randomID: o.RandomID, tt: o.TagTamper, removeAfter: -1, tearAt: -1}
	if t.rnd == nil {
		t.rnd = rand.Reader
	}
	t.uid = append([]byte(nil), o.UID...)
	if t.uid == nil {
		t.uid = make([]byte, 7)
		if _, err := io.ReadFull(t.rnd, t.uid[1:]); err != nil {
			return nil, fmt.Errorf("simtag: UID: %w", err)
		}
		t.uid[0] = 0x04
	}
	if len(t.uid) != 7 {
		return nil, fmt.Errorf("simtag: UID of %d bytes: %w", len(t.uid), desfire.ErrParameter)
	}
	t.files = map[byte]*file{
		ntag424.FileCC: {data: ntag424.CapabilityContainer(false),
			settings: ntag424.FileSettings{Access: desfire.NewAccessRights(desfire.AccessFree, 0, 0, 0)}},
		ntag424.FileNDEF: {data: make([]byte, ntag424.NDEFSize),
			settings: ntag424.FileSettings{Access: desfire.NewAccessRights(desfire.AccessFree, desfire.AccessFree, desfire.AccessFree, 0)}},
		ntag424.FileProprietary: {data: make([]byte, ntag424.ProprietarySize),
			settings: ntag424.FileSettings{Mode: desfire.CommFull, Access: desfire.NewAccessRights(2, 3, 3, 0)}},
	}
	return t, t.enterField()
}

func (t *Tag) enterField() error {
	t.appSel, t.ef, t.counted, t.sess, t.auth, t.removed = false, 0, false, nil, nil, false
	t.anticol = t.uid
	if t.randomID {
		id := make([]byte, 4)
		if _, err := io.ReadFull(t.rnd, id[1:]); err != nil {
			return fmt.Errorf("simtag: random ID: %w", err)
		}
		id[0] = 0x08
		t.anticol = id
	}
	return nil
}

// Tap takes the tag out of the field and presents it again: volatile
// state is reset, removal knobs cleared.
func (t *Tag) Tap() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.removeAfter, t.tearAt = -1, -1
	return t.enterField()
}

// RemoveAfter lets the tag answer n more APDUs; the next one is not
// executed and the tag is gone.
func (t *Tag) RemoveAfter(n int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.removeAfter = n
}

// TearAt lets the tag answer n more APDUs, then execute the next one and
// leave the field before its answer: the worst case of a tear, where the
// host cannot know whether the command ran.
func (t *Tag) TearAt(n int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.tearAt = n
}

// AnticollisionUID is the ID a reader sees (random with RandomID).
func (t *Tag) AnticollisionUID() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]byte(nil), t.anticol...)
}

// UID is the tag's real UID.
func (t *Tag) UID() []byte { return append([]byte(nil), t.uid...) }

// APDUs is the number of APDUs executed since New.
func (t *Tag) APDUs() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.apdus
}

// Changes counts persistent changes (keys, settings, file data) since
// New, so tests can prove that nothing was written.
func (t *Tag) Changes() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.changes
}

// Key returns a key's value and version, for tests.
func (t *Tag) Key(no byte) ([]byte, byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := t.keys[no%ntag424.NumKeys]
	return append([]byte(nil), k.value[:]...), k.version
}

// Settings returns a file's settings, for tests.
func (t *Tag) Settings(fileNo byte) (ntag424.FileSettings, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f, ok := t.files[fileNo]
	if !ok {
		return ntag424.FileSettings{}, false
	}
	return f.settings, true
}

// FileData returns a file's stored content, for tests.
func (t *Tag) FileData(fileNo byte) []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	if f, ok := t.files[fileNo]; ok {
		return append([]byte(nil), f.data...)
	}
	return nil
}

// SetFileData overwrites stored file content without any access check,
// for tests that need a given plaintext under an SDM mirror.
func (t *Tag) SetFileData(fileNo byte, offset int, data []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if f, ok := t.files[fileNo]; ok && offset >= 0 && offset+len(data) <= len(f.data) {
		copy(f.data[offset:], data)
	}
}

// SetReadCtr sets the SDM read counter, for tests replaying a trace.
func (t *Tag) SetReadCtr(v uint32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sdmCtr = v
}

// Transmit runs one APDU. It implements desfire.Transport.
func (t *Tag) Transmit(ctx context.Context, capdu []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("simtag: %w", err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.removed {
		return nil, fmt.Errorf("simtag: transmit: %w", ErrRemoved)
	}
	if t.removeAfter == 0 {
		t.leave()
		return nil, fmt.Errorf("simtag: transmit: %w", ErrRemoved)
	}
	if t.removeAfter > 0 {
		t.removeAfter--
	}
	tear := t.tearAt == 0
	if t.tearAt > 0 {
		t.tearAt--
	}
	t.apdus++
	r := t.execute(capdu)
	if tear {
		t.leave()
		return nil, fmt.Errorf("simtag: torn before the answer: %w", ErrRemoved)
	}
	return r, nil
}

func (t *Tag) leave() {
	t.removed, t.sess, t.auth, t.appSel, t.ef, t.counted = true, nil, nil, false, 0, false
	t.removeAfter, t.tearAt = -1, -1
}

func sw(v uint16) []byte { return []byte{byte(v >> 8), byte(v)} }

func (t *Tag) execute(capdu []byte) []byte {
	if len(capdu) < 4 {
		return sw(0x6700)
	}
	switch capdu[0] {
	case 0x00:
		t.auth = nil
		return t.iso(capdu)
	case 0x90:
	default:
		return sw(0x6E00)
	}
	code, p, err := desfire.UnwrapNative(capdu)
	if err != nil {
		return sw(0x6700)
	}
	if !t.appSel {
		return desfire.NativeResponse(desfire.StatusPermissionDenied, nil)
	}
	st, data := t.native(code, p)
	if st != desfire.StatusOK && st != desfire.StatusAdditionalFrame {
		t.sess, t.auth = nil, nil
		return desfire.NativeResponse(st, nil)
	}
	return desfire.NativeResponse(st, data)
}

// iso runs the ISO/IEC 7816-4 commands (NT4H2421Gx section 10.9).
func (t *Tag) iso(a []byte) []byte {
	ins, p1, p2 := a[1], a[2], a[3]
	body := a[4:]
	var data []byte
	le := -1
	switch {
	case len(body) == 0:
	case len(body) == 1:
		le = int(body[0])
	default:
		lc := int(body[0])
		switch len(body) {
		case 1 + lc:
		case 2 + lc:
			le = int(body[1+lc])
		default:
			return sw(0x6700)
		}
		data = body[1 : 1+lc]
	}
	switch ins {
	case 0xA4:
		return t.isoSelect(p1, p2, data)
	case 0xB0:
		return t.isoReadBinary(p1, p2, le)
	case 0xD6:
		return t.isoUpdateBinary(p1, p2, data)
	}
	return sw(0x6D00)
}

func (t *Tag) isoSelect(p1, p2 byte, data []byte) []byte {
	t.sess = nil
	switch {
	case p1 == 0x04 && bytes.Equal(data, ntag424.AppName):
		t.appSel, t.ef, t.counted = true, 0, false
		return sw(0x9000)
	case p1 == 0x04:
		return sw(0x6A82)
	case p1 == 0x00 && len(data) == 2 && t.appSel:
		for no, fid := range map[byte][2]byte{ntag424.FileCC: ntag424.FIDCC, ntag424.FileNDEF: ntag424.FIDNDEF, ntag424.FileProprietary: ntag424.FIDProprietary} {
			if data[0] == fid[0] && data[1] == fid[1] {
				t.ef, t.counted = no, false
				return sw(0x9000)
			}
		}
		return sw(0x6A82)
	case p1 == 0x00:
		return sw(0x6A82)
	}
	_ = p2
	return sw(0x6A86)
}

func (t *Tag) isoReadBinary(p1, p2 byte, le int) []byte {
	f, ok := t.files[t.ef]
	if !ok {
		return sw(0x6986)
	}
	if f.settings.Access.Read() != desfire.AccessFree && f.settings.Access.ReadWrite() != desfire.AccessFree {
		return sw(0x6982)
	}
	off := int(p1&0x7F)<<8 | int(p2)
	if p1&0x80 != 0 || off > len(f.data) {
		return sw(0x6B00)
	}
	n := le
	if n <= 0 {
		n = 256
	}
	content, st := t.readView(t.ef, f)
	if st != desfire.StatusOK {
		return sw(0x6982)
	}
	end := min(off+n, len(content))
	return append(append([]byte(nil), content[off:end]...), 0x90, 0x00)
}

func (t *Tag) isoUpdateBinary(p1, p2 byte, data []byte) []byte {
	f, ok := t.files[t.ef]
	if !ok {
		return sw(0x6986)
	}
	if f.settings.Access.Write() != desfire.AccessFree && f.settings.Access.ReadWrite() != desfire.AccessFree {
		return sw(0x6982)
	}
	if t.ef == ntag424.FileNDEF && t.files[ntag424.FileCC].data[ntag424.CCWriteAccessOffset] != 0x00 {
		return sw(0x6982)
	}
	off := int(p1&0x7F)<<8 | int(p2)
	if p1&0x80 != 0 || off+len(data) > len(f.data) {
		return sw(0x6B00)
	}
	copy(f.data[off:], data)
	t.changes++
	return sw(0x9000)
}

// readView is what an unauthenticated read of a file returns: the stored
// bytes, with the SDM mirrors filled in for the NDEF file. The counter
// goes up once per selection of the file (the first read after it).
func (t *Tag) readView(no byte, f *file) ([]byte, byte) {
	out := append([]byte(nil), f.data...)
	s := f.settings.SDM
	if no != ntag424.FileNDEF || s == nil {
		return out, desfire.StatusOK
	}
	if !t.counted {
		if t.sdmCtr >= 1<<24-1 || (s.ReadCtrLimit != nil && t.sdmCtr >= *s.ReadCtrLimit) {
			return nil, desfire.StatusPermissionDenied
		}
		t.sdmCtr++
		t.counted = true
	}
	if err := t.mirror(out, s); err != nil {
		return nil, desfire.StatusPermissionDenied
	}
	return out, desfire.StatusOK
}

func putHex(dst []byte, off *uint32, b []byte) {
	if off == nil {
		return
	}
	h := strings.ToUpper(hex.EncodeToString(b))
	if int(*off)+len(h) <= len(dst) {
		copy(dst[*off:], h)
	}
}

// mirror fills the SDM fields (NT4H2421Gx section 9.3).
func (t *Tag) mirror(out []byte, s *desfire.SDMSettings) error {
	ctr := t.sdmCtr
	ctrLE := []byte{byte(ctr), byte(ctr >> 8), byte(ctr >> 16)}
	uidOn, ctrOn := s.Options&ntag424.SDMUIDMirror != 0, s.Options&ntag424.SDMCtrMirror != 0
	if s.MetaRead == desfire.AccessFree {
		putHex(out, s.UIDOffset, t.uid)
		putHex(out, s.ReadCtrOffset, []byte{byte(ctr >> 16), byte(ctr >> 8), byte(ctr)})
	}
	if s.MetaRead < ntag424.NumKeys && s.PICCDataOffset != nil {
		tag := byte(0)
		plain := []byte{0}
		if uidOn {
			tag |= 0x80 | 7
			plain = append(plain, t.uid...)
		}
		if ctrOn {
			tag |= 0x40
			plain = append(plain, ctrLE...)
		}
		plain[0] = tag
		pad := make([]byte, 16-len(plain))
		if _, err := io.ReadFull(t.rnd, pad); err != nil {
			return err
		}
		enc, err := dfcrypto.EncryptCBC(t.keys[s.MetaRead].value[:], make([]byte, 16), append(plain, pad...))
		if err != nil {
			return err
		}
		putHex(out, s.PICCDataOffset, enc)
	}
	if s.FileRead >= ntag424.NumKeys || s.MACOffset == nil || s.MACInputOffset == nil {
		return nil
	}
	sv := []byte{0xC3, 0x3C, 0x00, 0x01, 0x00, 0x80}
	if uidOn {
		sv = append(sv, t.uid...)
	}
	if ctrOn {
		sv = append(sv, ctrLE...)
	}
	sv = dfcrypto.PadZero(sv)
	k := t.keys[s.FileRead].value[:]
	encKey, err := dfcrypto.CMAC(k, sv)
	if err != nil {
		return err
	}
	sv[0], sv[1] = 0x3C, 0xC3
	macKey, err := dfcrypto.CMAC(k, sv)
	if err != nil {
		return err
	}
	if s.Options&ntag424.SDMEncFileData != 0 && s.ENCOffset != nil && s.ENCLength != nil {
		off, n := int(*s.ENCOffset), int(*s.ENCLength)/2
		if off+n > len(t.files[ntag424.FileNDEF].data) {
			return desfire.ErrBoundary
		}
		iv, err := dfcrypto.EncryptBlock(encKey, dfcrypto.PadZero(append([]byte(nil), ctrLE...)))
		if err != nil {
			return err
		}
		plain := append([]byte(nil), t.files[ntag424.FileNDEF].data[off:off+n]...)
		if t.ttOn {
			copy(plain, t.ttStatus())
		}
		enc, err := dfcrypto.EncryptCBC(encKey, iv, plain)
		if err != nil {
			return err
		}
		putHex(out, s.ENCOffset, enc)
	}
	in, mo := int(*s.MACInputOffset), int(*s.MACOffset)
	if in > mo || mo+ntag424.MACMirrorLen > len(out) {
		return desfire.ErrBoundary
	}
	mac, err := dfcrypto.MACt(macKey, out[in:mo])
	if err != nil {
		return err
	}
	putHex(out, s.MACOffset, mac)
	return nil
}

// OpenLoop breaks the tamper loop of a TagTamper tag (the wire is cut):
// both statuses become open. CloseLoop closes it again: the current
// status is closed, the permanent one stays open.
func (t *Tag) OpenLoop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.loopOpen, t.ttEverOpen = true, true
}

// CloseLoop closes the tamper loop again (see OpenLoop).
func (t *Tag) CloseLoop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.loopOpen = false
}

// TagTamperEnabled reports whether tamper detection was switched on.
func (t *Tag) TagTamperEnabled() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.ttOn
}

// ttStatus is the mirrored TagTamper status: permanent ‖ current.
func (t *Tag) ttStatus() []byte {
	st := func(open bool) byte {
		if open {
			return ntag424.TTOpen
		}
		return ntag424.TTClosed
	}
	return []byte{st(t.ttEverOpen), st(t.loopOpen)}
}

// PhoneRead is a phone tapping the tag: it presents the tag again, selects
// the NDEF application and file, reads the NDEF file with ISOReadBinary
// and returns the URL the phone would open (with the SDM mirrors the tag
// filled in and its read counter one higher).
func (t *Tag) PhoneRead(ctx context.Context) (string, error) {
	if err := t.Tap(); err != nil {
		return "", err
	}
	for _, a := range [][]byte{ntag424.SelectAppAPDU(), ntag424.SelectFileAPDU(ntag424.FIDNDEF)} {
		r, err := t.Transmit(ctx, a)
		if err != nil {
			return "", err
		}
		if !bytes.Equal(r, sw(0x9000)) {
			return "", fmt.Errorf("simtag: select answered %X: %w", r, desfire.ErrPermissionDenied)
		}
	}
	r, err := t.Transmit(ctx, ntag424.ReadBinaryAPDU(0, 0))
	if err != nil {
		return "", err
	}
	if len(r) < 2 || !bytes.Equal(r[len(r)-2:], sw(0x9000)) {
		return "", fmt.Errorf("simtag: read binary answered %X: %w", r, desfire.ErrPermissionDenied)
	}
	return ntag424.URL(r[:len(r)-2])
}
