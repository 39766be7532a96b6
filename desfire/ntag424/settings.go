package ntag424

import (
	"errors"
	"fmt"

	"github.com/desfire-relay/relay/desfire"
)

// SDMOptions bits (NT4H2421Gx section 10.7.1, Table 69).
const (
	SDMUIDMirror   byte = 0x80
	SDMCtrMirror   byte = 0x40
	SDMCtrLimit    byte = 0x20
	SDMEncFileData byte = 0x10
	SDMASCII       byte = 0x01
	sdmRFU         byte = 0x0E
)

// Lengths of the mirrored fields in the NDEF file, in ASCII characters.
const (
	UIDMirrorLen  = 14
	CtrMirrorLen  = 6
	PICCMirrorLen = 32
	MACMirrorLen  = 16
	// EncBlockLen is the ASCII length of one encrypted 16-byte block.
	EncBlockLen = 32
	max24       = 1<<24 - 1
)

// ErrSettings is returned for file settings the tag would refuse or that
// would mirror outside the file or over another mirror.
var ErrSettings = errors.New("ntag424: invalid file settings")

// FileSettings are the settings ChangeFileSettings writes to one file.
type FileSettings struct {
	// Mode is the file's communication mode.
	Mode desfire.CommMode
	// Access is the file's access condition set.
	Access desfire.AccessRights
	// SDM switches Secure Dynamic Messaging on (NDEF file only).
	SDM *desfire.SDMSettings
}

func keyOrSpecial(k byte) bool {
	return k < NumKeys || k == desfire.AccessFree || k == desfire.AccessNever
}

// Validate checks the settings for a file of fileSize bytes: key numbers,
// the SDM option rules of the data sheet (ASCII encoding, encrypted file
// data only with encrypted PICC data carrying UID and counter, MAC input
// before the MAC), every mirror inside the file and no two mirrors
// overlapping.
func (fs FileSettings) Validate(fileSize int) error {
	if fs.Mode != desfire.CommPlain && fs.Mode != desfire.CommMAC && fs.Mode != desfire.CommFull {
		return fmt.Errorf("comm mode %d: %w", fs.Mode, ErrSettings)
	}
	a := fs.Access
	for _, k := range []byte{a.Read(), a.Write(), a.ReadWrite(), a.Change()} {
		if !keyOrSpecial(k) {
			return fmt.Errorf("access right %X: %w", k, ErrSettings)
		}
	}
	if fs.SDM == nil {
		return nil
	}
	return validateSDM(fs.SDM, fileSize)
}

type region struct {
	name     string
	off, len uint32
}

func validateSDM(s *desfire.SDMSettings, fileSize int) error {
	if s.Options&SDMASCII == 0 || s.Options&sdmRFU != 0 {
		return fmt.Errorf("SDM options %02X: %w", s.Options, ErrSettings)
	}
	for _, k := range []byte{s.MetaRead, s.FileRead, s.CtrRet} {
		if !keyOrSpecial(k) {
			return fmt.Errorf("SDM access right %X: %w", k, ErrSettings)
		}
	}
	need := func(name string, p *uint32, want bool) error {
		if (p != nil) != want {
			return fmt.Errorf("SDM %s offset present=%v, required=%v: %w", name, p != nil, want, ErrSettings)
		}
		return nil
	}
	metaFree, metaKey := s.MetaRead == desfire.AccessFree, s.MetaRead < NumKeys
	fileOn := s.FileRead != desfire.AccessNever
	enc := s.Options&SDMEncFileData != 0
	if s.FileRead == desfire.AccessFree {
		return fmt.Errorf("SDM file read right E: %w", ErrSettings)
	}
	if metaKey && s.Options&(SDMUIDMirror|SDMCtrMirror) == 0 {
		return fmt.Errorf("encrypted PICC data without UID or counter: %w", ErrSettings)
	}
	if enc && (!metaKey || !fileOn || s.Options&(SDMUIDMirror|SDMCtrMirror) != SDMUIDMirror|SDMCtrMirror) {
		return fmt.Errorf("encrypted file data needs encrypted PICC data with UID and counter: %w", ErrSettings)
	}
	checks := []struct {
		name string
		p    *uint32
		want bool
	}{
		{"UID", s.UIDOffset, s.Options&SDMUIDMirror != 0 && metaFree},
		{"read counter", s.ReadCtrOffset, s.Options&SDMCtrMirror != 0 && metaFree},
		{"PICC data", s.PICCDataOffset, metaKey},
		{"MAC input", s.MACInputOffset, fileOn},
		{"encrypted data", s.ENCOffset, fileOn && enc},
		{"encrypted length", s.ENCLength, fileOn && enc},
		{"MAC", s.MACOffset, fileOn},
		{"read counter limit", s.ReadCtrLimit, s.Options&SDMCtrLimit != 0},
	}
	for _, c := range checks {
		if err := need(c.name, c.p, c.want); err != nil {
			return err
		}
		if c.p != nil && *c.p > max24 {
			return fmt.Errorf("SDM %s offset %d: %w", c.name, *c.p, ErrSettings)
		}
	}
	var rs []region
	add := func(name string, p *uint32, n uint32) {
		if p != nil {
			rs = append(rs, region{name, *p, n})
		}
	}
	add("UID", s.UIDOffset, UIDMirrorLen)
	add("read counter", s.ReadCtrOffset, CtrMirrorLen)
	add("PICC data", s.PICCDataOffset, PICCMirrorLen)
	add("MAC", s.MACOffset, MACMirrorLen)
	if enc {
		if *s.ENCLength == 0 || *s.ENCLength%EncBlockLen != 0 {
			return fmt.Errorf("SDM encrypted length %d: %w", *s.ENCLength, ErrSettings)
		}
		add("encrypted data", s.ENCOffset, *s.ENCLength)
		if *s.ENCOffset < *s.MACInputOffset || uint64(*s.ENCOffset)+uint64(*s.ENCLength) > uint64(*s.MACOffset) {
			return fmt.Errorf("SDM encrypted data outside the MAC input: %w", ErrSettings)
		}
	}
	if fileOn && *s.MACInputOffset > *s.MACOffset {
		return fmt.Errorf("SDM MAC input offset %d after MAC offset %d: %w", *s.MACInputOffset, *s.MACOffset, ErrSettings)
	}
	for i, r := range rs {
		if uint64(r.off)+uint64(r.len) > uint64(fileSize) {
			return fmt.Errorf("SDM %s at %d+%d outside a %d-byte file: %w", r.name, r.off, r.len, fileSize, ErrSettings)
		}
		for _, o := range rs[:i] {
			if r.off < o.off+o.len && o.off < r.off+r.len {
				return fmt.Errorf("SDM %s overlaps %s: %w", r.name, o.name, ErrSettings)
			}
		}
	}
	return nil
}

