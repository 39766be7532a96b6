package desfire

import (
	"context"
	"fmt"
)

// Issuance commands: creating applications and files, keys and settings.
// They answer without data. Their data-sheet mode is MAC (MACed when
// authenticated), except ChangeKey, ChangeKeySettings,
// CreateTransactionMACFile (they carry keys or key settings: Full) and
// ChangeFileSettings (Full unless the file's change right is free).

// FormatPICCCmd erases every application (PICC master key needed).
func FormatPICCCmd(mode CommMode) *Command {
	return noAnswerCmd(CmdFormatPICC, "format PICC", nil, nil, mode, mode)
}

// FormatPICC erases every application.
func (c *Card) FormatPICC(ctx context.Context) error {
	_, err := c.Exec(ctx, FormatPICCCmd(c.SessionMode()))
	return err
}

// Application describes a new application for CreateApplication.
type Application struct {
	AID      []byte // 3 bytes, as sent (LSB first)
	KeySett1 byte   // master key settings
	KeySett2 byte   // crypto method (bits 7..6), ISO file IDs (bit 5), number of keys (bits 3..0)
	// ISOFileID and DFName are sent when KeySett2 bit 5 is set: the
	// application's ISO 7816-4 file identifier and DF name (1..16 bytes).
	ISOFileID uint16
	DFName    []byte
}

// CreateApplicationCmd creates an application at PICC level.
func CreateApplicationCmd(app Application, mode CommMode) (*Command, error) {
	if len(app.AID) != AIDSize {
		return nil, fmt.Errorf("create application: AID of %d bytes: %w", len(app.AID), ErrParameter)
	}
	h := append(append(make([]byte, 0, 5+2+16), app.AID...), app.KeySett1, app.KeySett2)
	if app.KeySett2&0x20 != 0 {
		if len(app.DFName) == 0 || len(app.DFName) > 16 {
			return nil, fmt.Errorf("create application %X: DF name of %d bytes: %w", app.AID, len(app.DFName), ErrParameter)
		}
		h = append(append(h, isoFileID(app.ISOFileID)...), app.DFName...)
	} else if len(app.DFName) != 0 || app.ISOFileID != 0 {
		return nil, fmt.Errorf("create application %X: ISO names need KeySett2 bit 5: %w", app.AID, ErrParameter)
	}
	return noAnswerCmd(CmdCreateApplication, fmt.Sprintf("create application %X", app.AID), h, nil, mode, mode), nil
}

// CreateApplication creates an application with keySett1 and keySett2 and
// no ISO names.
func (c *Card) CreateApplication(ctx context.Context, aid []byte, keySett1, keySett2 byte) error {
	return c.CreateApplicationWith(ctx, Application{AID: aid, KeySett1: keySett1, KeySett2: keySett2})
}

// CreateApplicationWith creates the application app (with ISO names when
// KeySett2 bit 5 is set).
func (c *Card) CreateApplicationWith(ctx context.Context, app Application) error {
	cmd, err := CreateApplicationCmd(app, c.SessionMode())
	if err != nil {
		return err
	}
	_, err = c.Exec(ctx, cmd)
	return err
}

// DeleteApplicationCmd deletes an application.
func DeleteApplicationCmd(aid []byte, mode CommMode) *Command {
	return noAnswerCmd(CmdDeleteApplication, fmt.Sprintf("delete application %X", aid), append([]byte(nil), aid...), nil, mode, mode)
}

// DeleteApplication deletes an application.
func (c *Card) DeleteApplication(ctx context.Context, aid []byte) error {
	if len(aid) != AIDSize {
		return fmt.Errorf("delete application: AID of %d bytes: %w", len(aid), ErrParameter)
	}
	_, err := c.Exec(ctx, DeleteApplicationCmd(aid, c.SessionMode()))
	return err
}

// DeleteFileCmd deletes a file of the selected application.
func DeleteFileCmd(fileNo byte, mode CommMode) *Command {
	return noAnswerCmd(CmdDeleteFile, fmt.Sprintf("delete file %d", fileNo), []byte{fileNo}, nil, mode, mode)
}

