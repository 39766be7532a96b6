// Command simserve serves one simulated DESFire card over standard input
// and output, so that bridges written in other languages (the TypeScript
// package in mobile-bridge/ts) can be tested against the real relay
// server without hardware. The card is personalised on start through the
// real issuance commands (bridge.IssueSim) with the key file the server
// uses, then answers one request line at a time:
//
//	apdu <hex>        → ok <hex response APDU> | err tag_lost | err <message>
//	remove-after <n>  → ok   (the card answers n more APDUs, then leaves the field)
//	remove            → ok   (the card leaves the field now)
//	tear-after-commit → ok   (the next CommitTransaction is durable but its answer is lost: in doubt)
//	tap               → ok   (the card is presented again; volatile state reset)
//	uid               → ok <hex UID>
//	value             → ok <balance of the profile's value file>
//	apdus             → ok <number of APDUs the card executed>
//
// On start it prints "ready <hex UID>". A malformed request gets an
// "err ..." line and the card is untouched; simserve never panics on
// input. It ends at end of input.
//
// simserve is a test harness, not a bridge: it holds development keys.
package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/desfire-relay/relay/desfire/personalize"
	"github.com/desfire-relay/relay/desfire/simcard"
	"github.com/desfire-relay/relay/mobile-bridge/bridge"
)

// maxLine bounds one request line: an APDU of at most 261 bytes is 522
// hex digits, so 4 KiB leaves room while keeping input bounded.
const maxLine = 4 << 10

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, in io.Reader, out, errOut io.Writer) int {
	fs := flag.NewFlagSet("simserve", flag.ContinueOnError)
	fs.SetOutput(errOut)
	keyFile := fs.String("keys", "data/dev-keys.json", "key file the server uses (relayd dev mode: <data-dir>/dev-keys.json)")
	profName := fs.String("profile", "an12113-ev2", "card profile to issue")
	uidHex := fs.String("uid", "04A1B2C3D4E5F6", "card UID (7 bytes hex)")
	initial := fs.Int("initial", 0, "initial balance of the value file (minor units)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	uid, err := hex.DecodeString(*uidHex)
	if err != nil || len(uid) != 7 {
		fmt.Fprintln(errOut, "simserve: -uid must be 7 bytes of hex")
		return 2
	}
	prof, err := personalize.Builtin(*profName)
	if err != nil {
		fmt.Fprintln(errOut, "simserve:", err)
		return 2
	}
	ctx := context.Background()
	card, err := bridge.IssueSim(ctx, *keyFile, *profName, uid, int32(*initial))
	if err != nil {
		fmt.Fprintln(errOut, "simserve:", err)
		return 1
	}
	s := &server{card: card, aid: prof.AIDBytes(), valueFile: prof.ValueFile}
	if err := s.serve(ctx, in, out); err != nil {
		fmt.Fprintln(errOut, "simserve:", err)
		return 1
	}
	return 0
}

// server answers request lines for one card.
type server struct {
	card      *simcard.Card
	aid       []byte
	valueFile byte
}

// serve prints the ready line, then answers each input line with one
// output line until the input ends.
func (s *server) serve(ctx context.Context, in io.Reader, out io.Writer) error {
	w := bufio.NewWriter(out)
	fmt.Fprintf(w, "ready %X\n", s.card.UID())
	if err := w.Flush(); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 1024), maxLine)
	for sc.Scan() {
		fmt.Fprintln(w, s.handle(ctx, sc.Text()))
		if err := w.Flush(); err != nil {
			return fmt.Errorf("write: %w", err)
		}
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintln(w, "err", err)
		w.Flush()
		return fmt.Errorf("read: %w", err)
	}
	return nil
}

// Operations of the line protocol.
const (
	opAPDU        = "apdu"
	opRemoveAfter = "remove-after"
	opRemove      = "remove"
	opTear        = "tear-after-commit"
	opTap         = "tap"
	opUID         = "uid"
	opValue       = "value"
	opAPDUs       = "apdus"
)

// request is one parsed line.
type request struct {
	op   string
	apdu []byte // opAPDU
	n    int    // opRemoveAfter
}

// errRequest is wrapped by every parse error.
var errRequest = errors.New("bad request")

// maxAPDU is the longest command APDU accepted (CLA INS P1 P2 Lc 255 Le).
const maxAPDU = 261

// parseLine parses one request line. Surrounding white space is ignored;
// words are separated by single or repeated spaces.
func parseLine(line string) (request, error) {
	f := strings.Fields(line)
	if len(f) == 0 {
		return request{}, fmt.Errorf("empty line: %w", errRequest)
	}
	r := request{op: f[0]}
	args := f[1:]
	want := 0
	switch r.op {
	case opAPDU, opRemoveAfter:
		want = 1
	case opRemove, opTear, opTap, opUID, opValue, opAPDUs:
	default:
		return request{}, fmt.Errorf("unknown operation %q: %w", clip(r.op), errRequest)
	}
	if len(args) != want {
		return request{}, fmt.Errorf("%s takes %d argument(s), got %d: %w", r.op, want, len(args), errRequest)
	}
	switch r.op {
	case opAPDU:
		b, err := hex.DecodeString(args[0])
		if err != nil {
			return request{}, fmt.Errorf("apdu: bad hex: %w", errRequest)
		}
		if len(b) < 4 || len(b) > maxAPDU {
			return request{}, fmt.Errorf("apdu of %d bytes (want 4..%d): %w", len(b), maxAPDU, errRequest)
		}
		r.apdu = b
	case opRemoveAfter:
		n, err := strconv.Atoi(args[0])
		if err != nil || n < 0 || n > 1<<20 {
			return request{}, fmt.Errorf("remove-after: %q is not a count: %w", clip(args[0]), errRequest)
		}
		r.n = n
	}
	return r, nil
}

// handle runs one request line and returns the answer line (without the
// newline). It never panics on input.
func (s *server) handle(ctx context.Context, line string) string {
	r, err := parseLine(line)
	if err != nil {
		return "err " + err.Error()
	}
	switch r.op {
	case opAPDU:
		resp, err := bridge.Sim{Card: s.card}.Transmit(ctx, r.apdu)
		if errors.Is(err, bridge.ErrTagLost) {
			return "err tag_lost"
		}
		if err != nil {
			return "err " + oneLine(err.Error())
		}
		return fmt.Sprintf("ok %X", resp)
	case opRemoveAfter:
		s.card.RemoveAfter(r.n)
	case opRemove:
		s.card.Remove()
	case opTear:
		s.card.SetTearAfterCommit(true)
	case opTap:
		if err := s.card.Tap(); err != nil {
			return "err " + oneLine(err.Error())
		}
	case opUID:
		return fmt.Sprintf("ok %X", s.card.UID())
	case opValue:
		v, err := s.card.Value(s.aid, s.valueFile)
		if err != nil {
			return "err " + oneLine(err.Error())
		}
		return fmt.Sprintf("ok %d", v)
	case opAPDUs:
		return fmt.Sprintf("ok %d", s.card.APDUs())
	}
	return "ok"
}

// clip keeps echoed input short in error lines.
func clip(s string) string {
	if len(s) > 32 {
		return s[:32] + "…"
	}
	return s
}

// oneLine keeps an answer on one line whatever an error message holds.
func oneLine(s string) string {
	return strings.NewReplacer("\n", " ", "\r", " ").Replace(s)
}
