package desfire

import (
	"context"
	"encoding/binary"
	"fmt"
	"strconv"
)

// Native command codes with their layouts after the code: Header (sent in
// plain, covered by the MAC) | Data (protected by the comm mode) ; answer.
// Comm modes are those of the public data sheets' command tables: "MAC"
// means MACed when authenticated and plain otherwise (Card.SessionMode),
// "file" means the file's comm mode, "Full" needs a channel.
//
// Sources: MIFARE DESFire Light data sheet MF2DLHX0 (section 11, command
// set); NTAG 424 DNA data sheet NT4H2421Gx (section 10); NXP AN12343 and
// AN12196 traces (the header/data split of GetFileSettings, ReadData,
// WriteData, WriteRecord, ReadRecords, GetValue, Credit, Debit,
// CommitReaderID, CommitTransaction, GetKeyVersion, ChangeKey and
// ChangeFileSettings in testdata/vectors/ev2_secure_messaging.json); the
// NXP reader library (phalMfdfEVx, phalMfdfLight) for the commands those
// documents do not trace (issuance).
const (
	CmdSelectApplication        = 0x5A // AID(3, LE) | — ; —                                     plain, ends authentication
	CmdGetVersion               = 0x60 // — | — ; HW(7) ‖ SW(7) ‖ UID(7) Batch(5) CW YY [FabKeyID]  MAC, 3 frames
	CmdGetCardUID               = 0x51 // — | — ; UID(7 or 10)                                   Full
	CmdGetKeyVersion            = 0x64 // KeyNo(1) | — ; KeyVer(1)                               MAC
	CmdGetApplicationIDs        = 0x6A // — | — ; AID(3)×n                                      MAC, chained
	CmdGetFileIDs               = 0x6F // — | — ; FileNo(1)×n                                   MAC
	CmdGetFileSettings          = 0xF5 // FileNo(1) | — ; FileSettings                          MAC
	CmdGetValue                 = 0x6C // FileNo(1) | — ; Value(4, LE)                          file
	CmdCredit                   = 0x0C // FileNo(1) | Value(4, LE) ; —                          file
	CmdDebit                    = 0xDC // FileNo(1) | Value(4, LE) ; —                          file
	CmdLimitedCredit            = 0x1C // FileNo(1) | Value(4, LE) ; —                          file
	CmdReadData                 = 0xBD // FileNo(1) Offset(3) Length(3) | — ; Data              file
	CmdWriteData                = 0x3D // FileNo(1) Offset(3) Length(3) | Data ; —              file
	CmdReadRecords              = 0xBB // FileNo(1) RecNo(3) RecCount(3) | — ; Records          file
	CmdWriteRecord              = 0x3B // FileNo(1) Offset(3) Length(3) | Data ; —              file
	CmdClearRecordFile          = 0xEB // FileNo(1) | — ; —                                     MAC
	CmdCommitTransaction        = 0xC7 // [Option(1)] | — ; option 01: TMC(4, LE) ‖ TMV(8)      MAC
	CmdCommitReaderID           = 0xC8 // — | TMRI(16) ; EncTMRI(16) when authenticated       MAC
	CmdAbortTransaction         = 0xA7 // — | — ; —                                             MAC
	CmdFormatPICC               = 0xFC // — | — ; —                                             MAC
	CmdCreateApplication        = 0xCA // AID(3) KeySett1 KeySett2 [ISOFileID(2) DFName(1..16)] | — ; —  MAC
	CmdDeleteApplication        = 0xDA // AID(3) | — ; —                                        MAC
	CmdDeleteFile               = 0xDF // FileNo | — ; —                                       MAC
	CmdChangeKey                = 0xC4 // KeyNo(1) | key cryptogram ; —                        Full
	CmdChangeKeySettings        = 0x54 // — | KeySett(1) ; —                                    Full
	CmdGetKeySettings           = 0x45 // — | — ; KeySett1 KeySett2 [KeySett3 …]                MAC
	CmdCreateStdDataFile        = 0xCD // FileNo [ISOFileID(2)] CommSett AccessRights(2) Size(3) | — ; —        MAC
	CmdCreateBackupDataFile     = 0xCB // FileNo [ISOFileID(2)] CommSett AccessRights(2) Size(3) | — ; —        MAC
	CmdCreateValueFile          = 0xCC // FileNo CommSett AccessRights(2) Lower(4) Upper(4) Value(4) LimitedCreditEnabled(1) | — ; —  MAC
	CmdCreateLinearRecordFile   = 0xC1 // FileNo [ISOFileID(2)] CommSett AccessRights(2) RecSize(3) MaxRecs(3) | — ; —  MAC
	CmdCreateCyclicRecordFile   = 0xC0 // FileNo [ISOFileID(2)] CommSett AccessRights(2) RecSize(3) MaxRecs(3) | — ; —  MAC
	CmdCreateTransactionMACFile = 0xCE // FileNo CommSett AccessRights(2) TMKeyOption(1) | TMKey(16) TMKeyVer(1) ; —  Full
	CmdChangeFileSettings       = 0x5F // FileNo(1) | FileOption AccessRights(2) [...] ; —       Full (or as the file's change right allows)
)

