package desfire

import "fmt"

// FileType is the type byte of GetFileSettings.
type FileType byte

// File types (MF2DLHX0 and NT4H2421Gx, GetFileSettings).
const (
	FileStandardData   FileType = 0x00
	FileBackupData     FileType = 0x01
	FileValue          FileType = 0x02
	FileLinearRecord   FileType = 0x03
	FileCyclicRecord   FileType = 0x04
	FileTransactionMAC FileType = 0x05
)

func (t FileType) String() string {
	switch t {
	case FileStandardData:
		return "standard data"
	case FileBackupData:
		return "backup data"
	case FileValue:
		return "value"
	case FileLinearRecord:
		return "linear record"
	case FileCyclicRecord:
		return "cyclic record"
	case FileTransactionMAC:
		return "transaction MAC"
	}
	return fmt.Sprintf("file type %02X", byte(t))
}

// FileOption bits.
const (
	fileOptionAddAccess = 0x80 // additional access condition sets follow (EV2)
	fileOptionSDM       = 0x40 // secure dynamic messaging (NTAG 424 DNA, EV3)
	fileOptionTMCLimit  = 0x20 // TransactionMAC file: TMCLimit follows
)

// Access rights values.
const (
	AccessFree  byte = 0x0E // no authentication needed
	AccessNever byte = 0x0F // denied
)

// AccessRights is a file's access condition set as the little-endian value
// of its two bytes: Read (bits 15..12), Write (11..8), ReadWrite (7..4),
// Change (3..0); each a key number, AccessFree or AccessNever.
type AccessRights uint16

// NewAccessRights builds an access condition set.
func NewAccessRights(read, write, readWrite, change byte) AccessRights {
	return AccessRights(uint16(read&0xF)<<12 | uint16(write&0xF)<<8 | uint16(readWrite&0xF)<<4 | uint16(change&0xF))
}

// Read is the key for reading.
func (a AccessRights) Read() byte { return byte(a>>12) & 0xF }

// Write is the key for writing.
func (a AccessRights) Write() byte { return byte(a>>8) & 0xF }

// ReadWrite is the key for reading and writing.
func (a AccessRights) ReadWrite() byte { return byte(a>>4) & 0xF }

// Change is the key for ChangeFileSettings.
func (a AccessRights) Change() byte { return byte(a) & 0xF }

// Bytes returns the two bytes as sent: RW|Change, Read|Write.
func (a AccessRights) Bytes() []byte { return []byte{byte(a), byte(a >> 8)} }

// SDMSettings are the Secure Dynamic Messaging settings of an NTAG 424 DNA
// (or EV3) standard data file. Offsets absent from the card's answer are
// nil.
type SDMSettings struct {
	// Options: bit 7 UID mirror, 6 read counter mirror, 5 read counter
	// limit, 4 encrypted file data, 0 ASCII encoding.
	Options byte
	// MetaRead, FileRead and CtrRet are the SDM access rights (key number,
	// AccessFree or AccessNever).
	MetaRead, FileRead, CtrRet               byte
	UIDOffset, ReadCtrOffset, PICCDataOffset *uint32
	MACInputOffset, ENCOffset, ENCLength     *uint32
	MACOffset, ReadCtrLimit                  *uint32
}

// FileSettings is the answer to GetFileSettings, for every file type.
type FileSettings struct {
	Type FileType
	// Option is the raw FileOption byte: comm mode (bits 1..0), TMCLimit
	// (bit 5, TransactionMAC file), SDM (bit 6), additional access rights
	// (bit 7).
	Option byte
	Access AccessRights

	// Size of a standard or backup data file.
	Size uint32

	// Value file: limits, the limited credit value and the flags byte
	// (bit 0 limited credit enabled, bit 1 free GetValue).
	Lower, Upper       int32
	LimitedCreditValue int32
	ValueFlags         byte

	// Record files.
	RecordSize, MaxRecords, CurrentRecords uint32

	// TransactionMAC file: key option (02 = AES), key version and the
	// optional TMC limit.
	TMKeyOption, TMKeyVersion byte
	TMCLimit                  *uint32

	// SDM settings of a data file with FileOption bit 6.
	SDM *SDMSettings

	// AdditionalAccess holds the additional access condition sets (EV2,
	// FileOption bit 7).
	AdditionalAccess []AccessRights
}

// Mode is the file's communication mode (the reserved value 2 is plain).
func (f *FileSettings) Mode() CommMode {
	if m := CommMode(f.Option & 0x03); m == CommMAC || m == CommFull {
		return m
	}
	return CommPlain
}

