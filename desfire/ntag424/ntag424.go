// Package ntag424 holds the NTAG 424 DNA commands and layouts the relay
// needs to personalise a tag: ISO selection of the NDEF application by
// name, the capability container, the NDEF file with its Secure Dynamic
// Messaging (SDM) settings computed from a URL template, and the key
// change rules. Everything is written from the public NT4H2421Gx data
// sheet and NXP AN12196; commands run over desfire.Card with EV2 secure
// messaging, which the tag shares with DESFire EV2.
//
// The package does no I/O of its own beyond the desfire.Transport it is
// given, and never panics on bytes from a tag or a bridge.
package ntag424

import (
	"context"
	"errors"
	"fmt"

	"github.com/desfire-relay/relay/desfire"
)

// Application and files of an NTAG 424 DNA (NT4H2421Gx section 8.2.2,
// Table 8 "File management").
const (
	// FileCC is the capability container (ISO FID E103, 32 bytes).
	FileCC byte = 0x01
	// FileNDEF is the NDEF file (ISO FID E104, 256 bytes).
	FileNDEF byte = 0x02
	// FileProprietary is the proprietary file (ISO FID E105, 128 bytes).
	FileProprietary byte = 0x03

	// CCSize, NDEFSize and ProprietarySize are the file sizes.
	CCSize          = 32
	NDEFSize        = 256
	ProprietarySize = 128

	// NumKeys is the number of application keys (0..4), AES-128.
	NumKeys = 5
	// FactoryKeyVersion is the version of every key in factory state.
	FactoryKeyVersion byte = 0x00
)

// Native command codes that differ from DESFire EV2 (NT4H2421Gx section
// 10, Table 22). The rest (AuthenticateEV2First 71, ChangeKey C4,
// GetKeyVersion 64, GetFileSettings F5, ChangeFileSettings 5F,
// GetCardUID 51) are shared with desfire.
const (
	// CmdReadData is FileNo(1) Offset(3, LE) Length(3, LE) | — ; Data.
	CmdReadData byte = 0xAD
	// CmdWriteData is FileNo(1) Offset(3, LE) Length(3, LE) | Data ; —.
	CmdWriteData byte = 0x8D
	// CmdSetConfiguration is Option(1) | Data ; — (Full, key 0).
	CmdSetConfiguration byte = 0x5C
)

// SetConfiguration options and bits (NT4H2421Gx section 10.5.1).
const (
	// ConfigPICC is option 00: PICCConfig(1).
	ConfigPICC byte = 0x00
	// PICCUseRandomID is PICCConfig bit 1: anticollision shows a random
	// ID from the next activation on; it cannot be switched off again.
	PICCUseRandomID byte = 0x02
	// ConfigTagTamper is option 07 of NTAG 424 DNA TagTamper
	// (NT4H2421Tx): TTEnable(1) ‖ TTStatus access right(1). Plain NTAG
	// 424 DNA refuses it.
	ConfigTagTamper byte = 0x07
	// TTEnable is the TTEnable value that switches tamper detection on.
	TTEnable byte = 0x01
)

// TagTamper status characters (NTAG 424 DNA TagTamper): the tag mirrors
// two of them, the permanent status (open once the loop was ever seen
// open) then the current one, as ASCII into the SDM encrypted file data,
// where the SDMMAC covers them (AN12196 section 7; nfc-developer
// sdm-backend reads them from the first two decrypted bytes).
const (
	TTClosed  byte = 'C'
	TTOpen    byte = 'O'
	TTInvalid byte = 'I'
)

// TTStatusLen is the length of the mirrored TagTamper status.
const TTStatusLen = 2

// SetConfigurationCmd sets a configuration option; the data travels in
// Full mode and the answer is MACed, so its success is card-authenticated.
func SetConfigurationCmd(option byte, data []byte) *desfire.Command {
	return &desfire.Command{Code: CmdSetConfiguration, Header: []byte{option}, Data: append([]byte(nil), data...),
		Mode: desfire.CommFull, RespMode: desfire.CommMAC, RespLen: 0, Predictable: true, Predicted: []byte{},
		Name: fmt.Sprintf("set configuration %02X", option)}
}

// IsRandomID reports whether an anticollision ID is a random ID (4
// bytes, first byte 08, ISO/IEC 14443-3).
func IsRandomID(id []byte) bool { return len(id) == 4 && id[0] == 0x08 }

// AppName is the ISO DF name of the NDEF application (NFC Forum Type 4
// Tag, NT4H2421Gx section 8.2.2).
var AppName = []byte{0xD2, 0x76, 0x00, 0x00, 0x85, 0x01, 0x01}

// ISO file identifiers of the three files.
var (
	FIDCC          = [2]byte{0xE1, 0x03}
	FIDNDEF        = [2]byte{0xE1, 0x04}
	FIDProprietary = [2]byte{0xE1, 0x05}
)

