package sdm

import (
	"bytes"
	"errors"
	"testing"

	"github.com/desfire-relay/relay/desfire/dfcrypto"
	"github.com/desfire-relay/relay/desfire/internal/vectors"
)

type sdmVector struct {
	ID           string  `json:"id"`
	Type         string  `json:"type"`
	Source       string  `json:"source"`
	MetaKey      string  `json:"sdm_meta_read_key"`
	FileKey      string  `json:"sdm_file_read_key"`
	EncPICC      string  `json:"enc_picc_data"`
	EncFile      string  `json:"enc_file_data"`
	MACInput     string  `json:"mac_input_ascii"`
	SDMMAC       string  `json:"sdmmac"`
	PICCPlain    string  `json:"picc_data_plain"`
	PICCTag      string  `json:"picc_data_tag"`
	UID          string  `json:"uid"`
	ReadCtrJSON  *uint32 `json:"read_ctr"`
	ReadCtrLE    string  `json:"read_ctr_le"`
	ReadCtrASCII string  `json:"read_ctr_ascii_msb_first"`
	SesMACKey    string  `json:"ses_mac_key"`
	FileData     string  `json:"file_data"`
	ExpectValid  bool    `json:"expect_valid"`
}

func TestSDMVectors(t *testing.T) {
	for _, v := range vectors.Load[sdmVector](t, "sdm.json") {
		t.Run(v.ID, func(t *testing.T) {
			t.Logf("source: %s", v.Source)
			h := func(s string) []byte { return vectors.Hex(t, s) }
			var p *PICCData
			if v.Type == "plain" {
				ctr, err := ParseReadCtr(v.ReadCtrASCII)
				if err != nil {
					t.Fatal(err)
				}
				if v.ReadCtrJSON == nil || ctr != *v.ReadCtrJSON {
					t.Fatalf("mirrored counter %q = %d, want %v", v.ReadCtrASCII, ctr, v.ReadCtrJSON)
				}
				p = &PICCData{UID: h(v.UID), ReadCtr: ctr, HasReadCtr: true}
			} else {
				var err error
				if p, err = DecryptPICCData(h(v.MetaKey), h(v.EncPICC)); err != nil {
					t.Fatal(err)
				}
				if v.PICCPlain != "" {
					plain, err := dfcrypto.DecryptCBC(h(v.MetaKey), make([]byte, 16), h(v.EncPICC))
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(plain, h(v.PICCPlain)) {
						t.Errorf("PICCData plaintext %X, want %s", plain, v.PICCPlain)
					}
				}
				if v.PICCTag != "" && p.Tag != h(v.PICCTag)[0] {
					t.Errorf("PICCDataTag %02X, want %s", p.Tag, v.PICCTag)
				}
				if v.UID != "" && !bytes.Equal(p.UID, h(v.UID)) {
					t.Errorf("UID %X, want %s", p.UID, v.UID)
				}
				if v.ReadCtrJSON != nil && (!p.HasReadCtr || p.ReadCtr != *v.ReadCtrJSON) {
					t.Errorf("SDMReadCtr %d (mirrored %v), want %d", p.ReadCtr, p.HasReadCtr, *v.ReadCtrJSON)
				}
				if v.ReadCtrLE != "" {
					le := h(v.ReadCtrLE)
					if got := uint32(le[0]) | uint32(le[1])<<8 | uint32(le[2])<<16; got != p.ReadCtr {
						t.Errorf("read_ctr_le %s = %d, decrypted %d", v.ReadCtrLE, got, p.ReadCtr)
					}
				}
			}
			encKey, macKey, err := SessionKeys(h(v.FileKey), p)
			if err != nil {
				t.Fatal(err)
			}
			if v.SesMACKey != "" && !bytes.Equal(macKey, h(v.SesMACKey)) {
				t.Errorf("KSesSDMFileReadMAC %X, want %s", macKey, v.SesMACKey)
			}
			if v.ExpectValid {
				mac, err := MAC(macKey, []byte(v.MACInput))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(mac, h(v.SDMMAC)) {
					t.Errorf("SDMMAC %X, want %s", mac, v.SDMMAC)
				}
			}
			err = VerifyMAC(h(v.FileKey), p, []byte(v.MACInput), h(v.SDMMAC))
			switch {
			case v.ExpectValid && err != nil:
				t.Errorf("valid message rejected: %v", err)
			case !v.ExpectValid && !errors.Is(err, ErrMAC):
				t.Errorf("invalid message: err = %v, want ErrMAC", err)
			}
			if v.EncFile != "" {
				fd, err := DecryptFileData(encKey, p.ReadCtr, h(v.EncFile))
				if err != nil {
					t.Fatal(err)
				}
				if v.FileData != "" && !bytes.Equal(fd, h(v.FileData)) {
					t.Errorf("file data %X, want %s", fd, v.FileData)
				}
			}
		})
	}
}

