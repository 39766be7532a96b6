package sdm

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/desfire-relay/relay/desfire/dfcrypto"
)

// Sizes in SDM messages (NT4H2421Gx section 9.3).
const (
	// UIDSize is the size of the mirrored UID.
	UIDSize = 7
	// ReadCtrSize is the size of SDMReadCtr (sent least significant byte
	// first inside PICCData and the session vectors).
	ReadCtrSize = 3
	// MACSize is the size of SDMMAC (a truncated CMAC).
	MACSize = 8
	// MaxReadCtr is the largest SDMReadCtr.
	MaxReadCtr = 1<<24 - 1
)

// PICCDataTag bits (NT4H2421Gx section 9.3.4).
const (
	tagUIDMirror     = 0x80
	tagReadCtrMirror = 0x40
	tagRFU           = 0x30
	tagUIDLenMask    = 0x0F
)

var (
	// ErrPICCData is returned when decrypted PICCData does not carry a
	// valid PICCDataTag: the key is wrong or the message was altered.
	ErrPICCData = errors.New("sdm: PICCData does not decrypt to a valid tag")
	// ErrMAC is returned when the SDMMAC does not verify.
	ErrMAC = errors.New("sdm: SDMMAC mismatch")
	// ErrInput is returned for inputs of the wrong size or format.
	ErrInput = errors.New("sdm: malformed input")
)

// PICCData is the content of the mirrored, encrypted PICCData: which
// fields the tag mirrored and their values.
type PICCData struct {
	Tag        byte
	UID        []byte // nil when the UID is not mirrored
	ReadCtr    uint32
	HasReadCtr bool
}

// DecryptPICCData decrypts the 16-byte encrypted PICCData with
// KSDMMetaRead (AES-CBC, zero IV) and parses PICCDataTag ‖ [UID(7)] ‖
// [SDMReadCtr(3, LE)] ‖ random padding.
func DecryptPICCData(metaReadKey, enc []byte) (*PICCData, error) {
	if len(enc) != dfcrypto.BlockSize {
		return nil, fmt.Errorf("encrypted PICCData of %d bytes: %w", len(enc), ErrInput)
	}
	plain, err := dfcrypto.DecryptCBC(metaReadKey, make([]byte, dfcrypto.BlockSize), enc)
	if err != nil {
		return nil, fmt.Errorf("decrypt PICCData: %w", err)
	}
	return parsePICCData(plain)
}

// parsePICCData reads PICCDataTag ‖ [UID(7)] ‖ [SDMReadCtr(3, LE)] ‖
// padding from a decrypted 16-byte block.
func parsePICCData(plain []byte) (*PICCData, error) {
	p := &PICCData{Tag: plain[0]}
	uidLen := int(p.Tag & tagUIDLenMask)
	hasUID := p.Tag&tagUIDMirror != 0
	if p.Tag&tagRFU != 0 || (hasUID && uidLen != UIDSize) || (!hasUID && uidLen != 0) {
		return nil, fmt.Errorf("PICCDataTag %02X: %w", p.Tag, ErrPICCData)
	}
	rest := plain[1:]
	if hasUID {
		p.UID = append([]byte(nil), rest[:UIDSize]...)
		rest = rest[UIDSize:]
	}
	if p.Tag&tagReadCtrMirror != 0 {
		p.HasReadCtr = true
		p.ReadCtr = uint32(rest[0]) | uint32(rest[1])<<8 | uint32(rest[2])<<16
	}
	return p, nil
}

// SessionKeys derives KSesSDMFileReadENC and KSesSDMFileReadMAC from
// KSDMFileRead: CMAC(K, C3 3C / 3C C3 ‖ 00 01 00 80 ‖ [UID] ‖ [SDMReadCtr(LE3)]
// ‖ zero padding to 16 bytes). p says which fields the tag mirrors.
func SessionKeys(fileReadKey []byte, p *PICCData) (encKey, macKey []byte, err error) {
	if p.UID != nil && len(p.UID) != UIDSize {
		return nil, nil, fmt.Errorf("SDM session keys: UID of %d bytes: %w", len(p.UID), ErrInput)
	}
	if p.ReadCtr > MaxReadCtr {
		return nil, nil, fmt.Errorf("SDM session keys: SDMReadCtr %d: %w", p.ReadCtr, ErrInput)
	}
	sv := make([]byte, 6, dfcrypto.BlockSize)
	copy(sv[2:], []byte{0x00, 0x01, 0x00, 0x80})
	sv = append(sv, p.UID...)
	if p.HasReadCtr {
		sv = append(sv, byte(p.ReadCtr), byte(p.ReadCtr>>8), byte(p.ReadCtr>>16))
	}
	sv = append(sv, make([]byte, dfcrypto.BlockSize-len(sv))...)
	sv[0], sv[1] = 0xC3, 0x3C
	if encKey, err = dfcrypto.CMAC(fileReadKey, sv); err != nil {
		return nil, nil, fmt.Errorf("KSesSDMFileReadENC: %w", err)
	}
	sv[0], sv[1] = 0x3C, 0xC3
	if macKey, err = dfcrypto.CMAC(fileReadKey, sv); err != nil {
		return nil, nil, fmt.Errorf("KSesSDMFileReadMAC: %w", err)
	}
	return encKey, macKey, nil
}

// MAC returns SDMMAC = MACt(KSesSDMFileReadMAC, input), where input is the
// mirrored text from SDMMACInputOffset to SDMMACOffset (possibly empty).
func MAC(sesMACKey, input []byte) ([]byte, error) {
	return dfcrypto.MACt(sesMACKey, input)
}

// VerifyMAC derives the session MAC key for p and checks sdmmac over input
// in constant time.
func VerifyMAC(fileReadKey []byte, p *PICCData, input, sdmmac []byte) error {
	_, macKey, err := SessionKeys(fileReadKey, p)
	if err != nil {
		return err
	}
	want, err := MAC(macKey, input)
	if err != nil {
		return err
	}
	if !dfcrypto.Equal(want, sdmmac) {
		return ErrMAC
	}
	return nil
}

// DecryptFileData decrypts mirrored SDMENCFileData with KSesSDMFileReadENC,
// IV = E(KSesSDMFileReadENC, SDMReadCtr(LE3) ‖ 00×13).
func DecryptFileData(sesENCKey []byte, readCtr uint32, enc []byte) ([]byte, error) {
	if readCtr > MaxReadCtr {
		return nil, fmt.Errorf("SDMReadCtr %d: %w", readCtr, ErrInput)
	}
	if len(enc) == 0 || len(enc)%dfcrypto.BlockSize != 0 {
		return nil, fmt.Errorf("SDMENCFileData of %d bytes: %w", len(enc), ErrInput)
	}
	in := make([]byte, dfcrypto.BlockSize)
	in[0], in[1], in[2] = byte(readCtr), byte(readCtr>>8), byte(readCtr>>16)
	iv, err := dfcrypto.EncryptBlock(sesENCKey, in)
	if err != nil {
		return nil, fmt.Errorf("SDM file data IV: %w", err)
	}
	return dfcrypto.DecryptCBC(sesENCKey, iv, enc)
}

// ParseReadCtr reads a plainly mirrored SDMReadCtr: 6 hex digits, most
// significant first, as it appears in the URL.
func ParseReadCtr(s string) (uint32, error) {
	if len(s) != 2*ReadCtrSize {
		return 0, fmt.Errorf("SDMReadCtr %q: %w", s, ErrInput)
	}
	v, err := strconv.ParseUint(s, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("SDMReadCtr %q: %w", s, ErrInput)
	}
	return uint32(v), nil
}