// Sizes of command fields.
const (
	// AIDSize is the size of an application identifier.
	AIDSize = 3
	// TMRIValueSize is the size of CommitReaderID's TMRI and EncTMRI.
	TMRIValueSize = TMRISize
)

// ReadMode is the command protection of a command without data that reads
// from a file in mode m: with MAC or Full files the command is MACed (EV2
// sends the MAC over the header; EV1, having no data to protect, only
// chains its CMAC). Full never applies to a command without data.
func ReadMode(m CommMode) CommMode {
	if m == CommPlain {
		return CommPlain
	}
	return CommMAC
}

// writeResp is the answer protection of a write in mode m: the answer has
// no data, so a Full file answers with a MAC only.
func writeResp(m CommMode) CommMode { return ReadMode(m) }

func empty() []byte { return []byte{} }

// noAnswerCmd is a command whose answer carries no data, so it is
// predictable and commands may be pipelined behind it on EV1.
func noAnswerCmd(code byte, name string, header, data []byte, mode, respMode CommMode) *Command {
	return &Command{Code: code, Header: header, Data: data, Mode: mode, RespMode: respMode,
		RespLen: 0, Predictable: true, Predicted: empty(), Name: name}
}

// SelectApplicationCmd selects an application (AID as sent, LSB first;
// 000000 is the PICC level). It is plain and ends any authentication, so
// add it to a pipeline only when no channel is installed.
func SelectApplicationCmd(aid []byte) *Command {
	return noAnswerCmd(CmdSelectApplication, fmt.Sprintf("select application %X", aid), append([]byte(nil), aid...), nil, CommPlain, CommPlain)
}

// SelectApplication selects an application. The card drops the session, so
// the channel is dropped first.
func (c *Card) SelectApplication(ctx context.Context, aid []byte) error {
	if len(aid) != AIDSize {
		return fmt.Errorf("select application: AID of %d bytes: %w", len(aid), ErrParameter)
	}
	c.Deauthenticate()
	_, err := c.Exec(ctx, SelectApplicationCmd(aid))
	return err
}

// GetVersionCmd reads the manufacturing data (three answer frames joined
// by the card session).
func GetVersionCmd(mode CommMode) *Command {
	return &Command{Code: CmdGetVersion, Mode: mode, RespMode: mode, RespLen: -1, Name: "get version"}
}

// GetVersion returns the card's hardware, software and production data.
func (c *Card) GetVersion(ctx context.Context) (*Version, error) {
	d, err := c.Exec(ctx, GetVersionCmd(c.SessionMode()))
	if err != nil {
		return nil, err
	}
	return ParseVersion(d)
}

// VersionPart is the hardware or software part of GetVersion.
type VersionPart struct {
	VendorID     byte // 04 = NXP
	Type         byte // 01 = DESFire, 08 = DESFire Light, 04 = NTAG
	SubType      byte
	Major, Minor byte // 00 = EV0, 01 = EV1, 12 = EV2, 33 = EV3 (major)
	StorageSize  byte // 2^(n>>1) bytes, "+" when the low bit is set
	Protocol     byte // 05 = ISO 14443-2 and -3
}