// DeleteFile deletes a file of the selected application (authenticated
// with the application master key, or free when its settings allow).
func (c *Card) DeleteFile(ctx context.Context, fileNo byte) error {
	_, err := c.Exec(ctx, DeleteFileCmd(fileNo, c.SessionMode()))
	return err
}

// ChangeKey changes key keyNo while the session is authenticated with key
// authKeyNo; oldKey is needed when they differ. The cryptogram comes from
// the channel's generation (EV1ChangeKey or EV2ChangeKey). Changing the
// authenticated key ends the session, so the channel is dropped then.
func (c *Card) ChangeKey(ctx context.Context, keyNo, authKeyNo byte, newKey, oldKey []byte, version byte) error {
	if c.ch == nil {
		return fmt.Errorf("change key %d: %w", keyNo, ErrNotAuthenticated)
	}
	build := EV1ChangeKey
	if c.ch.Generation() == "ev2" {
		build = EV2ChangeKey
	}
	cmd, err := build(keyNo, authKeyNo, newKey, oldKey, version)
	if err != nil {
		return c.fail(fmt.Errorf("change key %d: %w", keyNo, err))
	}
	_, err = c.Exec(ctx, cmd)
	if keyNo&0x3F == authKeyNo&0x3F {
		c.Deauthenticate()
	}
	return err
}

// ChangeKeySettingsCmd sets KeySett1 of the selected application (or the
// PICC); the settings travel enciphered.
func ChangeKeySettingsCmd(keySett byte) *Command {
	return noAnswerCmd(CmdChangeKeySettings, "change key settings", nil, []byte{keySett}, CommFull, CommMAC)
}

// ChangeKeySettings sets KeySett1 (needs a channel).
func (c *Card) ChangeKeySettings(ctx context.Context, keySett byte) error {
	_, err := c.Exec(ctx, ChangeKeySettingsCmd(keySett))
	return err
}

// DataFile describes a standard or backup data file.
type DataFile struct {
	FileNo    byte
	ISOFileID []byte // nil, or 2 bytes (LSB first) in applications with ISO IDs
	CommSett  byte   // comm mode (bits 1..0), additional access rights (bit 7)
	Access    []byte // 2 bytes: RW|Change, Read|Write
	Size      uint32
}

// RecordFile describes a linear or cyclic record file.
type RecordFile struct {
	FileNo     byte
	ISOFileID  []byte
	CommSett   byte
	Access     []byte
	RecordSize uint32
	MaxRecords uint32
}

// ValueFile describes a value file.
type ValueFile struct {
	FileNo       byte
	CommSett     byte
	Access       []byte
	Lower, Upper int32
	Value        int32
	// Flags is LimitedCreditEnabled: bit 0 limited credit, bit 1 free
	// GetValue.
	Flags byte
}

// fileHead is FileNo [ISOFileID(2)] CommSett AccessRights(2).
func fileHead(what string, fileNo byte, iso []byte, comm byte, access []byte) ([]byte, error) {
	if len(iso) != 0 && len(iso) != 2 {
		return nil, fmt.Errorf("%s %d: ISO file ID of %d bytes: %w", what, fileNo, len(iso), ErrParameter)
	}
	if len(access) != 2 {
		return nil, fmt.Errorf("%s %d: access rights of %d bytes: %w", what, fileNo, len(access), ErrParameter)
	}
	h := append(append([]byte{fileNo}, iso...), comm)
	return append(h, access...), nil
}

func dataFileCmd(code byte, what string, f DataFile, mode CommMode) (*Command, error) {
	h, err := fileHead(what, f.FileNo, f.ISOFileID, f.CommSett, f.Access)
	if err != nil {
		return nil, err
	}
	if f.Size == 0 || f.Size > max24 {
		return nil, fmt.Errorf("%s %d: size %d: %w", what, f.FileNo, f.Size, ErrParameter)
	}
	return noAnswerCmd(code, fmt.Sprintf("%s %d", what, f.FileNo), append(h, le24(f.Size)...), nil, mode, mode), nil
}

