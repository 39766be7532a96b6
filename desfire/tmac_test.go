package desfire

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/desfire-relay/relay/desfire/dfcrypto"
	"github.com/desfire-relay/relay/desfire/internal/vectors"
)

type tmVector struct {
	ID        string `json:"id"`
	Op        string `json:"op"`
	Source    string `json:"source"`
	AppTMKey  string `json:"app_tm_key"`
	UID       string `json:"uid"`
	TMCBefore uint32 `json:"tmc_before"`
	TMCInSV   uint32 `json:"tmc_in_sv"`
	SesTMMAC  string `json:"ses_tm_mac_key"`
	SesTMENC  string `json:"ses_tm_enc_key"`
}

func TestTMACVectors(t *testing.T) {
	for _, v := range vectors.Load[tmVector](t, "tmac.json") {
		t.Run(v.ID, func(t *testing.T) {
			t.Logf("source: %s", v.Source)
			if v.Op != "tm_session_keys" {
				t.Fatalf("unknown op %q", v.Op)
			}
			if v.TMCInSV != v.TMCBefore+1 {
				t.Fatalf("vector: tmc_in_sv %d is not tmc_before+1", v.TMCInSV)
			}
			h := func(s string) []byte { return vectors.Hex(t, s) }
			mac, enc, err := TMSessionKeys(h(v.AppTMKey), v.TMCInSV, h(v.UID))
			if err != nil {
				t.Fatal(err)
			}
			ev2Eq(t, "SesTMMACKey", mac, h(v.SesTMMAC))
			ev2Eq(t, "SesTMENCKey", enc, h(v.SesTMENC))
			// The counter in SV is the one CommitTransaction returns, not
			// the one before the transaction.
			if before, _, _ := TMSessionKeys(h(v.AppTMKey), v.TMCBefore, h(v.UID)); bytes.Equal(before, mac) {
				t.Error("session key does not depend on the TMC")
			}
		})
	}
}

// tmHex builds expected TMI bytes from a readable spec: hex groups joined
// by spaces, and "0*N" for N zero bytes.
func tmHex(t *testing.T, spec string) []byte {
	t.Helper()
	var out []byte
	for _, f := range strings.Fields(spec) {
		if n, ok := strings.CutPrefix(f, "0*"); ok {
			k := 0
			for _, c := range n {
				k = 10*k + int(c-'0')
			}
			out = append(out, make([]byte, k)...)
			continue
		}
		out = append(out, vectors.Hex(t, f)...)
	}
	return out
}

