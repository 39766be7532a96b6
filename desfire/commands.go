package desfire

import (
	"context"
	"encoding/binary"
	"fmt"
)

// Native command codes. Layouts (after the code) follow the public DESFire
// Light (MF2DLHX0) and NTAG 424 DNA (NT4H2421Gx) data sheets and the
// DESFire EV1 command set as published in libfreefare; Header is sent in
// plain, Data is protected by the comm mode.
const (
	CmdSelectApplication        = 0x5A // AID(3, LE)
	CmdGetVersion               = 0x60 // — ; 3 frames of 7, 7, 14 bytes
	CmdGetCardUID               = 0x51 // — ; UID(7) in Full mode
	CmdGetKeyVersion            = 0x64 // KeyNo(1) ; KeyVer(1)
	CmdGetApplicationIDs        = 0x6A // — ; AID(3)×n
	CmdGetFileIDs               = 0x6F // — ; FileNo(1)×n
	CmdGetFileSettings          = 0xF5 // FileNo(1) ; settings
	CmdGetValue                 = 0x6C // FileNo(1) ; Value(4, LE)
	CmdCredit                   = 0x0C // FileNo(1) | Value(4, LE)
	CmdDebit                    = 0xDC // FileNo(1) | Value(4, LE)
	CmdLimitedCredit            = 0x1C // FileNo(1) | Value(4, LE)
	CmdReadData                 = 0xBD // FileNo(1) | Offset(3) | Length(3) ; data
	CmdWriteData                = 0x3D // FileNo(1) | Offset(3) | Length(3) | Data
	CmdReadRecords              = 0xBB // FileNo(1) | RecNo(3) | RecCount(3) ; records
	CmdWriteRecord              = 0x3B // FileNo(1) | Offset(3) | Length(3) | Data
	CmdClearRecordFile          = 0xEB // FileNo(1)
	CmdCommitTransaction        = 0xC7 // [Option(1)] ; option 01: TMC(4, LE) | TMV(8)
	CmdCommitReaderID           = 0xC8 // TMRI(16) ; EncTMRI(16)
	CmdAbortTransaction         = 0xA7 // —
	CmdFormatPICC               = 0xFC // —
	CmdCreateApplication        = 0xCA // AID(3) | KeySett1 | KeySett2
	CmdDeleteApplication        = 0xDA // AID(3)
	CmdChangeKey                = 0xC4 // KeyNo(1) | cryptogram (Full)
	CmdChangeKeySettings        = 0x54 // KeySett(1) (Full)
	CmdGetKeySettings           = 0x45 // — ; KeySett1 | KeySett2
	CmdCreateStdDataFile        = 0xCD // FileNo | CommSett | Access(2) | Size(3)
	CmdCreateBackupDataFile     = 0xCB // FileNo | CommSett | Access(2) | Size(3)
	CmdCreateValueFile          = 0xCC // FileNo | CommSett | Access(2) | Lower(4) | Upper(4) | Value(4) | LimitedCredit(1)
	CmdCreateLinearRecordFile   = 0xC1 // FileNo | CommSett | Access(2) | RecSize(3) | MaxRecs(3)
	CmdCreateCyclicRecordFile   = 0xC0 // FileNo | CommSett | Access(2) | RecSize(3) | MaxRecs(3)
	CmdCreateTransactionMACFile = 0xCE // FileNo | CommSett | Access(2) | KeyOption(1) ‖ TMKey(16) | TMKeyVer(1) (Full)
	CmdChangeFileSettings       = 0x5F // FileNo ‖ CommSett | Access(2) (Full)
	CmdAdditionalFrame          = 0xAF
)

func le24(v uint32) []byte { return []byte{byte(v), byte(v >> 8), byte(v >> 16)} }

func le32(v int32) []byte { return binary.LittleEndian.AppendUint32(nil, uint32(v)) }

func empty() []byte { return []byte{} }

// plainCmd is a command with no protected data and an empty answer.
func plainCmd(code byte, name string, header ...byte) *Command {
	return &Command{Code: code, Header: header, RespLen: 0, Predictable: true, Predicted: empty(), Name: name}
}

// SelectApplicationCmd selects an application (AID as sent, LSB first).
func SelectApplicationCmd(aid []byte) *Command {
	return plainCmd(CmdSelectApplication, "select application", aid...)
}

// SelectApplication selects an application; it ends any authentication.
func (c *Card) SelectApplication(ctx context.Context, aid []byte) error {
	if len(aid) != 3 {
		return fmt.Errorf("select application: AID of %d bytes: %w", len(aid), ErrParameter)
	}
	c.Deauthenticate()
	_, err := c.Exec(ctx, SelectApplicationCmd(aid))
	return err
}