// Version is the answer to GetVersion: which chip this is, so a script can
// pick EV1 or EV2 authentication and refuse unknown products.
type Version struct {
	Hardware, Software VersionPart
	UID                []byte // 7 bytes
	BatchNo            []byte // 5 bytes (NTAG 424: 4 bytes and FabKey bits)
	ProductionWeek     byte   // BCD
	ProductionYear     byte   // BCD
	// FabKeyID is present on newer products (NTAG 424 DNA, DESFire EV3).
	FabKeyID    byte
	HasFabKeyID bool
}

// ParseVersion parses the joined GetVersion answer: 7 + 7 + 14 bytes, or
// 29 with the FabKeyID byte.
func ParseVersion(data []byte) (*Version, error) {
	r := newRespReader("get version", data)
	part := func() VersionPart {
		b := r.bytes(7)
		if b == nil {
			return VersionPart{}
		}
		return VersionPart{VendorID: b[0], Type: b[1], SubType: b[2], Major: b[3], Minor: b[4], StorageSize: b[5], Protocol: b[6]}
	}
	v := &Version{Hardware: part(), Software: part()}
	v.UID = r.bytes(7)
	v.BatchNo = r.bytes(5)
	v.ProductionWeek = r.byte()
	v.ProductionYear = r.byte()
	if r.err == nil && r.left() == 1 {
		v.FabKeyID, v.HasFabKeyID = r.byte(), true
	}
	if err := r.done(); err != nil {
		return nil, err
	}
	return v, nil
}

// GetCardUIDCmd reads the real UID (Full mode: the command is MACed, the
// answer enciphered). It needs a channel.
func GetCardUIDCmd() *Command {
	return &Command{Code: CmdGetCardUID, Mode: CommMAC, RespMode: CommFull, RespLen: -1, Name: "get card UID"}
}

// GetCardUID reads the real UID over the secure channel (cards with a
// random UID show it only this way).
func (c *Card) GetCardUID(ctx context.Context) ([]byte, error) {
	d, err := c.Exec(ctx, GetCardUIDCmd())
	if err != nil {
		return nil, err
	}
	return ParseCardUID(d)
}

// ParseCardUID checks GetCardUID's answer: a 7-byte UID, or 10 bytes on
// cards with a longer UID.
func ParseCardUID(d []byte) ([]byte, error) {
	switch {
	case len(d) == 7 || len(d) == 10:
		return append([]byte(nil), d...), nil
	case len(d) < 7:
		return nil, fmt.Errorf("card UID of %d bytes: %w", len(d), ErrShortResponse)
	default:
		return nil, fmt.Errorf("card UID of %d bytes: %w", len(d), ErrLongResponse)
	}
}

// GetKeyVersionCmd asks for a key's version without a channel (the usual
// first step, to pick the key before authenticating).
func GetKeyVersionCmd(keyNo byte) *Command { return getKeyVersionCmd(keyNo, CommPlain) }

func getKeyVersionCmd(keyNo byte, mode CommMode) *Command {
	return &Command{Code: CmdGetKeyVersion, Header: []byte{keyNo}, Mode: mode, RespMode: mode, RespLen: 1,
		Name: "get version of key " + strconv.Itoa(int(keyNo))}
}

// GetKeyVersion returns a key's version (MACed when authenticated).
func (c *Card) GetKeyVersion(ctx context.Context, keyNo byte) (byte, error) {
	d, err := c.Exec(ctx, getKeyVersionCmd(keyNo, c.SessionMode()))
	if err != nil {
		return 0, err
	}
	return d[0], nil
}

// GetApplicationIDsCmd lists the applications (PICC level).
func GetApplicationIDsCmd(mode CommMode) *Command {
	return &Command{Code: CmdGetApplicationIDs, Mode: mode, RespMode: mode, RespLen: -1, Name: "get application IDs"}
}