// ErrSelect is returned when the tag does not answer 9000 to the ISO
// SELECT of the NDEF application (not an NTAG 424 DNA, or a tag lost).
var ErrSelect = errors.New("ntag424: NDEF application not selected")

// SelectAppAPDU is ISOSelectFile by DF name: 00 A4 04 0C 07 D2760000850101
// 00 (P1 04: select by name, P2 0C: no FCI; AN12196 section 4.3 trace).
func SelectAppAPDU() []byte {
	apdu := []byte{0x00, 0xA4, 0x04, 0x0C, byte(len(AppName))}
	apdu = append(apdu, AppName...)
	return append(apdu, 0x00)
}

// SelectFileAPDU is ISOSelectFile of an elementary file by its FID inside
// the selected application: 00 A4 00 0C 02 FID 00.
func SelectFileAPDU(fid [2]byte) []byte {
	return []byte{0x00, 0xA4, 0x00, 0x0C, 0x02, fid[0], fid[1], 0x00}
}

// ReadBinaryAPDU is ISOReadBinary of the selected file: 00 B0 off(2, BE)
// Le (0 = up to 256 bytes).
func ReadBinaryAPDU(offset uint16, le byte) []byte {
	return []byte{0x00, 0xB0, byte(offset >> 8), byte(offset), le}
}

// SelectApp selects the NDEF application by name over t. The answer is a
// bare status word: a bridge can forge it, so a successful select proves
// nothing until an authentication succeeds.
func SelectApp(ctx context.Context, t desfire.Transport) error {
	r, err := t.Transmit(ctx, SelectAppAPDU())
	if err != nil {
		return fmt.Errorf("select NDEF application: %w", err)
	}
	sw, err := desfire.StatusWord(r)
	if err != nil {
		return fmt.Errorf("select NDEF application: %w", err)
	}
	if sw != 0x9000 || len(r) != 2 {
		return fmt.Errorf("select NDEF application: SW %04X, %d bytes: %w", sw, len(r), ErrSelect)
	}
	return nil
}

// WriteDataCmd writes data at offset of a standard data file (native
// 8D; the header FileNo ‖ Offset(3) ‖ Length(3) is MACed, the data
// protected by mode).
func WriteDataCmd(fileNo byte, offset uint32, data []byte, mode desfire.CommMode) *desfire.Command {
	c := desfire.WriteDataCmd(fileNo, offset, data, mode)
	c.Code = CmdWriteData
	return c
}

// ReadDataCmd reads length bytes at offset (native AD).
func ReadDataCmd(fileNo byte, offset, length uint32, mode desfire.CommMode) *desfire.Command {
	c := desfire.ReadDataCmd(fileNo, offset, length, mode)
	c.Code = CmdReadData
	return c
}

// GetKeyVersionCmd asks for a key's version; mode is MAC inside an
// authenticated session, so the answer is card-authenticated evidence of
// which version the key holds.
func GetKeyVersionCmd(keyNo byte, mode desfire.CommMode) *desfire.Command {
	return &desfire.Command{Code: desfire.CmdGetKeyVersion, Header: []byte{keyNo}, Mode: desfire.ReadMode(mode), RespMode: mode,
		RespLen: 1, Name: fmt.Sprintf("get version of key %d", keyNo)}
}

// GetFileSettingsCmd reads a file's settings (MAC mode when
// authenticated).
func GetFileSettingsCmd(fileNo byte, mode desfire.CommMode) *desfire.Command {
	return desfire.GetFileSettingsCmd(fileNo, mode)
}

// ChangeKeyCmd changes key keyNo while authenticated with key 0 (the
// only key with the right to change keys in the NDEF application,
// NT4H2421Gx section 10.6.1): for keys 1..4 the cryptogram is (new ⊕
// old) ‖ version ‖ CRC32(new), which needs the key's current value (a
// wrong one leaves the key unchanged and the tag answers 911E); for key 0
// it is new ‖ version and the session ends.
func ChangeKeyCmd(keyNo byte, newKey, oldKey []byte, version byte) (*desfire.Command, error) {
	if keyNo >= NumKeys {
		return nil, fmt.Errorf("change key %d: %w", keyNo, desfire.ErrParameter)
	}
	return desfire.EV2ChangeKey(keyNo, 0, newKey, oldKey, version)
}

// ChangeFileSettingsCmd changes the settings of a file, always in Full
// mode (NT4H2421Gx section 10.7.1: CommMode.Full for ChangeFileSettings).
func ChangeFileSettingsCmd(fileNo byte, fs FileSettings) (*desfire.Command, error) {
	b, err := fs.Encode()
	if err != nil {
		return nil, fmt.Errorf("change settings of file %d: %w", fileNo, err)
	}
	return desfire.ChangeFileSettingsCmd(fileNo, b, desfire.CommFull), nil
}