// GetKeyVersionCmd asks for a key's version.
func GetKeyVersionCmd(keyNo byte) *Command {
	return &Command{Code: CmdGetKeyVersion, Header: []byte{keyNo}, RespLen: 1, Name: "get key version"}
}

// GetKeyVersion returns a key's version.
func (c *Card) GetKeyVersion(ctx context.Context, keyNo byte) (byte, error) {
	d, err := c.Exec(ctx, GetKeyVersionCmd(keyNo))
	if err != nil {
		return 0, err
	}
	return d[0], nil
}

// ReadMode is the command protection of a read from a file in mode m:
// with MAC or Full files the command is MACed (EV2 sends the MAC; EV1,
// having no data to protect, only chains its CMAC).
func ReadMode(m CommMode) CommMode {
	if m == CommPlain {
		return CommPlain
	}
	return CommMAC
}

// GetValueCmd reads a value file.
func GetValueCmd(fileNo byte, mode CommMode) *Command {
	return &Command{Code: CmdGetValue, Header: []byte{fileNo}, Mode: ReadMode(mode), RespMode: mode, RespLen: 4, Name: fmt.Sprintf("get value of file %d", fileNo)}
}

// GetValue reads a value file.
func (c *Card) GetValue(ctx context.Context, fileNo byte, mode CommMode) (int32, error) {
	d, err := c.Exec(ctx, GetValueCmd(fileNo, mode))
	if err != nil {
		return 0, err
	}
	return int32(binary.LittleEndian.Uint32(d)), nil
}

// writeResp is the answer protection of commands that return no data.
func writeResp(m CommMode) CommMode {
	if m == CommFull {
		return CommMAC
	}
	return m
}

func valueCmd(code byte, name string, fileNo byte, v int32, mode CommMode) *Command {
	return &Command{Code: code, Header: []byte{fileNo}, Data: le32(v), Mode: mode, RespMode: writeResp(mode),
		RespLen: 0, Predictable: true, Predicted: empty(), Name: fmt.Sprintf("%s file %d", name, fileNo)}
}

// CreditCmd adds to a value file (takes effect at commit).
func CreditCmd(fileNo byte, v int32, mode CommMode) *Command {
	return valueCmd(CmdCredit, "credit", fileNo, v, mode)
}

// DebitCmd subtracts from a value file (takes effect at commit).
func DebitCmd(fileNo byte, v int32, mode CommMode) *Command {
	return valueCmd(CmdDebit, "debit", fileNo, v, mode)
}

// LimitedCreditCmd adds at most the last debited amount.
func LimitedCreditCmd(fileNo byte, v int32, mode CommMode) *Command {
	return valueCmd(CmdLimitedCredit, "limited credit", fileNo, v, mode)
}

// Credit adds to a value file.
func (c *Card) Credit(ctx context.Context, fileNo byte, v int32, mode CommMode) error {
	_, err := c.Exec(ctx, CreditCmd(fileNo, v, mode))
	return err
}

// Debit subtracts from a value file.
func (c *Card) Debit(ctx context.Context, fileNo byte, v int32, mode CommMode) error {
	_, err := c.Exec(ctx, DebitCmd(fileNo, v, mode))
	return err
}

func rangeHeader(fileNo byte, a, b uint32) []byte {
	h := append([]byte{fileNo}, le24(a)...)
	return append(h, le24(b)...)
}

// ReadDataCmd reads length bytes at offset (0: to the end).
func ReadDataCmd(fileNo byte, offset, length uint32, mode CommMode) *Command {
	n := -1
	if length > 0 {
		n = int(length)
	}
	return &Command{Code: CmdReadData, Header: rangeHeader(fileNo, offset, length), Mode: ReadMode(mode), RespMode: mode, RespLen: n, Name: fmt.Sprintf("read data of file %d", fileNo)}
}

// ReadData reads a data file.
func (c *Card) ReadData(ctx context.Context, fileNo byte, offset, length uint32, mode CommMode) ([]byte, error) {
	return c.Exec(ctx, ReadDataCmd(fileNo, offset, length, mode))
}

// WriteDataCmd writes data at offset.
func WriteDataCmd(fileNo byte, offset uint32, data []byte, mode CommMode) *Command {
	return &Command{Code: CmdWriteData, Header: rangeHeader(fileNo, offset, uint32(len(data))), Data: data, Mode: mode, RespMode: writeResp(mode),
		RespLen: 0, Predictable: true, Predicted: empty(), Name: fmt.Sprintf("write data of file %d", fileNo)}
}

// WriteData writes a data file.
func (c *Card) WriteData(ctx context.Context, fileNo byte, offset uint32, data []byte, mode CommMode) error {
	_, err := c.Exec(ctx, WriteDataCmd(fileNo, offset, data, mode))
	return err
}

