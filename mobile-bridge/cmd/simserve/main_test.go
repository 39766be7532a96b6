package main

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/desfire-relay/relay/desfire/personalize"
	"github.com/desfire-relay/relay/desfire/simcard"
	"github.com/desfire-relay/relay/mobile-bridge/bridge"
)

// keyFile writes development keys for the built-in profiles, as relayd
// does in dev mode, and returns the path.
func keyFile(t testing.TB) string {
	t.Helper()
	f, err := personalize.DevKeyFile(nil, personalize.AN12113().AID, personalize.AN12113EV1().AID)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "dev-keys.json")
	if err := personalize.WriteKeyFile(path, f); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestParseLine(t *testing.T) {
	cases := []struct {
		name, line string
		want       request
		wantErr    bool
	}{
		{name: "apdu", line: "apdu 905A00000399440100", want: request{op: opAPDU, apdu: []byte{0x90, 0x5A, 0, 0, 3, 0x99, 0x44, 1, 0}}},
		{name: "apdu split by a tab", line: "  apdu   906000000\t0 ", wantErr: true},
		{name: "apdu lower hex", line: "apdu 90600000", want: request{op: opAPDU, apdu: []byte{0x90, 0x60, 0, 0}}},
		{name: "remove-after", line: "remove-after 3", want: request{op: opRemoveAfter, n: 3}},
		{name: "remove-after zero", line: "remove-after 0", want: request{op: opRemoveAfter}},
		{name: "tap", line: "tap", want: request{op: opTap}},
		{name: "uid", line: "uid", want: request{op: opUID}},
		{name: "value", line: " value ", want: request{op: opValue}},
		{name: "apdus", line: "apdus", want: request{op: opAPDUs}},
		{name: "remove", line: "remove", want: request{op: opRemove}},
		{name: "tear", line: "tear-after-commit", want: request{op: opTear}},
		{name: "empty", line: "", wantErr: true},
		{name: "blank", line: "   ", wantErr: true},
		{name: "unknown", line: "format-card", wantErr: true},
		{name: "apdu without hex", line: "apdu", wantErr: true},
		{name: "apdu odd hex", line: "apdu 906", wantErr: true},
		{name: "apdu not hex", line: "apdu 90zz0000", wantErr: true},
		{name: "apdu too short", line: "apdu 9060", wantErr: true},
		{name: "apdu too long", line: "apdu " + strings.Repeat("00", maxAPDU+1), wantErr: true},
		{name: "apdu two args", line: "apdu 90600000 00", wantErr: true},
		{name: "remove-after negative", line: "remove-after -1", wantErr: true},
		{name: "remove-after word", line: "remove-after many", wantErr: true},
		{name: "remove-after huge", line: "remove-after 99999999999999999999", wantErr: true},
		{name: "tap with arg", line: "tap now", wantErr: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := parseLine(c.line)
			if c.wantErr {
				if !errors.Is(err, errRequest) {
					t.Fatalf("parseLine(%q) = %+v, %v; want errRequest", c.line, got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseLine(%q): %v", c.line, err)
			}
			if got.op != c.want.op || got.n != c.want.n || !bytes.Equal(got.apdu, c.want.apdu) {
				t.Fatalf("parseLine(%q) = %+v, want %+v", c.line, got, c.want)
			}
		})
	}
}

// TestServe runs a scripted conversation through serve against a freshly
// issued card: the answers follow the line protocol, malformed lines get
// an error line and leave the card usable.
func TestServe(t *testing.T) {
	keys := keyFile(t)
	const (
		getVersion = "apdu 9060000000" // native GetVersion, ISO wrapped with Le
		selectApp  = "apdu 905A00000399440100"
	)
	steps := []struct {
		line, want string // want: exact answer, or prefix when it ends in "*"
	}{
		{"uid", "ok 04A1B2C3D4E5F6"},
		{"value", "ok 250"},
		{"bogus", "err unknown operation*"},
		{"apdu zz", "err apdu: bad hex*"},
		{"", "err empty line*"},
		{getVersion, "ok *91AF"},
		{"tap", "ok"},
		{selectApp, "ok 9100"},
		{"remove-after 1", "ok"},
		{getVersion, "ok *91AF"},
		{getVersion, "err tag_lost"},
		{getVersion, "err tag_lost"},
		{"tap", "ok"},
		{selectApp, "ok 9100"},
		{"remove", "ok"},
		{selectApp, "err tag_lost"},
		{"tap", "ok"},
		{"apdu 00A4040000", "ok 6E00"},
		{"tear-after-commit", "ok"},
		{"apdus", "ok *"},
	}
	var in strings.Builder
	for _, s := range steps {
		in.WriteString(s.line + "\n")
	}
	var out bytes.Buffer
	if code := run([]string{"-keys", keys, "-uid", "04a1b2c3d4e5f6", "-initial", "250"}, strings.NewReader(in.String()), &out, &out); code != 0 {
		t.Fatalf("run exited %d: %s", code, out.String())
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if lines[0] != "ready 04A1B2C3D4E5F6" {
		t.Fatalf("first line %q", lines[0])
	}
	lines = lines[1:]
	if len(lines) != len(steps) {
		t.Fatalf("%d answers to %d requests:\n%s", len(lines), len(steps), out.String())
	}
	for i, s := range steps {
		t.Run(s.line, func(t *testing.T) {
			got := lines[i]
			pre, suf, wild := strings.Cut(s.want, "*")
			if !wild && got != s.want || wild && (!strings.HasPrefix(got, pre) || !strings.HasSuffix(got, suf) || len(got) < len(pre)+len(suf)) {
				t.Fatalf("%q → %q, want %s", s.line, got, s.want)
			}
		})
	}
}

// TestRunFlags: bad flags and a missing key file fail cleanly.
func TestRunFlags(t *testing.T) {
	cases := []struct {
		name string
		args []string
		code int
	}{
		{"bad uid", []string{"-uid", "0102"}, 2},
		{"bad profile", []string{"-profile", "nope"}, 2},
		{"unknown flag", []string{"-frob"}, 2},
		{"missing keys", []string{"-keys", filepath.Join(t.TempDir(), "none.json")}, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			if got := run(c.args, strings.NewReader(""), &out, &out); got != c.code {
				t.Fatalf("exit %d, want %d (%s)", got, c.code, out.String())
			}
		})
	}
}

// TestLongLine: a line over the bound ends serve with an error line, not a
// panic or an unbounded read.
func TestLongLine(t *testing.T) {
	keys := keyFile(t)
	var out bytes.Buffer
	in := "uid\napdu " + strings.Repeat("00", maxLine) + "\nuid\n"
	if code := run([]string{"-keys", keys}, strings.NewReader(in), &out, &out); code != 1 {
		t.Fatalf("exit %d: %s", code, out.String())
	}
	if !strings.Contains(out.String(), "err bufio.Scanner: token too long") {
		t.Fatalf("output %q", out.String())
	}
}

var (
	fuzzOnce sync.Once
	fuzzSrv  *server
)

// FuzzHandle feeds arbitrary lines to the parser and, when they parse, to
// the card: every line yields exactly one answer line starting with "ok"
// or "err", and nothing panics.
func FuzzHandle(f *testing.F) {
	for _, s := range []string{
		"apdu 9060000000", "apdu 905A00000399440100", "apdu 00A4040000", "remove-after 2", "tap", "uid",
		"value", "apdus", "remove", "tear-after-commit", "", " ", "apdu", "apdu 9", "remove-after -5", "x y z", "apdu 90AF000000",
	} {
		f.Add(s)
	}
	fuzzOnce.Do(func() {
		p, err := personalize.Builtin("an12113-ev2")
		if err != nil {
			f.Fatal(err)
		}
		card, err := issueForFuzz(f, p)
		if err != nil {
			f.Fatal(err)
		}
		fuzzSrv = &server{card: card, aid: p.AIDBytes(), valueFile: p.ValueFile}
	})
	f.Fuzz(func(t *testing.T, line string) {
		if strings.ContainsAny(line, "\n\r") {
			return // serve splits lines before handle sees them
		}
		got := fuzzSrv.handle(context.Background(), line)
		if !strings.HasPrefix(got, "ok") && !strings.HasPrefix(got, "err ") {
			t.Fatalf("%q → %q", line, got)
		}
		if strings.ContainsAny(got, "\n\r") {
			t.Fatalf("%q → multi-line answer %q", line, got)
		}
		if _, err := parseLine(line); err != nil && !strings.HasPrefix(got, "err ") {
			t.Fatalf("%q failed to parse but answered %q", line, got)
		}
	})
}

// issueForFuzz issues the card the fuzz target talks to.
func issueForFuzz(f *testing.F, p personalize.Layout) (*simcard.Card, error) {
	return bridge.IssueSim(context.Background(), keyFile(f), p.Name, []byte{4, 0xF0, 1, 2, 3, 4, 5}, 100)
}
