package sdm

import (
	"fmt"

	"github.com/desfire-relay/relay/desfire/dfcrypto"
	"github.com/desfire-relay/relay/desfire/lrp"
)

// LRP mode of Secure Dynamic Messaging (NT4H2421Gx section 9.3 with
// AN12304): PICCData is PICCRand(8) ‖ LRICB-encrypted block under
// KSDMMetaRead; one session master key
// KSesSDMFileRead = CMAC_LRP(KSDMFileRead, SV) serves both the MAC
// (updated key 0) and file data encryption (updated key 1).

// PICCRandSize is the size of the random counter that prefixes LRP
// PICCData.
const PICCRandSize = 8

// EncPICCDataSizeLRP is the size of encrypted PICCData in LRP mode.
const EncPICCDataSizeLRP = PICCRandSize + dfcrypto.BlockSize

// DecryptPICCDataLRP decrypts LRP-mode PICCData: LRICBDec under
// KSDMMetaRead (updated key 0) with PICCRand as the counter, no padding.
func DecryptPICCDataLRP(metaReadKey, enc []byte) (*PICCData, error) {
	if len(enc) != EncPICCDataSizeLRP {
		return nil, fmt.Errorf("LRP encrypted PICCData of %d bytes: %w", len(enc), ErrInput)
	}
	l, err := lrp.New(metaReadKey, 0)
	if err != nil {
		return nil, fmt.Errorf("LRP PICCData key: %w", err)
	}
	plain, err := l.DecryptNoPad(enc[:PICCRandSize], enc[PICCRandSize:])
	if err != nil {
		return nil, fmt.Errorf("decrypt LRP PICCData: %w", err)
	}
	return parsePICCData(plain)
}

// SessionKeyLRP derives KSesSDMFileRead = CMAC_LRP(KSDMFileRead,
// 00 01 00 80 ‖ [UID] ‖ [SDMReadCtr(LE3)] ‖ zero padding ‖ 1E E1), the
// SV padded so that it fills whole blocks.
func SessionKeyLRP(fileReadKey []byte, p *PICCData) ([]byte, error) {
	if p.UID != nil && len(p.UID) != UIDSize {
		return nil, fmt.Errorf("LRP SDM session key: UID of %d bytes: %w", len(p.UID), ErrInput)
	}
	if p.ReadCtr > MaxReadCtr {
		return nil, fmt.Errorf("LRP SDM session key: SDMReadCtr %d: %w", p.ReadCtr, ErrInput)
	}
	sv := []byte{0x00, 0x01, 0x00, 0x80}
	sv = append(sv, p.UID...)
	if p.HasReadCtr {
		sv = append(sv, byte(p.ReadCtr), byte(p.ReadCtr>>8), byte(p.ReadCtr>>16))
	}
	for (len(sv)+2)%dfcrypto.BlockSize != 0 {
		sv = append(sv, 0)
	}
	sv = append(sv, 0x1E, 0xE1)
	l, err := lrp.New(fileReadKey, 0)
	if err != nil {
		return nil, fmt.Errorf("LRP SDM file read key: %w", err)
	}
	k, err := l.CMAC(sv)
	if err != nil {
		return nil, fmt.Errorf("KSesSDMFileRead: %w", err)
	}
	return k, nil
}

// MACLRP returns the LRP SDMMAC: the odd bytes of CMAC_LRP(KSesSDMFileRead,
// input).
func MACLRP(sesKey, input []byte) ([]byte, error) {
	l, err := lrp.New(sesKey, 0)
	if err != nil {
		return nil, fmt.Errorf("LRP SDMMAC key: %w", err)
	}
	full, err := l.CMAC(input)
	if err != nil {
		return nil, fmt.Errorf("LRP SDMMAC: %w", err)
	}
	return lrp.Truncate(full), nil
}

// VerifyMACLRP derives the LRP session key for p and checks sdmmac over
// input in constant time.
func VerifyMACLRP(fileReadKey []byte, p *PICCData, input, sdmmac []byte) error {
	k, err := SessionKeyLRP(fileReadKey, p)
	if err != nil {
		return err
	}
	want, err := MACLRP(k, input)
	if err != nil {
		return err
	}
	if !dfcrypto.Equal(want, sdmmac) {
		return ErrMAC
	}
	return nil
}

// DecryptFileDataLRP decrypts LRP SDMENCFileData: LRICBDec under
// KSesSDMFileRead with updated key 1 and the counter SDMReadCtr(LE3) ‖
// 00 00 00, no padding removed.
func DecryptFileDataLRP(sesKey []byte, readCtr uint32, enc []byte) ([]byte, error) {
	if readCtr > MaxReadCtr {
		return nil, fmt.Errorf("SDMReadCtr %d: %w", readCtr, ErrInput)
	}
	if len(enc) == 0 || len(enc)%dfcrypto.BlockSize != 0 {
		return nil, fmt.Errorf("LRP SDMENCFileData of %d bytes: %w", len(enc), ErrInput)
	}
	l, err := lrp.New(sesKey, 1)
	if err != nil {
		return nil, fmt.Errorf("LRP file data key: %w", err)
	}
	ctr := []byte{byte(readCtr), byte(readCtr >> 8), byte(readCtr >> 16), 0, 0, 0}
	return l.DecryptNoPad(ctr, enc)
}
