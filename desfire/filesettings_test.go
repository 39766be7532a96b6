package desfire

import (
	"errors"
	"fmt"
	"testing"

	"github.com/desfire-relay/relay/desfire/internal/vectors"
)

func fmtPtr(p *uint32) string {
	if p == nil {
		return "-"
	}
	return fmt.Sprint(*p)
}

func TestParseFileSettings(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string // a summary of the fields of the type
		err  error
	}{
		{name: "standard data", in: "00 03 1032 200000", want: "standard data full access 3210 size 32"},
		{name: "backup data, additional access", in: "01 81 1032 400000 02 EEEE 0F21", want: "backup data mac access 3210 size 64 add [EEEE 210F]"},
		{name: "value", in: "02 01 1030 00000000 A0860100 05000000 03", want: "value mac access 3010 0..100000 lc 5 enabled true free true"},
		{name: "value, negative lower limit", in: "02 00 EEEE 9CFFFFFF 64000000 00000000 00", want: "value plain access EEEE -100..100 lc 0 enabled false free false"},
		{name: "linear record", in: "03 00 1032 100000 0A0000 020000", want: "linear record plain access 3210 rec 16 max 10 cur 2"},
		{name: "cyclic record, reserved mode 2 is plain", in: "04 02 1032 200000 050000 050000", want: "cyclic record plain access 3210 rec 32 max 5 cur 5"},
		{name: "transaction MAC", in: "05 00 F01F 02 01", want: "transaction MAC plain access 1FF0 key 02 v1 limit -"},
		{name: "transaction MAC, CommitReaderID under key 3", in: "05 00 30 1F 02 00", want: "transaction MAC plain access 1F30 key 02 v0 limit - rid 3 true"},
		{name: "transaction MAC, CommitReaderID free", in: "05 00 E0 1F 02 02", want: "transaction MAC plain access 1FE0 key 02 v2 limit - rid 14 false"},
		{name: "transaction MAC with TMC limit", in: "05 20 F01F 02 44 78563412", want: "transaction MAC plain access 1FF0 key 02 v68 limit 305419896"},
		{name: "unknown type", in: "06 00 1234 000000", err: ErrParameter},
		{name: "empty", in: "", err: ErrShortResponse},
		{name: "no access rights", in: "00 00 10", err: ErrShortResponse},
		{name: "short value", in: "02 00 1030 00000000 A0860100 05000000", err: ErrShortResponse},
		{name: "short record", in: "03 00 1032 100000 0A0000 0200", err: ErrShortResponse},
		{name: "leftover after data file", in: "00 03 1032 200000 00", err: ErrLongResponse},
		{name: "additional access count too big", in: "01 81 1032 400000 03 EEEE 0F21", err: ErrShortResponse},
		{name: "additional access leftover", in: "01 81 1032 400000 01 EEEE 0F21", err: ErrLongResponse},
		{name: "TMC limit flag without limit", in: "05 20 F01F 02 44", err: ErrShortResponse},
		{name: "TMC limit without flag", in: "05 00 F01F 02 44 78563412", err: ErrLongResponse},
		{name: "SDM cut short", in: "00 40 EEEE 000100 D1 FE", err: ErrShortResponse},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs, err := ParseFileSettings(mustHex(t, tc.in))
			if !errors.Is(err, tc.err) {
				t.Fatalf("error %v, want %v", err, tc.err)
			}
			if err != nil {
				return
			}
			got := fmt.Sprintf("%v %v access %04X", fs.Type, fs.Mode(), uint16(fs.Access))
			switch fs.Type {
			case FileStandardData, FileBackupData:
				got += fmt.Sprintf(" size %d", fs.Size)
			case FileValue:
				got += fmt.Sprintf(" %d..%d lc %d enabled %v free %v", fs.Lower, fs.Upper, fs.LimitedCreditValue, fs.LimitedCreditEnabled(), fs.FreeGetValue())
			case FileLinearRecord, FileCyclicRecord:
				got += fmt.Sprintf(" rec %d max %d cur %d", fs.RecordSize, fs.MaxRecords, fs.CurrentRecords)
			case FileTransactionMAC:
				got += fmt.Sprintf(" key %02X v%d limit %s", fs.TMKeyOption, fs.TMKeyVersion, fmtPtr(fs.TMCLimit))
				if k, req := fs.CommitReaderIDKey(); k != AccessNever {
					got += fmt.Sprintf(" rid %d %v", k, req)
				}
			}
			if len(fs.AdditionalAccess) > 0 {
				got += " add ["
				for i, a := range fs.AdditionalAccess {
					if i > 0 {
						got += " "
					}
					got += fmt.Sprintf("%04X", uint16(a))
				}
				got += "]"
			}
			if got != tc.want {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

// TestParseFileSettingsSDM parses the NTAG 424 DNA file settings that NXP
// AN12196 section 5.3 reads from the NDEF file (via
// ev2_secure_messaging.json, which cites the source).
func TestParseFileSettingsSDM(t *testing.T) {
	var found bool
	for _, v := range vectors.Load[cmdSMVector](t, "ev2_secure_messaging.json") {
		if v.ID != "an12196-5.3-getfilesettings-resp" {
			continue
		}
		found = true
		t.Logf("source: %s", v.Source)
		fs, err := ParseFileSettings(vectors.Hex(t, v.Data))
		if err != nil {
			t.Fatal(err)
		}
		s := fs.SDM
		if fs.Type != FileStandardData || fs.Size != 256 || fs.Access != 0xEEEE || s == nil {
			t.Fatalf("settings %+v", fs)
		}
		got := fmt.Sprintf("opt %02X meta %X file %X ctr %X uid %s ctr %s picc %s macin %s enc %s/%s mac %s limit %s",
			s.Options, s.MetaRead, s.FileRead, s.CtrRet, fmtPtr(s.UIDOffset), fmtPtr(s.ReadCtrOffset), fmtPtr(s.PICCDataOffset),
			fmtPtr(s.MACInputOffset), fmtPtr(s.ENCOffset), fmtPtr(s.ENCLength), fmtPtr(s.MACOffset), fmtPtr(s.ReadCtrLimit))
		want := "opt D1 meta 0 file 0 ctr E uid - ctr - picc 31 macin 68 enc 68/32 mac 106 limit -"
		if got != want {
			t.Fatalf("got  %s\nwant %s", got, want)
		}
	}
	if !found {
		t.Fatal("vector an12196-5.3-getfilesettings-resp missing")
	}
	// Plain UID and counter mirroring with free meta read, a read counter
	// limit, and no file read key.
	fs, err := ParseFileSettings(mustHex(t, "00 40 E0EE 800000 E1 FFEF 200000 300000 0A0000"))
	if err != nil {
		t.Fatal(err)
	}
	s := fs.SDM
	if fmtPtr(s.UIDOffset) != "32" || fmtPtr(s.ReadCtrOffset) != "48" || s.PICCDataOffset != nil || s.MACOffset != nil || fmtPtr(s.ReadCtrLimit) != "10" {
		t.Fatalf("SDM %+v", s)
	}
}