// TestTMIUpdateRules checks each command against the TMI layout of
// MF2DLHX0 section 10.3.4, written out by hand here.
func TestTMIUpdateRules(t *testing.T) {
	d25 := strings.Repeat("22", 25)
	d16 := "11223344556677889900112233445566"
	tmri := "28BF1982BE086FBC60A22DAEB66613EE"
	enc := "A1963F1BB9FC916A8B15B2DC58002531"
	for _, tc := range []struct {
		name               string
		code               byte
		header, data, resp string
		recordSize         int
		want               string // tmHex spec; "" means no update
	}{
		{"ReadData native", 0xBD, "00 000000 190000", "", d25, 0, "BD 00 000000 190000 0*8 " + d25 + " 0*7"},
		{"ReadData ISO", 0xAD, "00 000000 190000", "", d25, 0, "AD 00 000000 190000 0*8 " + d25 + " 0*7"},
		{"ReadData whole file", 0xBD, "01 000000 000000", "", strings.Repeat("AB", 32), 0, "BD 01 000000 200000 0*8 " + strings.Repeat("AB", 32)},
		{"WriteData", 0x8D, "00 000000 190000", d25, "", 0, "8D 00 000000 190000 0*8 " + d25 + " 0*7"},
		{"WriteData native aligned", 0x3D, "02 100000 100000", d16, "", 0, "3D 02 100000 100000 0*8 " + d16},
		{"GetValue", 0x6C, "03", "", "99000000", 0, "6C 03 99000000 0*10"},
		{"Credit", 0x0C, "03", "99000000", "", 0, "0C 03 99000000 0*10"},
		{"Debit", 0xDC, "03", "71000000", "", 0, "DC 03 71000000 0*10"},
		{"LimitedCredit", 0x1C, "03", "05000000", "", 0, "1C 03 05000000 0*10"},
		{"ReadRecords", 0xAB, "01 000000 010000", "", d16, 0, "AB 01 000000 010000 0*8 " + d16},
		{"ReadRecords all", 0xBB, "01 000000 000000", "", d16 + d16, 16, "BB 01 000000 020000 0*8 " + d16 + d16},
		{"ReadRecords short records", 0xBB, "04 000000 020000", "", "0102030405", 0, "BB 04 000000 020000 0*8 0102030405 0*11"},
		{"WriteRecord", 0x8B, "01 000000 100000", d16, "", 0, "8B 01 000000 100000 0*8 " + d16},
		{"UpdateRecord", 0xDB, "01 020000 000000 040000", "AABBCCDD", "", 0, "DB 01 020000 000000 040000 0*5 AABBCCDD 0*12"},
		{"ClearRecordFile", 0xEB, "01", "", "", 0, "EB 01 0*14"},
		{"CommitReaderID authenticated", 0xC8, "", tmri, enc, 0, "C8 " + tmri + " " + enc + " 0*15"},
		{"CommitReaderID not authenticated", 0xC8, "", tmri, "", 0, "C8 " + tmri + " 0*15"},
		{"GetFileSettings", 0xF5, "01", "", "0040EEEE", 0, ""},
		{"CommitTransaction", 0xC7, "01", "", "0400000094A3205E41588BA9", 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := TMIUpdate(tc.code, tmHex(t, tc.header), tmHex(t, tc.data), tmHex(t, tc.resp), tc.recordSize)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == "" {
				if got != nil {
					t.Fatalf("update %X, want none", got)
				}
				return
			}
			ev2Eq(t, "TMI update", got, tmHex(t, tc.want))
			if len(got)%16 != 0 {
				t.Errorf("update of %d bytes is not block aligned", len(got))
			}
		})
	}
}

func TestTMIUpdateRejectsBadLayouts(t *testing.T) {
	for _, tc := range []struct {
		name               string
		code               byte
		header, data, resp string
		recordSize         int
	}{
		{"ReadData length mismatch", 0xBD, "00 000000 190000", "", "2222", 0},
		{"ReadData short header", 0xBD, "00 000000 1900", "", "", 0},
		{"ReadData with command data", 0xBD, "00 000000 010000", "01", "02", 0},
		{"WriteData length mismatch", 0x8D, "00 000000 030000", "0102", "", 0},
		{"WriteData with response", 0x8D, "00 000000 010000", "01", "02", 0},
		{"UpdateRecord length mismatch", 0xDB, "01 000000 000000 040000", "AABBCC", "", 0},
		{"GetValue short value", 0x6C, "03", "", "990000", 0},
		{"Credit no value", 0x0C, "03", "", "", 0},
		{"ReadRecords all without record size", 0xBB, "01 000000 000000", "", "11223344", 0},
		{"ReadRecords all ragged", 0xBB, "01 000000 000000", "", "112233", 2},
		{"ClearRecordFile with data", 0xEB, "01", "00", "", 0},
		{"CommitReaderID short TMRI", 0xC8, "", "28BF1982BE086FBC60A22DAEB66613", "", 0},
		{"CommitReaderID odd EncTMRI", 0xC8, "", "28BF1982BE086FBC60A22DAEB66613EE", "01", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := TMIUpdate(tc.code, tmHex(t, tc.header), tmHex(t, tc.data), tmHex(t, tc.resp), tc.recordSize)
			if !errors.Is(err, ErrTMIInput) {
				t.Errorf("err = %v, want ErrTMIInput", err)
			}
		})
	}
}

