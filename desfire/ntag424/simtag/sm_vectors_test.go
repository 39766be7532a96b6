package simtag

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"testing"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/desfire/ntag424"
)

type smVector struct {
	ID      string `json:"id"`
	SesENC  string `json:"ses_enc"`
	SesMAC  string `json:"ses_mac"`
	TI      string `json:"ti"`
	CmdCtr  uint16 `json:"cmd_ctr"`
	Cmd     string `json:"cmd"`
	Header  string `json:"header"`
	Data    string `json:"data"`
	Payload string `json:"payload"`
}

func smVectors(t *testing.T) map[string]smVector {
	t.Helper()
	raw, err := readVector("ev2_secure_messaging.json")
	if err != nil {
		t.Fatal(err)
	}
	var f struct{ Vectors []smVector }
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	out := map[string]smVector{}
	for _, v := range f.Vectors {
		out[v.ID] = v
	}
	return out
}

func hx(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAN12196Traces replays the published NTAG 424 DNA traces of AN12196
// against the simulated tag's card side, byte for byte: given the
// session keys, TI and counter of the trace, the tag accepts the
// published command and answers exactly the published response.
func TestAN12196Traces(t *testing.T) {
	vs := smVectors(t)
	ctx := context.Background()
	session := func(t *testing.T, tag *Tag, cmd smVector, keyNo byte) {
		enc := make([]byte, 16)
		if cmd.SesENC != "" {
			enc = hx(t, cmd.SesENC)
		}
		tag.appSel = true
		tag.sess = &session{keyNo: keyNo, enc: enc, mac: hx(t, cmd.SesMAC), ti: hx(t, cmd.TI), ctr: cmd.CmdCtr}
	}
	apdu := func(t *testing.T, v smVector) []byte {
		a, err := desfire.WrapNative(hx(t, v.Cmd)[0], hx(t, v.Payload))
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	cases := []struct {
		cmd, resp string
		keyNo     byte
		uid       string
		prepare   func(tag *Tag)
		check     func(t *testing.T, tag *Tag, cmd smVector)
	}{
		{cmd: "an12196-5.3-getfilesettings-mac", resp: "an12196-5.3-getfilesettings-resp", prepare: func(tag *Tag) {
			// The NDEF file settings of the trace: SDM with encrypted
			// PICC data at 1F, encrypted file data 44+20, MAC at 6A.
			fs, err := ntag424.ParseChangeFileSettings(hx(t, "40EEEED1FE001F00004400004400002000006A0000"))
			if err != nil {
				t.Fatal(err)
			}
			tag.files[ntag424.FileNDEF].settings = fs
		}},
		{cmd: "an12196-5.4-writedata-full", resp: "an12196-5.4-writedata-resp", prepare: func(tag *Tag) {
			tag.files[ntag424.FileNDEF].settings = ntag424.FileSettings{Mode: desfire.CommFull, Access: desfire.NewAccessRights(desfire.AccessFree, 0, 0, 0)}
		}, check: func(t *testing.T, tag *Tag, cmd smVector) {
			if got := tag.FileData(ntag424.FileNDEF)[:128]; !bytes.Equal(got, hx(t, cmd.Data)) {
				t.Fatalf("NDEF file %X", got)
			}
		}},
		{cmd: "an12196-6.12-writedata-full", resp: "an12196-6.12-writedata-resp", keyNo: 3, check: func(t *testing.T, tag *Tag, cmd smVector) {
			if got := tag.FileData(ntag424.FileProprietary)[:10]; !bytes.Equal(got, hx(t, cmd.Data)) {
				t.Fatalf("proprietary file %X", got)
			}
		}},
		{cmd: "an12196-7.3-getcarduid-cmd", resp: "an12196-7.3-getcarduid-resp", uid: "04958CAA5C5E80"},
		{cmd: "an12196-t26-changekey-case2", check: func(t *testing.T, tag *Tag, cmd smVector) {
			k, v := tag.Key(0)
			if !bytes.Equal(k, hx(t, "5004BF991F408672B1EF00F08F9E8647")) || v != 1 || tag.sess != nil {
				t.Fatalf("key 0 %X v%d, session %v", k, v, tag.sess != nil)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.cmd, func(t *testing.T) {
			cmd, ok := vs[c.cmd]
			if !ok {
				t.Fatalf("vector %s missing", c.cmd)
			}
			opts := Options{}
			if c.uid != "" {
				opts.UID = hx(t, c.uid)
			}
			tag, err := New(opts)
			if err != nil {
				t.Fatal(err)
			}
			if c.prepare != nil {
				c.prepare(tag)
			}
			session(t, tag, cmd, c.keyNo)
			r, err := tag.Transmit(ctx, apdu(t, cmd))
			if err != nil {
				t.Fatal(err)
			}
			want := []byte{0x91, 0x00}
			if c.resp != "" {
				want = append(hx(t, vs[c.resp].Payload), 0x91, 0x00)
			}
			if !bytes.Equal(r, want) {
				t.Fatalf("answer %X, want %X", r, want)
			}
			if c.check != nil {
				c.check(t, tag, cmd)
			}
		})
	}
}