// GetApplicationIDs returns the AIDs on the card, each 3 bytes as sent.
func (c *Card) GetApplicationIDs(ctx context.Context) ([][]byte, error) {
	d, err := c.Exec(ctx, GetApplicationIDsCmd(c.SessionMode()))
	if err != nil {
		return nil, err
	}
	return ParseApplicationIDs(d)
}

// ParseApplicationIDs splits GetApplicationIDs' answer into 3-byte AIDs.
func ParseApplicationIDs(d []byte) ([][]byte, error) {
	if len(d)%AIDSize != 0 {
		return nil, fmt.Errorf("application IDs: %d bytes, not whole AIDs: %w", len(d), ErrLongResponse)
	}
	out := make([][]byte, 0, len(d)/AIDSize)
	for i := 0; i < len(d); i += AIDSize {
		out = append(out, append([]byte(nil), d[i:i+AIDSize]...))
	}
	return out, nil
}

// GetFileIDsCmd lists the files of the selected application.
func GetFileIDsCmd(mode CommMode) *Command {
	return &Command{Code: CmdGetFileIDs, Mode: mode, RespMode: mode, RespLen: -1, Name: "get file IDs"}
}

// GetFileIDs returns the file numbers of the selected application.
func (c *Card) GetFileIDs(ctx context.Context) ([]byte, error) {
	d, err := c.Exec(ctx, GetFileIDsCmd(c.SessionMode()))
	if err != nil {
		return nil, err
	}
	if len(d) > 32 {
		return nil, fmt.Errorf("get file IDs: %d files: %w", len(d), ErrLongResponse)
	}
	return append([]byte(nil), d...), nil
}

// GetFileSettingsCmd reads a file's settings.
func GetFileSettingsCmd(fileNo byte, mode CommMode) *Command {
	name := ""
	if int(fileNo) < len(getFileSettingsNames) {
		name = getFileSettingsNames[fileNo]
	} else {
		name = fmt.Sprintf("get settings of file %d", fileNo)
	}
	return &Command{Code: CmdGetFileSettings, Header: []byte{fileNo}, Mode: mode, RespMode: mode, RespLen: -1, Name: name}
}

// getFileSettingsNames names GetFileSettings for file numbers 0..31
// (DESFire's range) once, not on every session.
var getFileSettingsNames = func() (n [32]string) {
	for i := range n {
		n[i] = fmt.Sprintf("get settings of file %d", i)
	}
	return n
}()

// GetFileSettings returns a file's settings, so a script can check the
// card's layout (comm modes, limits, record sizes) before relying on it.
func (c *Card) GetFileSettings(ctx context.Context, fileNo byte) (*FileSettings, error) {
	d, err := c.Exec(ctx, GetFileSettingsCmd(fileNo, c.SessionMode()))
	if err != nil {
		return nil, err
	}
	fs, err := ParseFileSettings(d)
	if err != nil {
		return nil, fmt.Errorf("settings of file %d: %w", fileNo, err)
	}
	return fs, nil
}

// GetValueCmd reads a value file in its comm mode.
func GetValueCmd(fileNo byte, mode CommMode) *Command {
	return &Command{Code: CmdGetValue, Header: []byte{fileNo}, Mode: ReadMode(mode), RespMode: mode, RespLen: 4,
		Name: "get value of file " + strconv.Itoa(int(fileNo))}
}

// ParseValue decodes a value file's 4-byte signed little-endian value.
func ParseValue(d []byte) (int32, error) {
	r := newRespReader("value", d)
	v := int32(r.u32())
	if err := r.done(); err != nil {
		return 0, err
	}
	return v, nil
}

// GetValue reads a value file.
func (c *Card) GetValue(ctx context.Context, fileNo byte, mode CommMode) (int32, error) {
	d, err := c.Exec(ctx, GetValueCmd(fileNo, mode))
	if err != nil {
		return 0, err
	}
	return ParseValue(d)
}

func valueCmd(code byte, name string, fileNo byte, v int32, mode CommMode) *Command {
	return noAnswerCmd(code, name+" file "+strconv.Itoa(int(fileNo)), []byte{fileNo}, le32(v), mode, writeResp(mode))
}

