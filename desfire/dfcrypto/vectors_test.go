package dfcrypto

import (
	"bytes"
	"testing"

	"github.com/desfire-relay/relay/desfire/internal/vectors"
)

func TestCMACVectors(t *testing.T) {
	type vec struct {
		ID, Source, Type, Key, Msg, CMAC, K1, K2 string
	}
	for _, v := range vectors.Load[vec](t, "aes_cmac.json") {
		t.Run(v.ID, func(t *testing.T) {
			t.Logf("source: %s", v.Source)
			key := vectors.Hex(t, v.Key)
			switch v.Type {
			case "subkeys":
				k1, k2 := Subkeys(key)
				if !bytes.Equal(k1, vectors.Hex(t, v.K1)) || !bytes.Equal(k2, vectors.Hex(t, v.K2)) {
					t.Fatalf("subkeys %X %X", k1, k2)
				}
			case "cmac":
				got, err := CMAC(key, vectors.Hex(t, v.Msg))
				if err != nil {
					t.Fatal(err)
				}
				if want := vectors.Hex(t, v.CMAC); !bytes.Equal(got, want) {
					t.Fatalf("CMAC %X, want %X", got, want)
				}
			default:
				t.Fatalf("unknown vector type %q", v.Type)
			}
		})
	}
}

func TestCRC32Vectors(t *testing.T) {
	type vec struct {
		ID, Source, Data string
		CRCLE            string `json:"crc_le"`
		CRC              any
	}
	for _, v := range vectors.Load[vec](t, "crc32.json") {
		t.Run(v.ID, func(t *testing.T) {
			t.Logf("source: %s", v.Source)
			data := vectors.Hex(t, v.Data)
			checked := false
			if v.CRCLE != "" {
				if got, want := CRC32LE(data), vectors.Hex(t, v.CRCLE); !bytes.Equal(got, want) {
					t.Fatalf("CRC LE %X, want %X", got, want)
				}
				checked = true
			}
			if v.CRC != nil {
				var want uint32
				switch c := v.CRC.(type) {
				case float64:
					want = uint32(c)
				case string:
					b := vectors.Hex(t, trimHexPrefix(c))
					for _, x := range b {
						want = want<<8 | uint32(x)
					}
				default:
					t.Fatalf("crc of type %T", c)
				}
				if got := CRC32(data); got != want {
					t.Fatalf("CRC %08X, want %08X", got, want)
				}
				checked = true
			}
			if !checked {
				t.Fatal("vector has no expected CRC")
			}
		})
	}
}

func trimHexPrefix(s string) string {
	if len(s) > 2 && (s[:2] == "0x" || s[:2] == "0X") {
		return s[2:]
	}
	return s
}

func TestAN10922Vectors(t *testing.T) {
	type vec struct {
		ID, Source, M, UID, AID string
		MasterKey               string `json:"master_key"`
		MCheck                  string `json:"m_check"`
		DiversifiedKey          string `json:"diversified_key"`
		SystemIdentifierASCII   string `json:"system_identifier_ascii"`
	}
	for _, v := range vectors.Load[vec](t, "an10922.json") {
		t.Run(v.ID, func(t *testing.T) {
			t.Logf("source: %s", v.Source)
			m := vectors.Hex(t, v.M)
			if v.UID != "" {
				built := DiversificationInput(vectors.Hex(t, v.UID), vectors.Hex(t, v.AID), []byte(v.SystemIdentifierASCII))
				if !bytes.Equal(built, m) {
					t.Fatalf("M %X, want %X", built, m)
				}
			}
			if want := vectors.Hex(t, v.MCheck); !bytes.Equal(append([]byte{1}, m...), want) {
				t.Fatalf("01||M mismatch with m_check %X", want)
			}
			got, err := Diversify(vectors.Hex(t, v.MasterKey), m)
			if err != nil {
				t.Fatal(err)
			}
			if want := vectors.Hex(t, v.DiversifiedKey); !bytes.Equal(got, want) {
				t.Fatalf("key %X, want %X", got, want)
			}
		})
	}
}
