package desfire

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/desfire-relay/relay/desfire/internal/vectors"
)

// cmdSMVector is the part of an ev2_secure_messaging.json vector that
// pins a command's header/data split.
type cmdSMVector struct {
	ID      string  `json:"id"`
	Op      string  `json:"op"`
	Mode    string  `json:"mode"`
	Source  string  `json:"source"`
	SesENC  *string `json:"ses_enc"`
	SesMAC  string  `json:"ses_mac"`
	TI      string  `json:"ti"`
	CmdCtr  uint16  `json:"cmd_ctr"`
	Cmd     string  `json:"cmd"`
	Header  string  `json:"header"`
	Data    string  `json:"data"`
	Payload string  `json:"payload"`
}

// builderFor returns the command this package builds for a traced command,
// with the traced code (the ISO-chaining variants 8D, AD, 8B, AB share the
// native commands' layouts), or nil for commands built elsewhere
// (SetConfiguration, ChangeKey).
func builderFor(t *testing.T, v cmdSMVector) *Command {
	h, d := vectors.Hex(t, v.Header), vectors.Hex(t, v.Data)
	mode := CommMAC
	if v.Mode == "full" {
		mode = CommFull
	}
	u24 := func(b []byte) uint32 { return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 }
	var cmd *Command
	switch v.Cmd {
	case "F5":
		cmd = GetFileSettingsCmd(h[0], CommMAC)
	case "51":
		cmd = GetCardUIDCmd()
	case "5F":
		cmd = ChangeFileSettingsCmd(h[0], d, mode)
	case "8D":
		cmd = WriteDataCmd(h[0], u24(h[1:4]), d, mode)
	case "AD":
		cmd = ReadDataCmd(h[0], u24(h[1:4]), u24(h[4:7]), mode)
	case "8B":
		cmd = WriteRecordCmd(h[0], u24(h[1:4]), d, mode)
	case "AB":
		cmd = ReadRecordsCmd(h[0], u24(h[1:4]), u24(h[4:7]), 0, mode)
	case "C8":
		cmd = CommitReaderIDCmd(d, CommMAC)
	case "C7":
		cmd = CommitTransactionCmd(true, true)
	case "6C":
		cmd = GetValueCmd(h[0], mode)
	case "0C":
		cmd = CreditCmd(h[0], int32(binary.LittleEndian.Uint32(d)), mode)
	case "DC":
		cmd = DebitCmd(h[0], int32(binary.LittleEndian.Uint32(d)), mode)
	case "64":
		cmd = getKeyVersionCmd(h[0], CommMAC)
	default:
		return nil
	}
	cmd.Code = vectors.Hex(t, v.Cmd)[0]
	return cmd
}

// TestCommandLayoutVectors checks that each traced command, built by this
// package and sealed under the trace's session, gives the traced payload:
// which bytes are header and which are data, and the comm mode, are then
// as in the NXP application notes.
func TestCommandLayoutVectors(t *testing.T) {
	checked := 0
	for _, v := range vectors.Load[cmdSMVector](t, "ev2_secure_messaging.json") {
		if v.Op != "wrap" {
			continue
		}
		cmd := builderFor(t, v)
		if cmd == nil {
			t.Logf("%s: command %s is built by the channel helpers and checked with them", v.ID, v.Cmd)
			continue
		}
		t.Run(v.ID, func(t *testing.T) {
			t.Logf("source: %s", v.Source)
			if got := fmt.Sprintf("%X", cmd.Header); got != v.Header {
				t.Fatalf("header %s, want %s", got, v.Header)
			}
			if got := fmt.Sprintf("%X", cmd.Data); got != v.Data {
				t.Fatalf("data %s, want %s", got, v.Data)
			}
			enc := make([]byte, 16)
			if v.SesENC != nil {
				enc = vectors.Hex(t, *v.SesENC)
			}
			ch, err := newEV2Channel(enc, vectors.Hex(t, v.SesMAC), vectors.Hex(t, v.TI), v.CmdCtr, 0)
			if err != nil {
				t.Fatal(err)
			}
			payload, _, err := ch.Seal(cmd)
			if err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprintf("%X", payload); got != v.Payload {
				t.Fatalf("payload\n got %s\nwant %s", got, v.Payload)
			}
			checked++
		})
	}
	if checked < 14 {
		t.Fatalf("only %d command vectors checked", checked)
	}
}