// CreditCmd adds value to a value file; it takes effect at
// CommitTransaction.
func CreditCmd(fileNo byte, value int32, mode CommMode) *Command {
	return valueCmd(CmdCredit, "credit", fileNo, value, mode)
}

// DebitCmd subtracts value from a value file; it takes effect at
// CommitTransaction.
func DebitCmd(fileNo byte, value int32, mode CommMode) *Command {
	return valueCmd(CmdDebit, "debit", fileNo, value, mode)
}

// LimitedCreditCmd adds at most what the last committed transaction
// debited, with the weaker Write right.
func LimitedCreditCmd(fileNo byte, value int32, mode CommMode) *Command {
	return valueCmd(CmdLimitedCredit, "limited credit", fileNo, value, mode)
}

// Credit adds value to a value file (commit to apply).
func (c *Card) Credit(ctx context.Context, fileNo byte, value int32, mode CommMode) error {
	_, err := c.Exec(ctx, CreditCmd(fileNo, value, mode))
	return err
}

// Debit subtracts value from a value file (commit to apply).
func (c *Card) Debit(ctx context.Context, fileNo byte, value int32, mode CommMode) error {
	_, err := c.Exec(ctx, DebitCmd(fileNo, value, mode))
	return err
}

// LimitedCredit adds at most the last debited amount (commit to apply).
func (c *Card) LimitedCredit(ctx context.Context, fileNo byte, value int32, mode CommMode) error {
	_, err := c.Exec(ctx, LimitedCreditCmd(fileNo, value, mode))
	return err
}

// rangeHeader is FileNo(1) ‖ a(3, LE) ‖ b(3, LE).
func rangeHeader(fileNo byte, a, b uint32) []byte {
	h := make([]byte, 0, 7)
	h = append(h, fileNo)
	h = append(h, le24(a)...)
	return append(h, le24(b)...)
}

func checkRange(what string, a, b uint32) error {
	if a > max24 || b > max24 {
		return fmt.Errorf("%s: %d, %d do not fit 3 bytes: %w", what, a, b, ErrParameter)
	}
	return nil
}

// ReadDataCmd reads length bytes at offset from a data file (length 0:
// to the end of the file, answer length unknown).
func ReadDataCmd(fileNo byte, offset, length uint32, mode CommMode) *Command {
	n := -1
	if length > 0 {
		n = int(length)
	}
	return &Command{Code: CmdReadData, Header: rangeHeader(fileNo, offset, length), Mode: ReadMode(mode), RespMode: mode,
		RespLen: n, Name: fmt.Sprintf("read data of file %d", fileNo)}
}

// ReadData reads a data file.
func (c *Card) ReadData(ctx context.Context, fileNo byte, offset, length uint32, mode CommMode) ([]byte, error) {
	if err := checkRange("read data", offset, length); err != nil {
		return nil, err
	}
	return c.Exec(ctx, ReadDataCmd(fileNo, offset, length, mode))
}

// WriteDataCmd writes data at offset in a data file (backup files apply
// it at commit).
func WriteDataCmd(fileNo byte, offset uint32, data []byte, mode CommMode) *Command {
	return noAnswerCmd(CmdWriteData, fmt.Sprintf("write data of file %d", fileNo),
		rangeHeader(fileNo, offset, uint32(len(data))), append([]byte(nil), data...), mode, writeResp(mode))
}

// WriteData writes a data file; long data goes out in additional frames.
func (c *Card) WriteData(ctx context.Context, fileNo byte, offset uint32, data []byte, mode CommMode) error {
	if err := checkRange("write data", offset, uint32(min(len(data), max24+1))); err != nil {
		return err
	}
	_, err := c.Exec(ctx, WriteDataCmd(fileNo, offset, data, mode))
	return err
}