// ReadRecordsCmd reads count records of recSize bytes from recNo (0 =
// newest; count 0: all).
func ReadRecordsCmd(fileNo byte, recNo, count uint32, recSize int, mode CommMode) *Command {
	n := -max(recSize, 1)
	if count > 0 && recSize > 0 {
		n = int(count) * recSize
	}
	return &Command{Code: CmdReadRecords, Header: rangeHeader(fileNo, recNo, count), Mode: ReadMode(mode), RespMode: mode, RespLen: n, Name: fmt.Sprintf("read records of file %d", fileNo)}
}

// ReadRecords reads records of recSize bytes.
func (c *Card) ReadRecords(ctx context.Context, fileNo byte, recNo, count uint32, recSize int, mode CommMode) ([]byte, error) {
	return c.Exec(ctx, ReadRecordsCmd(fileNo, recNo, count, recSize, mode))
}

// WriteRecordCmd writes into the record being built.
func WriteRecordCmd(fileNo byte, offset uint32, data []byte, mode CommMode) *Command {
	return &Command{Code: CmdWriteRecord, Header: rangeHeader(fileNo, offset, uint32(len(data))), Data: data, Mode: mode, RespMode: writeResp(mode),
		RespLen: 0, Predictable: true, Predicted: empty(), Name: fmt.Sprintf("write record of file %d", fileNo)}
}

// WriteRecord writes a record.
func (c *Card) WriteRecord(ctx context.Context, fileNo byte, offset uint32, data []byte, mode CommMode) error {
	_, err := c.Exec(ctx, WriteRecordCmd(fileNo, offset, data, mode))
	return err
}

// ClearRecordFile empties a record file (at commit).
func (c *Card) ClearRecordFile(ctx context.Context, fileNo byte) error {
	cmd := plainCmd(CmdClearRecordFile, "clear record file", fileNo)
	cmd.Mode, cmd.RespMode = c.macIfAuth(), c.macIfAuth()
	_, err := c.Exec(ctx, cmd)
	return err
}

func (c *Card) macIfAuth() CommMode {
	if c.ch != nil {
		return CommMAC
	}
	return CommPlain
}

// CommitTransactionCmd commits; withTMAC asks for TMC ‖ TMV (option 01).
func CommitTransactionCmd(withTMAC bool, authenticated bool) *Command {
	mode := CommPlain
	if authenticated {
		mode = CommMAC
	}
	if withTMAC {
		return &Command{Code: CmdCommitTransaction, Header: []byte{0x01}, Mode: mode, RespMode: mode, RespLen: CommitTransactionTMACSize, Name: "commit transaction"}
	}
	return &Command{Code: CmdCommitTransaction, Mode: mode, RespMode: mode, RespLen: 0, Predictable: true, Predicted: empty(), Name: "commit transaction"}
}

// CommitTransaction commits; with TMAC it returns TMC and TMV.
func (c *Card) CommitTransaction(ctx context.Context, withTMAC bool) (tmc uint32, tmv []byte, err error) {
	d, err := c.Exec(ctx, CommitTransactionCmd(withTMAC, c.ch != nil))
	if err != nil || !withTMAC {
		return 0, nil, err
	}
	return ParseCommitTransactionTMAC(d)
}

// AbortTransaction discards uncommitted changes.
func (c *Card) AbortTransaction(ctx context.Context) error {
	cmd := plainCmd(CmdAbortTransaction, "abort transaction")
	cmd.Mode, cmd.RespMode = c.macIfAuth(), c.macIfAuth()
	_, err := c.Exec(ctx, cmd)
	return err
}

// GetCardUIDCmd reads the real UID (Full mode).
func GetCardUIDCmd() *Command {
	return &Command{Code: CmdGetCardUID, Mode: CommMAC, RespMode: CommFull, RespLen: -1, Name: "get card UID"}
}

// GetCardUID reads the real UID over the secure channel.
func (c *Card) GetCardUID(ctx context.Context) ([]byte, error) {
	d, err := c.Exec(ctx, GetCardUIDCmd())
	if err != nil {
		return nil, err
	}
	if len(d) != 4 && len(d) != 7 && len(d) != 10 {
		return nil, fmt.Errorf("card UID of %d bytes: %w", len(d), ErrLongResponse)
	}
	return d, nil
}

// issuance: commands answered without data.
func (c *Card) adminExec(ctx context.Context, code byte, name string, header, data []byte, mode CommMode) error {
	if mode == CommPlain {
		mode = c.macIfAuth()
	}
	cmd := &Command{Code: code, Header: header, Data: data, Mode: mode, RespMode: c.macIfAuth(), RespLen: 0, Predictable: true, Predicted: empty(), Name: name}
	_, err := c.Exec(ctx, cmd)
	return err
}