// CreateStdDataFileCmd creates a standard data file.
func CreateStdDataFileCmd(f DataFile, mode CommMode) (*Command, error) {
	return dataFileCmd(CmdCreateStdDataFile, "create standard data file", f, mode)
}

// CreateBackupDataFileCmd creates a backup data file (writes apply at
// commit).
func CreateBackupDataFileCmd(f DataFile, mode CommMode) (*Command, error) {
	return dataFileCmd(CmdCreateBackupDataFile, "create backup data file", f, mode)
}

func recordFileCmd(code byte, what string, f RecordFile, mode CommMode) (*Command, error) {
	h, err := fileHead(what, f.FileNo, f.ISOFileID, f.CommSett, f.Access)
	if err != nil {
		return nil, err
	}
	if f.RecordSize == 0 || f.RecordSize > max24 || f.MaxRecords == 0 || f.MaxRecords > max24 {
		return nil, fmt.Errorf("%s %d: %d records of %d bytes: %w", what, f.FileNo, f.MaxRecords, f.RecordSize, ErrParameter)
	}
	h = append(append(h, le24(f.RecordSize)...), le24(f.MaxRecords)...)
	return noAnswerCmd(code, fmt.Sprintf("%s %d", what, f.FileNo), h, nil, mode, mode), nil
}

// CreateLinearRecordFileCmd creates a linear record file.
func CreateLinearRecordFileCmd(f RecordFile, mode CommMode) (*Command, error) {
	return recordFileCmd(CmdCreateLinearRecordFile, "create linear record file", f, mode)
}

// CreateCyclicRecordFileCmd creates a cyclic record file (the oldest
// record is overwritten when full; one record is kept free for the next
// write, so MaxRecords must be at least 2).
func CreateCyclicRecordFileCmd(f RecordFile, mode CommMode) (*Command, error) {
	return recordFileCmd(CmdCreateCyclicRecordFile, "create cyclic record file", f, mode)
}

// CreateValueFileCmd creates a value file.
func CreateValueFileCmd(f ValueFile, mode CommMode) (*Command, error) {
	h, err := fileHead("create value file", f.FileNo, nil, f.CommSett, f.Access)
	if err != nil {
		return nil, err
	}
	if f.Lower > f.Upper || f.Value < f.Lower || f.Value > f.Upper {
		return nil, fmt.Errorf("create value file %d: %d <= %d <= %d does not hold: %w", f.FileNo, f.Lower, f.Value, f.Upper, ErrParameter)
	}
	h = append(h, le32(f.Lower)...)
	h = append(h, le32(f.Upper)...)
	h = append(h, le32(f.Value)...)
	h = append(h, f.Flags)
	return noAnswerCmd(CmdCreateValueFile, fmt.Sprintf("create value file %d", f.FileNo), h, nil, mode, mode), nil
}

// CreateTransactionMACFileCmd creates the Transaction MAC file with its
// AES key (TMKeyOption 02). Header FileNo ‖ CommSett ‖ AccessRights ‖
// TMKeyOption, Data TMKey ‖ TMKeyVer (NXP reader library
// phalMfdfLight_Sw_CreateTransactionMacFile): Full when authenticated,
// plain otherwise.
func CreateTransactionMACFileCmd(fileNo, comm byte, access, tmKey []byte, tmKeyVer byte, authenticated bool) (*Command, error) {
	h, err := fileHead("create transaction MAC file", fileNo, nil, comm, access)
	if err != nil {
		return nil, err
	}
	if len(tmKey) != 16 {
		return nil, fmt.Errorf("create transaction MAC file %d: key of %d bytes: %w", fileNo, len(tmKey), ErrParameter)
	}
	mode, resp := CommPlain, CommPlain
	if authenticated {
		mode, resp = CommFull, CommMAC
	}
	d := append(append(make([]byte, 0, 17), tmKey...), tmKeyVer)
	return noAnswerCmd(CmdCreateTransactionMACFile, fmt.Sprintf("create transaction MAC file %d", fileNo),
		append(h, 0x02), d, mode, resp), nil
}