// ReadRecordsCmd reads count records of recSize bytes starting at recNo
// (0 = the newest; count 0 = all of them). The record size tells the
// channel the answer is a multiple of it (RespLen -recSize), which keeps
// EV1 enciphered answers unambiguous.
func ReadRecordsCmd(fileNo byte, recNo, count uint32, recSize int, mode CommMode) *Command {
	n := -max(recSize, 1)
	return &Command{Code: CmdReadRecords, Header: rangeHeader(fileNo, recNo, count), Mode: ReadMode(mode), RespMode: mode,
		RespLen: n, Name: fmt.Sprintf("read records of file %d", fileNo)}
}

// ReadRecords reads records and splits them by the file's record size
// (newest first, as the card returns them).
func (c *Card) ReadRecords(ctx context.Context, fileNo byte, recNo, count uint32, recordSize int, mode CommMode) ([][]byte, error) {
	if err := checkRange("read records", recNo, count); err != nil {
		return nil, err
	}
	d, err := c.Exec(ctx, ReadRecordsCmd(fileNo, recNo, count, recordSize, mode))
	if err != nil {
		return nil, err
	}
	recs, err := SplitRecords(d, recordSize)
	if err != nil {
		return nil, fmt.Errorf("read records of file %d: %w", fileNo, err)
	}
	if count > 0 && len(recs) != int(count) {
		return nil, fmt.Errorf("read records of file %d: %d records, asked %d: %w", fileNo, len(recs), count, ErrLength)
	}
	return recs, nil
}

// SplitRecords cuts a ReadRecords answer into records of size bytes.
func SplitRecords(d []byte, size int) ([][]byte, error) {
	if size <= 0 || size > max24 {
		return nil, fmt.Errorf("record size %d: %w", size, ErrParameter)
	}
	if len(d)%size != 0 {
		return nil, fmt.Errorf("%d bytes are not whole records of %d: %w", len(d), size, ErrLongResponse)
	}
	out := make([][]byte, 0, len(d)/size)
	for i := 0; i < len(d); i += size {
		out = append(out, append([]byte(nil), d[i:i+size]...))
	}
	return out, nil
}

// WriteRecordCmd writes data at offset into the record being built (a new
// record until commit).
func WriteRecordCmd(fileNo byte, offset uint32, data []byte, mode CommMode) *Command {
	return noAnswerCmd(CmdWriteRecord, "write record of file "+strconv.Itoa(int(fileNo)),
		rangeHeader(fileNo, offset, uint32(len(data))), append([]byte(nil), data...), mode, writeResp(mode))
}

// WriteRecord writes a record (commit to apply).
func (c *Card) WriteRecord(ctx context.Context, fileNo byte, offset uint32, data []byte, mode CommMode) error {
	if err := checkRange("write record", offset, uint32(min(len(data), max24+1))); err != nil {
		return err
	}
	_, err := c.Exec(ctx, WriteRecordCmd(fileNo, offset, data, mode))
	return err
}

// ClearRecordFileCmd empties a record file (at commit).
func ClearRecordFileCmd(fileNo byte, mode CommMode) *Command {
	return noAnswerCmd(CmdClearRecordFile, fmt.Sprintf("clear record file %d", fileNo), []byte{fileNo}, nil, mode, mode)
}

// ClearRecordFile empties a record file (commit to apply).
func (c *Card) ClearRecordFile(ctx context.Context, fileNo byte) error {
	m := c.SessionMode()
	_, err := c.Exec(ctx, ClearRecordFileCmd(fileNo, m))
	return err
}

// CommitTransactionCmd commits the changes of the transaction. withTMAC
// sends option 01, which makes a card with a TransactionMAC file return
// TMC(4, LE) ‖ TMV(8); authenticated selects the MACed form.
func CommitTransactionCmd(withTMAC bool, authenticated bool) *Command {
	mode := CommPlain
	if authenticated {
		mode = CommMAC
	}
	if withTMAC {
		return &Command{Code: CmdCommitTransaction, Header: []byte{0x01}, Mode: mode, RespMode: mode,
			RespLen: CommitTransactionTMACSize, Name: "commit transaction"}
	}
	return noAnswerCmd(CmdCommitTransaction, "commit transaction", nil, nil, mode, mode)
}

