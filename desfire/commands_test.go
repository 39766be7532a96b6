package desfire

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// cmdCase runs one Card method against a scripted plain transport.
type cmdCase struct {
	name string
	run  func(ctx context.Context, c *Card) (any, error)
	apdu string // expected command APDU ("" for cases that send nothing)
	resp string
	want string // fmt.Sprint of the result when no error
	err  error
}

func runCmdCases(t *testing.T, cases []cmdCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var steps []exchange
			if tc.apdu != "" {
				steps = append(steps, exchange{want: tc.apdu, resp: tc.resp})
			}
			tr := newScript(t, steps...)
			card := NewCard(tr)
			got, err := tc.run(context.Background(), card)
			if !errors.Is(err, tc.err) {
				t.Fatalf("error %v, want %v", err, tc.err)
			}
			if tc.err == nil && fmt.Sprint(got) != tc.want {
				t.Fatalf("got %s, want %s", fmt.Sprint(got), tc.want)
			}
			tr.done()
		})
	}
}

func TestCommandsPlain(t *testing.T) {
	recs := func(ctx context.Context, c *Card) (any, error) {
		r, err := c.ReadRecords(ctx, 3, 0, 2, 4, CommPlain)
		return fmt.Sprintf("%X", r), err
	}
	none := func(f func(ctx context.Context, c *Card) error) func(context.Context, *Card) (any, error) {
		return func(ctx context.Context, c *Card) (any, error) { return "ok", f(ctx, c) }
	}
	hexOf := func(f func(ctx context.Context, c *Card) ([]byte, error)) func(context.Context, *Card) (any, error) {
		return func(ctx context.Context, c *Card) (any, error) { b, err := f(ctx, c); return fmt.Sprintf("%X", b), err }
	}
	cases := []cmdCase{
		{name: "select application", apdu: "905A00000301020300", resp: "9100", want: "ok",
			run: none(func(ctx context.Context, c *Card) error { return c.SelectApplication(ctx, []byte{1, 2, 3}) })},
		{name: "select application: card error", apdu: "905A00000301020300", resp: "91A0", err: ErrApplicationNotFound,
			run: none(func(ctx context.Context, c *Card) error { return c.SelectApplication(ctx, []byte{1, 2, 3}) })},
		{name: "select application: bad AID", err: ErrParameter,
			run: none(func(ctx context.Context, c *Card) error { return c.SelectApplication(ctx, []byte{1, 2}) })},
		{name: "select application: data in answer", apdu: "905A00000301020300", resp: "00 9100", err: ErrLongResponse,
			run: none(func(ctx context.Context, c *Card) error { return c.SelectApplication(ctx, []byte{1, 2, 3}) })},
		{name: "get key version", apdu: "90640000010100", resp: "07 9100", want: "7",
			run: func(ctx context.Context, c *Card) (any, error) { return c.GetKeyVersion(ctx, 1) }},
		{name: "get key version: short", apdu: "90640000010100", resp: "9100", err: ErrShortResponse,
			run: func(ctx context.Context, c *Card) (any, error) { return c.GetKeyVersion(ctx, 1) }},
		{name: "get key version: overlong", apdu: "90640000010100", resp: "0707 9100", err: ErrLongResponse,
			run: func(ctx context.Context, c *Card) (any, error) { return c.GetKeyVersion(ctx, 1) }},
		{name: "get key version: no such key", apdu: "90640000010100", resp: "9140", err: ErrNoSuchKey,
			run: func(ctx context.Context, c *Card) (any, error) { return c.GetKeyVersion(ctx, 1) }},
		{name: "get application IDs", apdu: "906A000000", resp: "010203 A1A2A3 9100", want: "[010203 A1A2A3]",
			run: func(ctx context.Context, c *Card) (any, error) {
				ids, err := c.GetApplicationIDs(ctx)
				return fmt.Sprintf("%X", ids), err
			}},
		{name: "get application IDs: partial AID", apdu: "906A000000", resp: "01020304 9100", err: ErrLongResponse,
			run: func(ctx context.Context, c *Card) (any, error) { return c.GetApplicationIDs(ctx) }},
		{name: "get file IDs", apdu: "906F000000", resp: "00010203 9100", want: "00010203",
			run: hexOf(func(ctx context.Context, c *Card) ([]byte, error) { return c.GetFileIDs(ctx) })},
		{name: "get file IDs: too many", apdu: "906F000000", resp: strings.Repeat("01", 33) + "9100", err: ErrLongResponse,
			run: hexOf(func(ctx context.Context, c *Card) ([]byte, error) { return c.GetFileIDs(ctx) })},
		{name: "get file settings", apdu: "90F50000010200", resp: "0200 1030 00000000 E8030000 00000000 00 9100",
			want: "value plain lower 0 upper 1000 access 3010",
			run: func(ctx context.Context, c *Card) (any, error) {
				fs, err := c.GetFileSettings(ctx, 2)
				if err != nil {
					return nil, err
				}
				return fmt.Sprintf("%v %v lower %d upper %d access %04X", fs.Type, fs.Mode(), fs.Lower, fs.Upper, uint16(fs.Access)), nil
			}},
		{name: "get file settings: short", apdu: "90F50000010200", resp: "0200 1030 00000000 9100", err: ErrShortResponse,
			run: func(ctx context.Context, c *Card) (any, error) { return c.GetFileSettings(ctx, 2) }},
		{name: "get key settings", apdu: "9045000000", resp: "0F 82 9100", want: "{15 130 []} 2",
			run: func(ctx context.Context, c *Card) (any, error) {
				ks, err := c.GetKeySettings(ctx)
				return fmt.Sprint(ks, " ", ks.MaxKeys()), err
			}},
		{name: "get key settings: leftover", apdu: "9045000000", resp: "0F 82 00 9100", err: ErrLongResponse,
			run: func(ctx context.Context, c *Card) (any, error) { return c.GetKeySettings(ctx) }},
		{name: "get value", apdu: "906C0000010200", resp: "FEFFFFFF 9100", want: "-2",
			run: func(ctx context.Context, c *Card) (any, error) { return c.GetValue(ctx, 2, CommPlain) }},
		{name: "get value: short", apdu: "906C0000010200", resp: "FEFFFF 9100", err: ErrShortResponse,
			run: func(ctx context.Context, c *Card) (any, error) { return c.GetValue(ctx, 2, CommPlain) }},
		{name: "get value: MAC file without channel", err: ErrNotAuthenticated,
			run: func(ctx context.Context, c *Card) (any, error) { return c.GetValue(ctx, 2, CommMAC) }},
		{name: "credit", apdu: "900C000005 02 E8030000 00", resp: "9100", want: "ok",
			run: none(func(ctx context.Context, c *Card) error { return c.Credit(ctx, 2, 1000, CommPlain) })},
		{name: "credit: boundary", apdu: "900C000005 02 E8030000 00", resp: "91BE", err: ErrBoundary,
			run: none(func(ctx context.Context, c *Card) error { return c.Credit(ctx, 2, 1000, CommPlain) })},
		{name: "debit", apdu: "90DC000005 02 0A000000 00", resp: "9100", want: "ok",
			run: none(func(ctx context.Context, c *Card) error { return c.Debit(ctx, 2, 10, CommPlain) })},
		{name: "limited credit", apdu: "901C000005 02 0A000000 00", resp: "9100", want: "ok",
			run: none(func(ctx context.Context, c *Card) error { return c.LimitedCredit(ctx, 2, 10, CommPlain) })},
		{name: "read data", apdu: "90BD000007 01 100000 030000 00", resp: "AABBCC 9100", want: "AABBCC",
			run: hexOf(func(ctx context.Context, c *Card) ([]byte, error) { return c.ReadData(ctx, 1, 16, 3, CommPlain) })},
		{name: "read data: short", apdu: "90BD000007 01 100000 030000 00", resp: "AABB 9100", err: ErrShortResponse,
			run: hexOf(func(ctx context.Context, c *Card) ([]byte, error) { return c.ReadData(ctx, 1, 16, 3, CommPlain) })},
		{name: "read data: overlong", apdu: "90BD000007 01 100000 030000 00", resp: "AABBCCDD 9100", err: ErrLongResponse,
			run: hexOf(func(ctx context.Context, c *Card) ([]byte, error) { return c.ReadData(ctx, 1, 16, 3, CommPlain) })},
		{name: "read data: offset too large", err: ErrParameter,
			run: hexOf(func(ctx context.Context, c *Card) ([]byte, error) { return c.ReadData(ctx, 1, 1<<24, 3, CommPlain) })},
		{name: "write data", apdu: "903D000009 01 020000 020000 AABB 00", resp: "9100", want: "ok",
			run: none(func(ctx context.Context, c *Card) error { return c.WriteData(ctx, 1, 2, []byte{0xAA, 0xBB}, CommPlain) })},
		{name: "read records", apdu: "90BB000007 03 000000 020000 00", resp: "01020304 05060708 9100", want: "[01020304 05060708]", run: recs},
		{name: "read records: partial record", apdu: "90BB000007 03 000000 020000 00", resp: "01020304 050607 9100", err: ErrLongResponse, run: recs},
		{name: "read records: fewer than asked", apdu: "90BB000007 03 000000 020000 00", resp: "01020304 9100", err: ErrLength, run: recs},
		{name: "read records: empty file", apdu: "90BB000007 03 000000 020000 00", resp: "91BE", err: ErrBoundary, run: recs},
		{name: "write record", apdu: "903B000009 03 000000 020000 CAFE 00", resp: "9100", want: "ok",
			run: none(func(ctx context.Context, c *Card) error {
				return c.WriteRecord(ctx, 3, 0, []byte{0xCA, 0xFE}, CommPlain)
			})},
		{name: "clear record file", apdu: "90EB0000010300", resp: "9100", want: "ok",
			run: none(func(ctx context.Context, c *Card) error { return c.ClearRecordFile(ctx, 3) })},
		{name: "commit transaction", apdu: "90C7000000", resp: "9100", want: "0 []",
			run: func(ctx context.Context, c *Card) (any, error) {
				tmc, tmv, err := c.CommitTransaction(ctx, false)
				return fmt.Sprint(tmc, " ", tmv), err
			}},
		{name: "commit transaction with TMAC", apdu: "90C70000010100", resp: "05000000 1122334455667788 9100", want: "5 1122334455667788",
			run: func(ctx context.Context, c *Card) (any, error) {
				tmc, tmv, err := c.CommitTransaction(ctx, true)
				return fmt.Sprintf("%d %X", tmc, tmv), err
			}},
		{name: "commit transaction with TMAC: short", apdu: "90C70000010100", resp: "05000000 11223344556677 9100", err: ErrShortResponse,
			run: func(ctx context.Context, c *Card) (any, error) {
				_, _, err := c.CommitTransaction(ctx, true)
				return nil, err
			}},
		{name: "commit transaction: integrity", apdu: "90C7000000", resp: "911E", err: ErrIntegrity,
			run: func(ctx context.Context, c *Card) (any, error) {
				_, _, err := c.CommitTransaction(ctx, false)
				return nil, err
			}},
		{name: "commit reader ID", apdu: "90C8000010" + strings.Repeat("AB", 16) + "00", resp: "9100", want: "",
			run: hexOf(func(ctx context.Context, c *Card) ([]byte, error) {
				return c.CommitReaderID(ctx, bytes.Repeat([]byte{0xAB}, 16))
			})},
		{name: "commit reader ID: bad TMRI", err: ErrParameter,
			run: hexOf(func(ctx context.Context, c *Card) ([]byte, error) { return c.CommitReaderID(ctx, []byte{1}) })},
		{name: "abort transaction", apdu: "90A7000000", resp: "9100", want: "ok",
			run: none(func(ctx context.Context, c *Card) error { return c.AbortTransaction(ctx) })},
		{name: "get card UID needs a channel", err: ErrNotAuthenticated,
			run: hexOf(func(ctx context.Context, c *Card) ([]byte, error) { return c.GetCardUID(ctx) })},
	}
	runCmdCases(t, cases)
}