// Encode returns the ChangeFileSettings data of the NDEF file (NT4H2421Gx
// section 10.7.1): FileOption ‖ AccessRights(2) [‖ SDMOptions ‖
// SDMAccessRights(2: RFU F|CtrRet, MetaRead|FileRead) ‖ the offsets the
// options call for, 3 bytes LE each: UID, SDMReadCtr, PICCData,
// SDMMACInput, SDMENC, SDMENCLength, SDMMAC, SDMReadCtrLimit]. It
// validates against the NDEF file size first.
func (fs FileSettings) Encode() ([]byte, error) {
	if err := fs.Validate(NDEFSize); err != nil {
		return nil, err
	}
	opt := byte(fs.Mode)
	if fs.SDM != nil {
		opt |= 0x40
	}
	out := append([]byte{opt}, fs.Access.Bytes()...)
	s := fs.SDM
	if s == nil {
		return out, nil
	}
	out = append(out, s.Options, 0xF0|s.CtrRet, s.MetaRead<<4|s.FileRead)
	for _, p := range []*uint32{s.UIDOffset, s.ReadCtrOffset, s.PICCDataOffset, s.MACInputOffset, s.ENCOffset, s.ENCLength, s.MACOffset, s.ReadCtrLimit} {
		if p != nil {
			out = append(out, byte(*p), byte(*p>>8), byte(*p>>16))
		}
	}
	return out, nil
}

// ParseChangeFileSettings parses the data of ChangeFileSettings (what a
// tag receives) into settings; it is the inverse of Encode and is used by
// the simulated tag. It reuses the GetFileSettings parser, which shares
// the layout after FileType and FileSize.
func ParseChangeFileSettings(d []byte) (FileSettings, error) {
	if len(d) < 3 {
		return FileSettings{}, fmt.Errorf("change file settings of %d bytes: %w", len(d), ErrSettings)
	}
	if d[0]&^0x43 != 0 {
		return FileSettings{}, fmt.Errorf("file option %02X: %w", d[0], ErrSettings)
	}
	// FileType 00 ‖ FileOption ‖ AccessRights ‖ Size(3) ‖ SDM part.
	gfs := append([]byte{0x00, d[0], d[1], d[2], 0, 0, 0}, d[3:]...)
	parsed, err := desfire.ParseFileSettings(gfs)
	if err != nil {
		return FileSettings{}, fmt.Errorf("change file settings: %w: %w", err, ErrSettings)
	}
	if parsed.SDM != nil && d[4]>>4 != 0xF {
		return FileSettings{}, fmt.Errorf("SDM access rights RFU nibble %X: %w", d[4]>>4, ErrSettings)
	}
	return FileSettings{Mode: parsed.Mode(), Access: parsed.Access, SDM: parsed.SDM}, nil
}

// CapabilityContainer returns the 32-byte CC file of an NTAG 424 DNA in
// its factory layout (NT4H2421Gx section 8.2.3.1): CCLEN 0017, mapping
// version 2.0, MLe 0100, MLc 00FF, the NDEF file control TLV (04 06 E104,
// max size 0100, read access 00, write access 00 or FF when readOnly) and
// the proprietary file control TLV (05 06 E105 0080 82 83).
func CapabilityContainer(readOnly bool) []byte {
	cc := []byte{
		0x00, 0x17, 0x20, 0x01, 0x00, 0x00, 0xFF,
		0x04, 0x06, 0xE1, 0x04, 0x01, 0x00, 0x00, 0x00,
		0x05, 0x06, 0xE1, 0x05, 0x00, 0x80, 0x82, 0x83,
	}
	if readOnly {
		cc[CCWriteAccessOffset] = 0xFF
	}
	return append(cc, make([]byte, CCSize-len(cc))...)
}

// CCWriteAccessOffset is where the NDEF file's write access byte sits in
// the capability container (00 free, FF read-only).
const CCWriteAccessOffset = 14