// CommitTransaction commits; withTMAC asks for and returns TMC and TMV
// (verify them with TransactionMAC.Verify).
func (c *Card) CommitTransaction(ctx context.Context, withTMAC bool) (tmc uint32, tmv []byte, err error) {
	d, err := c.Exec(ctx, CommitTransactionCmd(withTMAC, c.ch != nil))
	if err != nil || !withTMAC {
		return 0, nil, err
	}
	return ParseCommitTransactionTMAC(d)
}

// AbortTransactionCmd discards the uncommitted changes.
func AbortTransactionCmd(mode CommMode) *Command {
	return noAnswerCmd(CmdAbortTransaction, "abort transaction", nil, nil, mode, mode)
}

// AbortTransaction discards the uncommitted changes.
func (c *Card) AbortTransaction(ctx context.Context) error {
	_, err := c.Exec(ctx, AbortTransactionCmd(c.SessionMode()))
	return err
}

// CommitReaderIDCmd sets the Transaction MAC Reader ID of the ongoing
// transaction; when authenticated (mode MAC) the card answers with the
// previous reader's ID, enciphered (EncTMRI).
func CommitReaderIDCmd(tmri []byte, mode CommMode) *Command {
	n := 0
	if mode != CommPlain {
		n = TMRIValueSize
	}
	return &Command{Code: CmdCommitReaderID, Data: append([]byte(nil), tmri...), Mode: mode, RespMode: mode, RespLen: n,
		Predictable: n == 0, Predicted: empty(), Name: "commit reader ID"}
}

// CommitReaderID sends this reader's 16-byte ID and returns EncTMRI (empty
// when not authenticated).
func (c *Card) CommitReaderID(ctx context.Context, tmri []byte) ([]byte, error) {
	if len(tmri) != TMRIValueSize {
		return nil, fmt.Errorf("commit reader ID: TMRI of %d bytes: %w", len(tmri), ErrParameter)
	}
	return c.Exec(ctx, CommitReaderIDCmd(tmri, c.SessionMode()))
}

// KeySettings is the answer to GetKeySettings.
type KeySettings struct {
	// Settings is KeySett1: what the master key allows (bit 0 change of the
	// master key, 1 free directory listing, 2 free create/delete, 3
	// configuration changeable, 7..4 the ChangeKey access right).
	Settings byte
	// KeySett2 holds the crypto method (bits 7..6: 00 DES/3DES, 01 3K3DES,
	// 10 AES) and the number of keys (bits 3..0); bit 5 is ISO file IDs
	// and bit 4 announces KeySett3 (EV2).
	KeySett2 byte
	// Extra holds what follows KeySett2 on EV2 cards that announce it.
	Extra []byte
}

// MaxKeys is the number of keys of the application.
func (k KeySettings) MaxKeys() int { return int(k.KeySett2 & 0x0F) }

// GetKeySettingsCmd reads the key settings of the selected application
// (or the PICC).
func GetKeySettingsCmd(mode CommMode) *Command {
	return &Command{Code: CmdGetKeySettings, Mode: mode, RespMode: mode, RespLen: -1, Name: "get key settings"}
}

// ParseKeySettings parses KeySett1 ‖ KeySett2, followed by more bytes only
// when KeySett2 bit 4 announces them.
func ParseKeySettings(d []byte) (KeySettings, error) {
	r := newRespReader("key settings", d)
	ks := KeySettings{Settings: r.byte(), KeySett2: r.byte()}
	if r.err == nil && ks.KeySett2&0x10 != 0 && r.left() > 0 {
		ks.Extra = r.bytes(r.left())
	}
	if err := r.done(); err != nil {
		return KeySettings{}, err
	}
	return ks, nil
}

// GetKeySettings reads the key settings.
func (c *Card) GetKeySettings(ctx context.Context) (KeySettings, error) {
	d, err := c.Exec(ctx, GetKeySettingsCmd(c.SessionMode()))
	if err != nil {
		return KeySettings{}, err
	}
	return ParseKeySettings(d)
}

// isoFileID encodes an ISO 7816-4 file identifier, sent LSB first.
func isoFileID(id uint16) []byte { return binary.LittleEndian.AppendUint16(nil, id) }