func TestGetVersion(t *testing.T) {
	tr := newScript(t,
		exchange{want: "9060000000", resp: "04010133001A05 91AF"},
		exchange{want: "90AF000000", resp: "04010103001A05 91AF"},
		exchange{want: "90AF000000", resp: "04112233445566 BA5EBA11BA 26 25 9100"},
	)
	card := NewCard(tr)
	v, err := card.GetVersion(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	tr.done()
	if v.Hardware.Major != 0x33 || v.Software.Major != 0x03 || v.Hardware.StorageSize != 0x1A ||
		!bytes.Equal(v.UID, mustHex(t, "04112233445566")) || v.ProductionWeek != 0x26 || v.ProductionYear != 0x25 || v.HasFabKeyID {
		t.Fatalf("version %+v", v)
	}
	if card.RoundTrips() != 3 {
		t.Fatalf("%d round trips", card.RoundTrips())
	}
}

func TestParseVersion(t *testing.T) {
	base := mustHex(t, "04010133001A05 04010103001A05 04112233445566 BA5EBA11BA 26 25")
	tests := []struct {
		name string
		in   []byte
		fab  bool
		err  error
	}{
		{"28 bytes", base, false, nil},
		{"with FabKeyID", append(append([]byte(nil), base...), 0x1F), true, nil},
		{"short", base[:27], false, ErrShortResponse},
		{"overlong", append(append([]byte(nil), base...), 1, 2), false, ErrLongResponse},
		{"empty", nil, false, ErrShortResponse},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := ParseVersion(tc.in)
			if !errors.Is(err, tc.err) {
				t.Fatalf("error %v, want %v", err, tc.err)
			}
			if err == nil && (v.HasFabKeyID != tc.fab || (tc.fab && v.FabKeyID != 0x1F)) {
				t.Fatalf("version %+v", v)
			}
		})
	}
}