func TestTransactionMACAccumulator(t *testing.T) {
	key := vectors.Hex(t, "66A8CB93269DC9BC2885B7A91B9C697B")
	uid := vectors.Hex(t, "04DE5F1EACC040")
	tm, err := NewTransactionMAC(key, uid)
	if err != nil {
		t.Fatal(err)
	}
	if !tm.Empty() {
		t.Fatal("new accumulator not empty")
	}
	// A top-up: read the value, credit it, commit the reader ID; plus
	// commands the TMI ignores.
	steps := []struct {
		code               byte
		header, data, resp string
	}{
		{0x6C, "02", "", "E8030000"},
		{0xF5, "02", "", "0200"},
		{0x0C, "02", "64000000", ""},
		{0xC8, "", "000102030405060708090A0B0C0D0E0F", "A1963F1BB9FC916A8B15B2DC58002531"},
	}
	for _, s := range steps {
		if err := tm.Add(s.code, tmHex(t, s.header), tmHex(t, s.data), tmHex(t, s.resp)); err != nil {
			t.Fatal(err)
		}
	}
	wantTMI := tmHex(t, "6C 02 E8030000 0*10 0C 02 64000000 0*10 C8 000102030405060708090A0B0C0D0E0F A1963F1BB9FC916A8B15B2DC58002531 0*15")
	ev2Eq(t, "TMI", tm.TMI(), wantTMI)
	const tmc = 9
	// TMV = MACt(SesTMMACKey, TMI), computed here step by step.
	sv := tmHex(t, "5A 00010080 09000000 04DE5F1EACC040")
	sesMAC, err := dfcrypto.CMAC(key, sv)
	if err != nil {
		t.Fatal(err)
	}
	full, err := dfcrypto.CMAC(sesMAC, wantTMI)
	if err != nil {
		t.Fatal(err)
	}
	tmv := tm.Compute(tmc)
	ev2Eq(t, "TMV", tmv, dfcrypto.Truncate(full))
	if err := tm.Verify(tmc, tmv); err != nil {
		t.Fatalf("Verify of the computed TMV: %v", err)
	}
	resp := CommitTransactionTMAC(tmc, tmv)
	gotTMC, gotTMV, err := ParseCommitTransactionTMAC(resp)
	if err != nil || gotTMC != tmc || !bytes.Equal(gotTMV, tmv) {
		t.Fatalf("CommitTransaction answer round trip: %d %X %v", gotTMC, gotTMV, err)
	}
	for _, tc := range []struct {
		name string
		tmc  uint32
		tmv  []byte
	}{
		{"counter before", tmc - 1, tmv},
		{"counter after", tmc + 1, tmv},
		{"short", tmc, tmv[:7]},
		{"long", tmc, append(append([]byte(nil), tmv...), 0)},
		{"empty", tmc, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tm.Verify(tc.tmc, tc.tmv); !errors.Is(err, ErrTransactionMAC) {
				t.Errorf("err = %v, want ErrTransactionMAC", err)
			}
		})
	}
	for i := range tmv {
		bad := append([]byte(nil), tmv...)
		bad[i] ^= 0x01
		if err := tm.Verify(tmc, bad); !errors.Is(err, ErrTransactionMAC) {
			t.Errorf("TMV byte %d flipped: err = %v", i, err)
		}
	}
	// The card and the host feed the same commands: an extra or missing
	// command changes the TMV.
	other, _ := NewTransactionMAC(key, uid)
	for _, s := range steps[:3] {
		if err := other.Add(s.code, tmHex(t, s.header), tmHex(t, s.data), tmHex(t, s.resp)); err != nil {
			t.Fatal(err)
		}
	}
	if other.Verify(tmc, tmv) == nil {
		t.Error("TMV verified without the CommitReaderID step")
	}
	tm.Reset()
	if !tm.Empty() || len(tm.TMI()) != 0 {
		t.Error("Reset left TMI")
	}
	if err := tm.Add(0xBD, tmHex(t, "00 000000 010000"), nil, nil); !errors.Is(err, ErrTMIInput) || !tm.Empty() {
		t.Errorf("bad layout: err %v, TMI %X", err, tm.TMI())
	}
}

