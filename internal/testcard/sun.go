package testcard

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/desfire-relay/relay/desfire/ntag424"
	"github.com/desfire-relay/relay/desfire/sdm"
	"github.com/desfire-relay/relay/transaction/keys"
)

// Transmitter sends one APDU to a tag and returns its answer with the
// status word (a simulated tag, a PC/SC reader).
type Transmitter interface {
	Transmit(ctx context.Context, apdu []byte) ([]byte, error)
}

// ReadSUN reads a provisioned NTAG 424 DNA tag as a phone does (ISO
// select of the application and the NDEF file, ReadBinary) and verifies
// the Secure Unique NFC URL it finds, shaped ?p={picc}&…{mac} with the
// MAC last, under the tag's version-1 keys from kp: the PICC data must
// decipher to uid and the SDM MAC must verify. It returns the URL and the
// deciphered PICC data.
func ReadSUN(ctx context.Context, tr Transmitter, kp keys.Provider, uid []byte) (string, *sdm.PICCData, error) {
	for _, a := range [][]byte{ntag424.SelectAppAPDU(), ntag424.SelectFileAPDU(ntag424.FIDNDEF)} {
		if r, err := tr.Transmit(ctx, a); err != nil || !bytes.Equal(r, []byte{0x90, 0}) {
			return "", nil, fmt.Errorf("select %X: answer %X: %w", a, r, err)
		}
	}
	r, err := tr.Transmit(ctx, ntag424.ReadBinaryAPDU(0, 0))
	if err != nil || len(r) < 2 {
		return "", nil, fmt.Errorf("read NDEF: answer %X: %w", r, err)
	}
	url, err := ntag424.URL(r[:len(r)-2])
	if err != nil {
		return "", nil, err
	}
	i := strings.Index(url, "?p=")
	if i < 0 || len(url) < i+3+32+16 {
		return url, nil, fmt.Errorf("URL %q has no ?p= PICC data and MAC", url)
	}
	q := url[i+3:]
	picc, err := hex.DecodeString(q[:32])
	if err != nil {
		return url, nil, fmt.Errorf("PICC data in %q: %w", url, err)
	}
	mac, err := hex.DecodeString(q[len(q)-16:])
	if err != nil {
		return url, nil, fmt.Errorf("MAC in %q: %w", url, err)
	}
	key := func(n byte) ([]byte, error) {
		return kp.CardKey(ctx, keys.Ref{Name: keys.NTAG424KeyName(n), Version: 1}, uid)
	}
	meta, err := key(ntag424.KeyMetaRead)
	if err != nil {
		return url, nil, err
	}
	p, err := sdm.DecryptPICCData(meta, picc)
	if err != nil {
		return url, nil, err
	}
	if !bytes.Equal(p.UID, uid) {
		return url, p, fmt.Errorf("PICC data names UID %X, tag is %X", p.UID, uid)
	}
	fileRead, err := key(ntag424.KeyFileRead)
	if err != nil {
		return url, p, err
	}
	if err := sdm.VerifyMAC(fileRead, p, nil, mac); err != nil {
		return url, p, fmt.Errorf("%s: %w", url, err)
	}
	return url, p, nil
}
