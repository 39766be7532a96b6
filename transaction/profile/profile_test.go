package profile

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/desfire/personalize"
)

func TestDefaultsValid(t *testing.T) {
	for name, p := range DefaultSet() {
		if err := p.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	p := AN12113()
	if got := p.AIDBytes(); !bytes.Equal(got, []byte{0x99, 0x44, 0x01}) {
		t.Fatalf("AID bytes %X", got)
	}
}

func TestValidateRejects(t *testing.T) {
	cases := map[string]func(*Profile){
		"no name":       func(p *Profile) { p.Name = "" },
		"aid zero":      func(p *Profile) { p.AID = 0 },
		"aid too big":   func(p *Profile) { p.AID = 0x1000000 },
		"auth":          func(p *Profile) { p.Auth = "des" },
		"currency":      func(p *Profile) { p.Currency = "eur" },
		"tmac on ev1":   func(p *Profile) { p.Auth = AuthEV1 },
		"limits":        func(p *Profile) { p.UpperLimit = p.LowerLimit },
		"key number":    func(p *Profile) { p.TopUpKeyNo = 14 },
		"master as top": func(p *Profile) { p.TopUpKeyNo = p.MasterKeyNo },
		"comm mode":     func(p *Profile) { p.ValueMode = 2 },
		"log records":   func(p *Profile) { p.LogRecords = 1 },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			p := AN12113()
			mutate(&p)
			if err := p.Validate(); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Validate = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestLogRecordRoundTrip(t *testing.T) {
	r := LogRecord{Timestamp: 0x01020304, Amount: -5, Ref: [8]byte{1, 2, 3, 4, 5, 6, 7, 8}}
	b := r.Marshal()
	want := []byte{4, 3, 2, 1, 0xFB, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4, 5, 6, 7, 8}
	if !bytes.Equal(b, want) {
		t.Fatalf("marshal %X, want %X", b, want)
	}
	got, err := ParseLogRecord(b)
	if err != nil || got != r {
		t.Fatalf("parse = %+v, %v", got, err)
	}
	if _, err := ParseLogRecords(append(b, 0)); !errors.Is(err, ErrRecord) {
		t.Fatalf("odd length: %v", err)
	}
	rs, err := ParseLogRecords(append(b, b...))
	if err != nil || len(rs) != 2 {
		t.Fatalf("two records: %v %v", rs, err)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "p.json")
	os.WriteFile(good, []byte(`[{"name":"metro","aid":1193046,"auth":"ev2","currency":"USD","upper_limit":5000,"topup_key_no":3,"record_size":16,"log_records":10,"has_tmac":true,"value_mode":3,"topup_log_mode":3}]`), 0o600)
	set, err := Load(good)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := set.Get("metro"); err != nil || p.Currency != "USD" {
		t.Fatalf("metro: %+v %v", p, err)
	}
	if _, err := set.Get("nope"); !errors.Is(err, ErrUnknownProfile) {
		t.Fatalf("unknown: %v", err)
	}
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`[{"name":"x","aid":0}]`), 0o600)
	if _, err := Load(bad); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad profile: %v", err)
	}
}

// TestLoadOneSourceOfTruth: the record size is a constant and the
// diversification system identifier lives in the key file, so a profiles
// file that says otherwise, or misspells a setting, is refused instead of
// being silently ignored.
func TestLoadOneSourceOfTruth(t *testing.T) {
	base := `"name":"metro","aid":1193046,"auth":"ev2","currency":"USD","upper_limit":5000,"topup_key_no":3,"log_records":10,"has_tmac":true,"value_mode":3,"topup_log_mode":3`
	for _, c := range []struct{ name, extra, want string }{
		{"record size", `,"record_size":32`, "record size 32"},
		{"system id", `,"system_id":"metro"`, "system_id belongs in the key file"},
		{"misspelt", `,"log_record":10`, "unknown field"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "p.json")
			os.WriteFile(f, []byte(`[{`+base+c.extra+`}]`), 0o600)
			_, err := Load(f)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Load = %v, want ErrInvalid mentioning %q", err, c.want)
			}
		})
	}
}

// TestPlainModesRefused: a profile whose value file or top-up log is in
// CommMode.Plain could never prove a credit (a bridge forges plain
// answers), so it is refused at start-up with a message that says why.
func TestPlainModesRefused(t *testing.T) {
	for _, c := range []struct {
		name string
		mod  func(*Profile)
		want string
	}{
		{"value", func(p *Profile) { p.ValueMode = desfire.CommPlain }, "value file in CommMode.Plain"},
		{"topup-log", func(p *Profile) { p.TopUpLogMode = desfire.CommPlain }, "top-up log in CommMode.Plain"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := AN12113()
			c.mod(&p)
			err := p.Validate()
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("plain %s: %v", c.name, err)
			}
		})
	}
	p := AN12113()
	p.UsageLogMode = desfire.CommPlain // terminals' log: read for display only
	if err := p.Validate(); err != nil {
		t.Fatalf("plain usage log: %v", err)
	}
	dir := t.TempDir()
	f := filepath.Join(dir, "plain.json")
	os.WriteFile(f, []byte(`[{"name":"metro","aid":1193046,"auth":"ev2","currency":"USD","upper_limit":5000,"topup_key_no":3,"record_size":16,"log_records":10,"has_tmac":true}]`), 0o600)
	if _, err := Load(f); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "CommMode.Plain") {
		t.Fatalf("profile file with default (plain) modes: %v", err)
	}
}

func FuzzParseLogRecords(f *testing.F) {
	f.Add(make([]byte, 32))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		rs, err := ParseLogRecords(b)
		if err == nil && len(rs)*RecordSize != len(b) {
			t.Fatalf("%d records from %d bytes", len(rs), len(b))
		}
		for _, r := range rs {
			if !bytes.Equal(r.Marshal(), b[:RecordSize]) && len(rs) == 1 {
				t.Fatal("round trip")
			}
		}
	})
}

// TestLayoutRoundTrip checks that the built-in profiles carry their
// personalize layouts unchanged both ways, so the card a bridge issues
// from a layout is the card the server's profile expects.
func TestLayoutRoundTrip(t *testing.T) {
	for _, p := range DefaultSet() {
		l, err := personalize.Builtin(p.Name)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.Layout(); got != l {
			t.Errorf("%s: layout %+v, built-in %+v", p.Name, got, l)
		}
		q := FromLayout(l)
		if q.Layout() != l {
			t.Errorf("%s: FromLayout does not round-trip", p.Name)
		}
	}
}