// CommitReaderIDKey is what a Transaction MAC file's ReadWrite access
// right says of CommitReaderID (the AppCommitReaderIDKey, MF2DLHX0
// section 8.2.3.6): a key number (0..13) means the command is enabled
// under that key and every transaction must commit a reader ID before
// CommitTransaction (required); AccessFree: enabled with free access, not
// required; AccessNever: disabled. Other file types answer AccessNever.
func (f *FileSettings) CommitReaderIDKey() (key byte, required bool) {
	if f.Type != FileTransactionMAC {
		return AccessNever, false
	}
	k := f.Access.ReadWrite()
	return k, k < AccessFree
}

// LimitedCreditEnabled reports the value file's limited credit flag.
func (f *FileSettings) LimitedCreditEnabled() bool { return f.ValueFlags&0x01 != 0 }

// FreeGetValue reports whether GetValue needs no authentication.
func (f *FileSettings) FreeGetValue() bool { return f.ValueFlags&0x02 != 0 }

// ParseFileSettings parses a GetFileSettings answer:
//
//	FileType(1) FileOption(1) AccessRights(2) then by type
//	  data files    FileSize(3) [SDM settings when FileOption bit 6]
//	  value         Lower(4) Upper(4) LimitedCreditValue(4) Flags(1)
//	  record files  RecordSize(3) MaxRecords(3) CurrentRecords(3)
//	  TMAC          TMKeyOption(1) TMKeyVersion(1) [TMCLimit(4) when bit 5]
//	then, except for TMAC, [NrAddARs(1) AddARs(2×n)] when FileOption bit 7.
//
// Numbers are little endian (MF2DLHX0 and NT4H2421Gx, GetFileSettings;
// the NXP reader library's phalMfdfLight_Sw_GetFileSettings checks the
// same lengths). Short input and leftover bytes are errors.
func ParseFileSettings(d []byte) (*FileSettings, error) {
	r := newRespReader("file settings", d)
	f := &FileSettings{Type: FileType(r.byte()), Option: r.byte()}
	f.Access = accessRights(r)
	switch f.Type {
	case FileStandardData, FileBackupData:
		f.Size = r.u24()
		if f.Option&fileOptionSDM != 0 {
			f.SDM = parseSDM(r)
		}
	case FileValue:
		f.Lower = int32(r.u32())
		f.Upper = int32(r.u32())
		f.LimitedCreditValue = int32(r.u32())
		f.ValueFlags = r.byte()
	case FileLinearRecord, FileCyclicRecord:
		f.RecordSize = r.u24()
		f.MaxRecords = r.u24()
		f.CurrentRecords = r.u24()
	case FileTransactionMAC:
		f.TMKeyOption = r.byte()
		f.TMKeyVersion = r.byte()
		if f.Option&fileOptionTMCLimit != 0 {
			v := r.u32()
			f.TMCLimit = &v
		}
	default:
		if r.err == nil {
			return nil, fmt.Errorf("file settings: %v: %w", f.Type, ErrParameter)
		}
	}
	if f.Type != FileTransactionMAC && f.Option&fileOptionAddAccess != 0 && r.err == nil {
		n := int(r.byte())
		for i := 0; i < n && r.err == nil; i++ {
			f.AdditionalAccess = append(f.AdditionalAccess, accessRights(r))
		}
	}
	if err := r.done(); err != nil {
		return nil, err
	}
	return f, nil
}

func accessRights(r *respReader) AccessRights {
	b := r.bytes(2)
	if b == nil {
		return 0
	}
	return AccessRights(uint16(b[0]) | uint16(b[1])<<8)
}

// parseSDM reads the SDM part of a data file's settings (NT4H2421Gx,
// GetFileSettings): SDMOptions(1), SDMAccessRights(2: RFU|CtrRet,
// MetaRead|FileRead), then the offsets the options and rights call for,
// 3 bytes each, in this order.
func parseSDM(r *respReader) *SDMSettings {
	s := &SDMSettings{Options: r.byte()}
	ar := r.bytes(2)
	if ar == nil {
		return s
	}
	s.CtrRet, s.MetaRead, s.FileRead = ar[0]&0xF, ar[1]>>4, ar[1]&0xF
	opt := func(present bool) *uint32 {
		if !present || r.err != nil {
			return nil
		}
		v := r.u24()
		return &v
	}
	metaKey := s.MetaRead < AccessFree
	fileOn := s.FileRead != AccessNever
	s.UIDOffset = opt(s.Options&0x80 != 0 && s.MetaRead == AccessFree)
	s.ReadCtrOffset = opt(s.Options&0x40 != 0 && s.MetaRead == AccessFree)
	s.PICCDataOffset = opt(metaKey)
	s.MACInputOffset = opt(fileOn)
	s.ENCOffset = opt(fileOn && s.Options&0x10 != 0)
	s.ENCLength = opt(fileOn && s.Options&0x10 != 0)
	s.MACOffset = opt(fileOn)
	s.ReadCtrLimit = opt(s.Options&0x20 != 0)
	return s
}