func TestTransactionMACReaderID(t *testing.T) {
	tm, err := NewTransactionMAC(vectors.Hex(t, "66A8CB93269DC9BC2885B7A91B9C697B"), vectors.Hex(t, "04010203040506"))
	if err != nil {
		t.Fatal(err)
	}
	prev := bytes.Repeat([]byte{0x5C}, 16)
	enc, err := tm.EncryptReaderID(9, prev)
	if err != nil {
		t.Fatal(err)
	}
	// EncTMRI = E(SesTMENCKey, TMRIPrev) with the published SesTMENCKey for TMC 9.
	want, err := dfcrypto.EncryptBlock(vectors.Hex(t, "119B902A07B18A865B8E1B0060594784"), prev)
	if err != nil {
		t.Fatal(err)
	}
	ev2Eq(t, "EncTMRI", enc, want)
	back, err := tm.DecryptReaderID(9, enc)
	if err != nil {
		t.Fatal(err)
	}
	ev2Eq(t, "TMRIPrev", back, prev)
	if _, err := tm.DecryptReaderID(9, enc[:15]); !errors.Is(err, ErrTMIInput) {
		t.Errorf("short EncTMRI: %v", err)
	}
}

func TestTransactionMACConstructor(t *testing.T) {
	if _, err := NewTransactionMAC(make([]byte, 15), make([]byte, 7)); !errors.Is(err, dfcrypto.ErrKeySize) {
		t.Errorf("short key: %v", err)
	}
	if _, err := NewTransactionMAC(make([]byte, 16), make([]byte, 8)); !errors.Is(err, ErrParameter) {
		t.Errorf("long UID: %v", err)
	}
	if _, err := NewTransactionMAC(make([]byte, 16), nil); !errors.Is(err, ErrParameter) {
		t.Errorf("no UID: %v", err)
	}
	for _, n := range []int{0, 11, 13} {
		if _, _, err := ParseCommitTransactionTMAC(make([]byte, n)); err == nil {
			t.Errorf("CommitTransaction answer of %d bytes accepted", n)
		}
	}
}

func FuzzTMIUpdate(f *testing.F) {
	f.Add(byte(0xBD), vectors.Hex(f, "00000000190000"), []byte{}, bytes.Repeat([]byte{0x22}, 25), 0)
	f.Add(byte(0xBB), vectors.Hex(f, "01000000000000"), []byte{}, bytes.Repeat([]byte{0x11}, 32), 16)
	f.Add(byte(0xC8), []byte{}, bytes.Repeat([]byte{1}, 16), bytes.Repeat([]byte{2}, 16), 0)
	f.Add(byte(0xDB), vectors.Hex(f, "01000000000000040000"), []byte{1, 2, 3, 4}, []byte{}, 0)
	f.Fuzz(func(t *testing.T, code byte, header, data, resp []byte, recordSize int) {
		u, err := TMIUpdate(code, header, data, resp, recordSize)
		if err != nil {
			if u != nil {
				t.Fatal("update with error")
			}
			return
		}
		if len(u)%16 != 0 {
			t.Fatalf("update of %d bytes", len(u))
		}
		if u != nil && u[0] != code {
			t.Fatalf("update starts with %02X, not the command %02X", u[0], code)
		}
	})
}

func FuzzParseCommitTransactionTMAC(f *testing.F) {
	f.Add(vectors.Hex(f, "0400000094A3205E41588BA9"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		tmc, tmv, err := ParseCommitTransactionTMAC(data)
		if err != nil {
			return
		}
		if !bytes.Equal(CommitTransactionTMAC(tmc, tmv), data) {
			t.Fatal("round trip differs")
		}
	})
}