// TestSDMTamper changes every byte of a valid message and expects a
// rejection (bad PICCData tag or MAC mismatch).
func TestSDMTamper(t *testing.T) {
	key := make([]byte, 16)
	enc := vectors.Hex(t, "FD91EC264309878BE6345CBE53BADF40")
	input := []byte("CEE9A53E3E463EF1F459635736738962&cmac=")
	mac := vectors.Hex(t, "ECC1E7F6C6C73BF6")
	check := func(enc, input, mac []byte) error {
		p, err := DecryptPICCData(key, enc)
		if err != nil {
			return err
		}
		return VerifyMAC(key, p, input, mac)
	}
	if err := check(enc, input, mac); err != nil {
		t.Fatalf("good message: %v", err)
	}
	for i := range enc {
		bad := append([]byte(nil), enc...)
		bad[i] ^= 0x01
		if check(bad, input, mac) == nil {
			t.Errorf("PICCData byte %d flipped: accepted", i)
		}
	}
	for i := range input {
		bad := append([]byte(nil), input...)
		bad[i] ^= 0x01
		if check(enc, bad, mac) == nil {
			t.Errorf("MAC input byte %d flipped: accepted", i)
		}
	}
	for i := range mac {
		bad := append([]byte(nil), mac...)
		bad[i] ^= 0x01
		if check(enc, input, bad) == nil {
			t.Errorf("SDMMAC byte %d flipped: accepted", i)
		}
	}
	if check(enc, input, mac[:7]) == nil {
		t.Error("short SDMMAC accepted")
	}
}

func TestSDMInputErrors(t *testing.T) {
	key := make([]byte, 16)
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"short PICCData", func() error { _, err := DecryptPICCData(key, make([]byte, 15)); return err }()},
		{"empty file data", func() error { _, err := DecryptFileData(key, 1, nil); return err }()},
		{"ragged file data", func() error { _, err := DecryptFileData(key, 1, make([]byte, 17)); return err }()},
		{"counter too big", func() error { _, err := DecryptFileData(key, 1<<24, make([]byte, 16)); return err }()},
		{"ascii counter", func() error { _, err := ParseReadCtr("00000G"); return err }()},
		{"ascii counter length", func() error { _, err := ParseReadCtr("0006"); return err }()},
		{"uid length", func() error { _, _, err := SessionKeys(key, &PICCData{UID: make([]byte, 4)}); return err }()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !errors.Is(tc.err, ErrInput) {
				t.Errorf("err = %v, want ErrInput", tc.err)
			}
		})
	}
}

func FuzzDecryptPICCData(f *testing.F) {
	f.Add(vectors.Hex(f, "EF963FF7828658A599F3041510671E88"))
	f.Add(vectors.Hex(f, "8ACADDEF0A9B62CDAE39A16B83FC14DE"))
	f.Add([]byte{})
	key := make([]byte, 16)
	f.Fuzz(func(t *testing.T, enc []byte) {
		p, err := DecryptPICCData(key, enc)
		if err != nil {
			return
		}
		if p.UID != nil && len(p.UID) != UIDSize || p.ReadCtr > MaxReadCtr {
			t.Fatalf("bad parse %+v", p)
		}
		if _, _, err := SessionKeys(key, p); err != nil {
			t.Fatalf("session keys for a parsed PICCData: %v", err)
		}
	})
}