func TestParseCardUID(t *testing.T) {
	for n, want := range map[int]error{0: ErrShortResponse, 4: ErrShortResponse, 7: nil, 8: ErrLongResponse, 10: nil, 11: ErrLongResponse} {
		if _, err := ParseCardUID(make([]byte, n)); !errors.Is(err, want) {
			t.Errorf("%d bytes: %v, want %v", n, err, want)
		}
	}
}

func TestSplitRecords(t *testing.T) {
	if _, err := SplitRecords([]byte{1, 2}, 0); !errors.Is(err, ErrParameter) {
		t.Fatalf("size 0: %v", err)
	}
	r, err := SplitRecords(nil, 16)
	if err != nil || len(r) != 0 {
		t.Fatalf("empty: %v %v", r, err)
	}
}

// TestCommandsAuthenticated checks the protection each command asks for
// when a channel is installed (fakeChannel passes payloads through).
func TestCommandsAuthenticated(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name     string
		run      func(c *Card) error
		code     byte
		mode     CommMode
		respMode CommMode
		header   string
		data     string
		resp     string
	}{
		{"get key version", func(c *Card) error { _, err := c.GetKeyVersion(ctx, 0); return err }, CmdGetKeyVersion, CommMAC, CommMAC, "00", "", "01 9100"},
		{"get version", func(c *Card) error { _, err := c.GetVersion(ctx); return err }, CmdGetVersion, CommMAC, CommMAC, "", "", strings.Repeat("00", 28) + "9100"},
		{"get card UID", func(c *Card) error { _, err := c.GetCardUID(ctx); return err }, CmdGetCardUID, CommMAC, CommFull, "", "", "04112233445566 9100"},
		{"get file settings", func(c *Card) error { _, err := c.GetFileSettings(ctx, 2); return err }, CmdGetFileSettings, CommMAC, CommMAC, "02", "", "0000EEEE200000 9100"},
		{"get value full", func(c *Card) error { _, err := c.GetValue(ctx, 3, CommFull); return err }, CmdGetValue, CommMAC, CommFull, "03", "", "01000000 9100"},
		{"credit full", func(c *Card) error { return c.Credit(ctx, 3, 0x99, CommFull) }, CmdCredit, CommFull, CommMAC, "03", "99000000", "9100"},
		{"debit full", func(c *Card) error { return c.Debit(ctx, 3, 0x71, CommFull) }, CmdDebit, CommFull, CommMAC, "03", "71000000", "9100"},
		{"read data full", func(c *Card) error { _, err := c.ReadData(ctx, 0, 0, 0x30, CommFull); return err }, CmdReadData, CommMAC, CommFull, "00000000300000", "", strings.Repeat("22", 0x30) + "9100"},
		{"write record full", func(c *Card) error {
			return c.WriteRecord(ctx, 1, 0, mustHex(t, "11223344556677889900112233445566"), CommFull)
		}, CmdWriteRecord, CommFull, CommMAC, "01000000100000", "11223344556677889900112233445566", "9100"},
		{"read records full", func(c *Card) error { _, err := c.ReadRecords(ctx, 1, 0, 0, 16, CommFull); return err }, CmdReadRecords, CommMAC, CommFull, "01000000000000", "", strings.Repeat("11", 32) + "9100"},
		{"commit reader ID", func(c *Card) error {
			_, err := c.CommitReaderID(ctx, mustHex(t, "28BF1982BE086FBC60A22DAEB66613EE"))
			return err
		}, CmdCommitReaderID, CommMAC, CommMAC, "", "28BF1982BE086FBC60A22DAEB66613EE", strings.Repeat("00", 16) + "9100"},
		{"commit transaction TMAC", func(c *Card) error { _, _, err := c.CommitTransaction(ctx, true); return err }, CmdCommitTransaction, CommMAC, CommMAC, "01", "", strings.Repeat("00", 12) + "9100"},
		{"abort", func(c *Card) error { return c.AbortTransaction(ctx) }, CmdAbortTransaction, CommMAC, CommMAC, "", "", "9100"},
		{"clear record file", func(c *Card) error { return c.ClearRecordFile(ctx, 4) }, CmdClearRecordFile, CommMAC, CommMAC, "04", "", "9100"},
		{"change file settings", func(c *Card) error { return c.ChangeFileSettings(ctx, 4, mustHex(t, "00EEEE"), CommFull) }, CmdChangeFileSettings, CommFull, CommMAC, "04", "00EEEE", "9100"},
		{"change key settings", func(c *Card) error { return c.ChangeKeySettings(ctx, 0x0B) }, CmdChangeKeySettings, CommFull, CommMAC, "", "0B", "9100"},
		{"create application", func(c *Card) error { return c.CreateApplication(ctx, []byte{1, 2, 3}, 0x0B, 0x85) }, CmdCreateApplication, CommMAC, CommMAC, "0102030B85", "", "9100"},
		{"create TMAC file", func(c *Card) error {
			return c.CreateTransactionMACFile(ctx, 5, 0, []byte{0xF0, 0x1F}, bytes.Repeat([]byte{0x42}, 16), 1)
		}, CmdCreateTransactionMACFile, CommFull, CommMAC, "0500F01F02", strings.Repeat("42", 16) + "01", "9100"},
		{"format PICC", func(c *Card) error { return c.FormatPICC(ctx) }, CmdFormatPICC, CommMAC, CommMAC, "", "", "9100"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			card := NewCard(newScript(t, exchange{resp: tc.resp}))
			ch := &fakeChannel{}
			card.SetChannel(ch)
			if err := tc.run(card); err != nil {
				t.Fatal(err)
			}
			if len(ch.sealed) != 1 {
				t.Fatalf("%d commands sealed", len(ch.sealed))
			}
			c := ch.sealed[0]
			if c.Code != tc.code || c.Mode != tc.mode || c.RespMode != tc.respMode ||
				fmt.Sprintf("%X", c.Header) != tc.header || fmt.Sprintf("%X", c.Data) != tc.data {
				t.Fatalf("sealed %02X mode %v/%v header %X data %X; want %02X %v/%v %s %s",
					c.Code, c.Mode, c.RespMode, c.Header, c.Data, tc.code, tc.mode, tc.respMode, tc.header, tc.data)
			}
		})
	}
}