// FormatPICC erases every application (PICC master key needed).
func (c *Card) FormatPICC(ctx context.Context) error {
	return c.adminExec(ctx, CmdFormatPICC, "format PICC", nil, nil, CommPlain)
}

// CreateApplication creates an application (PICC level).
func (c *Card) CreateApplication(ctx context.Context, aid []byte, keySett1, keySett2 byte) error {
	h := append(append([]byte(nil), aid...), keySett1, keySett2)
	return c.adminExec(ctx, CmdCreateApplication, "create application", h, nil, CommPlain)
}

// DeleteApplication deletes an application.
func (c *Card) DeleteApplication(ctx context.Context, aid []byte) error {
	return c.adminExec(ctx, CmdDeleteApplication, "delete application", aid, nil, CommPlain)
}

func fileHeader(fileNo, comm byte, access []byte, rest ...[]byte) []byte {
	h := append([]byte{fileNo, comm}, access...)
	for _, r := range rest {
		h = append(h, r...)
	}
	return h
}

// CreateStdDataFile creates a standard data file.
func (c *Card) CreateStdDataFile(ctx context.Context, fileNo, comm byte, access []byte, size uint32) error {
	return c.adminExec(ctx, CmdCreateStdDataFile, "create standard data file", fileHeader(fileNo, comm, access, le24(size)), nil, CommPlain)
}

// CreateBackupDataFile creates a backup data file.
func (c *Card) CreateBackupDataFile(ctx context.Context, fileNo, comm byte, access []byte, size uint32) error {
	return c.adminExec(ctx, CmdCreateBackupDataFile, "create backup data file", fileHeader(fileNo, comm, access, le24(size)), nil, CommPlain)
}

// CreateValueFile creates a value file.
func (c *Card) CreateValueFile(ctx context.Context, fileNo, comm byte, access []byte, lower, upper, value int32, limitedCredit bool) error {
	lc := byte(0)
	if limitedCredit {
		lc = 1
	}
	h := fileHeader(fileNo, comm, access, le32(lower), le32(upper), le32(value), []byte{lc})
	return c.adminExec(ctx, CmdCreateValueFile, "create value file", h, nil, CommPlain)
}

// CreateLinearRecordFile creates a linear record file.
func (c *Card) CreateLinearRecordFile(ctx context.Context, fileNo, comm byte, access []byte, recSize, maxRecs uint32) error {
	return c.adminExec(ctx, CmdCreateLinearRecordFile, "create linear record file", fileHeader(fileNo, comm, access, le24(recSize), le24(maxRecs)), nil, CommPlain)
}

// CreateCyclicRecordFile creates a cyclic record file.
func (c *Card) CreateCyclicRecordFile(ctx context.Context, fileNo, comm byte, access []byte, recSize, maxRecs uint32) error {
	return c.adminExec(ctx, CmdCreateCyclicRecordFile, "create cyclic record file", fileHeader(fileNo, comm, access, le24(recSize), le24(maxRecs)), nil, CommPlain)
}

// CreateTransactionMACFile creates the Transaction MAC file; the key is
// sent enciphered (Full mode).
func (c *Card) CreateTransactionMACFile(ctx context.Context, fileNo, comm byte, access []byte, tmKey []byte, tmKeyVer byte) error {
	h := fileHeader(fileNo, comm, access, []byte{0x02}) // key option: AES
	d := append(append([]byte(nil), tmKey...), tmKeyVer)
	return c.adminExec(ctx, CmdCreateTransactionMACFile, "create transaction MAC file", h, d, CommFull)
}

// ChangeKey changes key keyNo while authenticated with authKeyNo; oldKey is
// needed when they differ.
func (c *Card) ChangeKey(ctx context.Context, keyNo, authKeyNo byte, newKey, oldKey []byte, version byte) error {
	if c.ch == nil {
		return fmt.Errorf("change key %d: %w", keyNo, ErrNotAuthenticated)
	}
	var cmd *Command
	var err error
	switch c.ch.Generation() {
	case "ev2":
		cmd, err = EV2ChangeKey(keyNo, authKeyNo, newKey, oldKey, version)
	default:
		cmd, err = EV1ChangeKey(keyNo, authKeyNo, newKey, oldKey, version)
	}
	if err != nil {
		return fmt.Errorf("change key %d: %w", keyNo, err)
	}
	_, err = c.Exec(ctx, cmd)
	if keyNo&0x3F == authKeyNo&0x3F {
		c.ch = nil // the card ended the session
	}
	return err
}