func (c *Card) execBuilt(ctx context.Context, cmd *Command, err error) error {
	if err != nil {
		return err
	}
	_, err = c.Exec(ctx, cmd)
	return err
}

// CreateStdDataFile creates a standard data file.
func (c *Card) CreateStdDataFile(ctx context.Context, fileNo, comm byte, access []byte, size uint32) error {
	cmd, err := CreateStdDataFileCmd(DataFile{FileNo: fileNo, CommSett: comm, Access: access, Size: size}, c.SessionMode())
	return c.execBuilt(ctx, cmd, err)
}

// CreateBackupDataFile creates a backup data file.
func (c *Card) CreateBackupDataFile(ctx context.Context, fileNo, comm byte, access []byte, size uint32) error {
	cmd, err := CreateBackupDataFileCmd(DataFile{FileNo: fileNo, CommSett: comm, Access: access, Size: size}, c.SessionMode())
	return c.execBuilt(ctx, cmd, err)
}

// CreateValueFile creates a value file; limitedCredit enables
// LimitedCredit.
func (c *Card) CreateValueFile(ctx context.Context, fileNo, comm byte, access []byte, lower, upper, value int32, limitedCredit bool) error {
	f := ValueFile{FileNo: fileNo, CommSett: comm, Access: access, Lower: lower, Upper: upper, Value: value}
	if limitedCredit {
		f.Flags = 0x01
	}
	cmd, err := CreateValueFileCmd(f, c.SessionMode())
	return c.execBuilt(ctx, cmd, err)
}

// CreateLinearRecordFile creates a linear record file.
func (c *Card) CreateLinearRecordFile(ctx context.Context, fileNo, comm byte, access []byte, recSize, maxRecs uint32) error {
	cmd, err := CreateLinearRecordFileCmd(RecordFile{FileNo: fileNo, CommSett: comm, Access: access, RecordSize: recSize, MaxRecords: maxRecs}, c.SessionMode())
	return c.execBuilt(ctx, cmd, err)
}

// CreateCyclicRecordFile creates a cyclic record file.
func (c *Card) CreateCyclicRecordFile(ctx context.Context, fileNo, comm byte, access []byte, recSize, maxRecs uint32) error {
	cmd, err := CreateCyclicRecordFileCmd(RecordFile{FileNo: fileNo, CommSett: comm, Access: access, RecordSize: recSize, MaxRecords: maxRecs}, c.SessionMode())
	return c.execBuilt(ctx, cmd, err)
}

// CreateTransactionMACFile creates the Transaction MAC file; the key is
// sent enciphered when a channel is installed.
func (c *Card) CreateTransactionMACFile(ctx context.Context, fileNo, comm byte, access []byte, tmKey []byte, tmKeyVer byte) error {
	cmd, err := CreateTransactionMACFileCmd(fileNo, comm, access, tmKey, tmKeyVer, c.ch != nil)
	return c.execBuilt(ctx, cmd, err)
}

// ChangeFileSettingsCmd replaces a file's settings: settings is FileOption
// ‖ AccessRights(2) [‖ the type's optional parts, e.g. additional access
// rights or SDM settings], protected by mode (Full unless the file's change
// right is free, then plain).
func ChangeFileSettingsCmd(fileNo byte, settings []byte, mode CommMode) *Command {
	return noAnswerCmd(CmdChangeFileSettings, fmt.Sprintf("change settings of file %d", fileNo),
		[]byte{fileNo}, append([]byte(nil), settings...), mode, writeResp(mode))
}

// ChangeFileSettings replaces a file's settings.
func (c *Card) ChangeFileSettings(ctx context.Context, fileNo byte, settings []byte, mode CommMode) error {
	if len(settings) < 3 {
		return fmt.Errorf("change settings of file %d: %d bytes: %w", fileNo, len(settings), ErrParameter)
	}
	_, err := c.Exec(ctx, ChangeFileSettingsCmd(fileNo, settings, mode))
	return err
}