func TestIssuanceCommands(t *testing.T) {
	access := []byte{0x10, 0x32} // RW 1, Change 0, Read 3, Write 2
	none := func(f func(ctx context.Context, c *Card) error) func(context.Context, *Card) (any, error) {
		return func(ctx context.Context, c *Card) (any, error) { return "ok", f(ctx, c) }
	}
	cases := []cmdCase{
		{name: "create application", apdu: "90CA000005 563412 0B 85 00", resp: "9100", want: "ok",
			run: none(func(ctx context.Context, c *Card) error {
				return c.CreateApplication(ctx, []byte{0x56, 0x34, 0x12}, 0x0B, 0x85)
			})},
		{name: "create application with ISO names", apdu: "90CA00000B 563412 0B A5 0110 D2760000 00", resp: "9100", want: "ok",
			run: none(func(ctx context.Context, c *Card) error {
				return c.CreateApplicationWith(ctx, Application{AID: []byte{0x56, 0x34, 0x12}, KeySett1: 0x0B, KeySett2: 0xA5, ISOFileID: 0x1001, DFName: []byte{0xD2, 0x76, 0, 0}})
			})},
		{name: "create application: ISO name without bit 5", err: ErrParameter,
			run: none(func(ctx context.Context, c *Card) error {
				return c.CreateApplicationWith(ctx, Application{AID: []byte{1, 2, 3}, DFName: []byte{1}})
			})},
		{name: "create application: duplicate", apdu: "90CA000005 563412 0B 85 00", resp: "91DE", err: ErrDuplicate,
			run: none(func(ctx context.Context, c *Card) error {
				return c.CreateApplication(ctx, []byte{0x56, 0x34, 0x12}, 0x0B, 0x85)
			})},
		{name: "delete application", apdu: "90DA000003 563412 00", resp: "9100", want: "ok",
			run: none(func(ctx context.Context, c *Card) error { return c.DeleteApplication(ctx, []byte{0x56, 0x34, 0x12}) })},
		{name: "format PICC", apdu: "90FC000000", resp: "9100", want: "ok",
			run: none(func(ctx context.Context, c *Card) error { return c.FormatPICC(ctx) })},
		{name: "create standard data file", apdu: "90CD000007 01 00 1032 200000 00", resp: "9100", want: "ok",
			run: none(func(ctx context.Context, c *Card) error { return c.CreateStdDataFile(ctx, 1, 0, access, 32) })},
		{name: "create backup data file", apdu: "90CB000007 01 03 1032 200000 00", resp: "9100", want: "ok",
			run: none(func(ctx context.Context, c *Card) error { return c.CreateBackupDataFile(ctx, 1, 3, access, 32) })},
		{name: "create data file: bad access", err: ErrParameter,
			run: none(func(ctx context.Context, c *Card) error { return c.CreateStdDataFile(ctx, 1, 0, []byte{1}, 32) })},
		{name: "create value file", apdu: "90CC000011 02 01 1032 00000000 A0860100 0A000000 01 00", resp: "9100", want: "ok",
			run: none(func(ctx context.Context, c *Card) error {
				return c.CreateValueFile(ctx, 2, 1, access, 0, 100000, 10, true)
			})},
		{name: "create value file: value outside limits", err: ErrParameter,
			run: none(func(ctx context.Context, c *Card) error {
				return c.CreateValueFile(ctx, 2, 1, access, 0, 10, 11, false)
			})},
		{name: "create linear record file", apdu: "90C100000A 03 00 1032 100000 050000 00", resp: "9100", want: "ok",
			run: none(func(ctx context.Context, c *Card) error { return c.CreateLinearRecordFile(ctx, 3, 0, access, 16, 5) })},
		{name: "create cyclic record file", apdu: "90C000000A 04 03 1032 100000 0A0000 00", resp: "9100", want: "ok",
			run: none(func(ctx context.Context, c *Card) error { return c.CreateCyclicRecordFile(ctx, 4, 3, access, 16, 10) })},
		{name: "create transaction MAC file (plain)", apdu: "90CE000016 0F 00 F01F 02 " + strings.Repeat("42", 16) + " 01 00", resp: "9100", want: "ok",
			run: none(func(ctx context.Context, c *Card) error {
				return c.CreateTransactionMACFile(ctx, 0x0F, 0, []byte{0xF0, 0x1F}, bytes.Repeat([]byte{0x42}, 16), 1)
			})},
		{name: "change key without channel", err: ErrNotAuthenticated,
			run: none(func(ctx context.Context, c *Card) error {
				return c.ChangeKey(ctx, 1, 0, make([]byte, 16), make([]byte, 16), 1)
			})},
		{name: "change key settings without channel", err: ErrNotAuthenticated,
			run: none(func(ctx context.Context, c *Card) error { return c.ChangeKeySettings(ctx, 0x0F) })},
		{name: "change file settings plain", apdu: "905F000004 04 00 EEEE 00", resp: "9100", want: "ok",
			run: none(func(ctx context.Context, c *Card) error {
				return c.ChangeFileSettings(ctx, 4, mustHex(t, "00EEEE"), CommPlain)
			})},
	}
	runCmdCases(t, cases)
}

func TestAccessRights(t *testing.T) {
	a := NewAccessRights(3, 2, 1, 0)
	if a.Read() != 3 || a.Write() != 2 || a.ReadWrite() != 1 || a.Change() != 0 || !bytes.Equal(a.Bytes(), []byte{0x10, 0x32}) {
		t.Fatalf("access %04X %X", uint16(a), a.Bytes())
	}
}
