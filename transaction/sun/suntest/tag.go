// Package suntest simulates NTAG 424 DNA tags with Secure Dynamic
// Messaging, for tests: each Read increments the read counter and returns
// the query string the tag would write for a template, in AES or LRP mode.
// It is test support only: keys are given in the clear.
package suntest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"strings"

	"github.com/desfire-relay/relay/desfire/dfcrypto"
	"github.com/desfire-relay/relay/desfire/lrp"
	"github.com/desfire-relay/relay/desfire/sdm"
	"github.com/desfire-relay/relay/transaction/sun"
)

// Tag is a simulated tag. Counter is the last read counter (the next Read
// mirrors Counter+1).
type Tag struct {
	UID      []byte
	MetaKey  []byte // KSDMMetaRead
	FileKey  []byte // KSDMFileRead (already diversified, as on the tag)
	Counter  uint32
	FileData []byte // plaintext of the mirrored file data, 16-byte blocks
	Tamper   string // TagTamper status mirrored ("CC" if empty)
	Rand     io.Reader
}

// Read simulates one read and returns the query string.
func (g *Tag) Read(t *sun.Template) (string, error) {
	if g.Counter >= sdm.MaxReadCtr {
		return "", fmt.Errorf("suntest: counter exhausted")
	}
	g.Counter++
	return g.Query(t, g.Counter)
}

// Query returns the query string the tag writes for counter ctr.
func (g *Tag) Query(t *sun.Template, ctr uint32) (string, error) {
	rnd := g.Rand
	if rnd == nil {
		rnd = rand.Reader
	}
	p := &sdm.PICCData{UID: g.UID, ReadCtr: ctr, HasReadCtr: true}
	var parts []string
	if t.PICCParam != "" {
		plain := make([]byte, 16)
		plain[0] = 0xC7
		copy(plain[1:], g.UID)
		plain[8], plain[9], plain[10] = byte(ctr), byte(ctr>>8), byte(ctr>>16)
		if _, err := io.ReadFull(rnd, plain[11:]); err != nil {
			return "", err
		}
		var enc []byte
		if t.Mode == sun.ModeLRP {
			picRand := make([]byte, sdm.PICCRandSize)
			if _, err := io.ReadFull(rnd, picRand); err != nil {
				return "", err
			}
			l, err := lrp.New(g.MetaKey, 0)
			if err != nil {
				return "", err
			}
			c, err := l.EncryptNoPad(picRand, plain)
			if err != nil {
				return "", err
			}
			enc = append(picRand, c...)
		} else {
			var err error
			if enc, err = dfcrypto.EncryptCBC(g.MetaKey, make([]byte, 16), plain); err != nil {
				return "", err
			}
		}
		parts = append(parts, t.PICCParam+"="+hx(enc))
	} else {
		parts = append(parts, t.UIDParam+"="+hx(g.UID), t.CtrParam+"="+fmt.Sprintf("%06X", ctr))
	}
	var macKey []byte
	if t.Mode == sun.ModeLRP {
		k, err := sdm.SessionKeyLRP(g.FileKey, p)
		if err != nil {
			return "", err
		}
		macKey = k
		if t.FileParam != "" {
			l, err := lrp.New(k, 1)
			if err != nil {
				return "", err
			}
			c, err := l.EncryptNoPad([]byte{byte(ctr), byte(ctr >> 8), byte(ctr >> 16), 0, 0, 0}, g.FileData)
			if err != nil {
				return "", err
			}
			parts = append(parts, t.FileParam+"="+hx(c))
		}
	} else {
		encKey, mk, err := sdm.SessionKeys(g.FileKey, p)
		if err != nil {
			return "", err
		}
		macKey = mk
		if t.FileParam != "" {
			iv, err := dfcrypto.EncryptBlock(encKey, []byte{byte(ctr), byte(ctr >> 8), byte(ctr >> 16), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
			if err != nil {
				return "", err
			}
			c, err := dfcrypto.EncryptCBC(encKey, iv, g.FileData)
			if err != nil {
				return "", err
			}
			parts = append(parts, t.FileParam+"="+hx(c))
		}
	}
	if t.Tamper != nil && t.Tamper.Param != "" {
		tt := g.Tamper
		if tt == "" {
			tt = "CC"
		}
		parts = append(parts, t.Tamper.Param+"="+tt)
	}
	head := strings.Join(parts, "&") + "&" + t.MACParam + "="
	input := ""
	if t.MACInputFrom != "" {
		i := strings.Index("&"+head, "&"+t.MACInputFrom+"=")
		if i < 0 {
			return "", fmt.Errorf("suntest: mac_input_from %q not in the URL", t.MACInputFrom)
		}
		input = head[i+len(t.MACInputFrom)+1:]
	}
	var mac []byte
	var err error
	if t.Mode == sun.ModeLRP {
		mac, err = sdm.MACLRP(macKey, []byte(input))
	} else {
		mac, err = sdm.MAC(macKey, []byte(input))
	}
	if err != nil {
		return "", err
	}
	return head + hx(mac), nil
}

func hx(b []byte) string { return strings.ToUpper(hex.EncodeToString(b)) }
