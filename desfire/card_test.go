package desfire

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// mustHex decodes hex written with optional spaces.
func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

// exchange is one scripted command/response pair: want is the expected
// command APDU (hex; "" accepts anything), resp the answer (hex), err a
// transport error instead of an answer.
type exchange struct {
	want string
	resp string
	err  error
}

// scriptTransport answers from a script and fails the test on any
// deviation. It is a plain Transport (no batching).
type scriptTransport struct {
	t     testing.TB
	steps []exchange
	sent  [][]byte
}

func newScript(t testing.TB, steps ...exchange) *scriptTransport {
	return &scriptTransport{t: t, steps: steps}
}

func (s *scriptTransport) Transmit(_ context.Context, capdu []byte) ([]byte, error) {
	s.t.Helper()
	i := len(s.sent)
	s.sent = append(s.sent, append([]byte(nil), capdu...))
	if i >= len(s.steps) {
		s.t.Fatalf("unexpected command %d: %X", i, capdu)
		return nil, errors.New("script exhausted")
	}
	st := s.steps[i]
	if st.want != "" && !bytes.Equal(capdu, mustHex(s.t, st.want)) {
		s.t.Fatalf("command %d:\n got %X\nwant %s", i, capdu, strings.ToUpper(strings.ReplaceAll(st.want, " ", "")))
	}
	if st.err != nil {
		return nil, st.err
	}
	return mustHex(s.t, st.resp), nil
}

// done fails the test when script steps were not used.
func (s *scriptTransport) done() {
	s.t.Helper()
	if len(s.sent) != len(s.steps) {
		s.t.Fatalf("%d of %d scripted commands sent", len(s.sent), len(s.steps))
	}
}

// batchScript is a scriptTransport that is also a Batcher following the
// relay rules, with faults a bridge may inject.
type batchScript struct {
	*scriptTransport
	batches  int
	cutAfter int   // >0: answer only this many, no error (a lying bridge)
	errAfter int   // >0 with err: this many answers, then err
	err      error // transport error
	extra    bool  // append one more answer than commands
}

func (b *batchScript) TransmitBatch(ctx context.Context, cmds []BatchCommand) ([][]byte, error) {
	b.batches++
	out, err := SequentialBatch(ctx, b.scriptTransport, cmds)
	switch {
	case b.err != nil && b.errAfter <= len(out):
		return out[:b.errAfter], b.err
	case b.cutAfter > 0 && b.cutAfter < len(out):
		return out[:b.cutAfter], nil
	case b.extra:
		return append(out, []byte{0x91, 0x00}), err
	}
	return out, err
}

func TestExecFraming(t *testing.T) {
	long := bytes.Repeat([]byte{0xA5}, 130) // 7 header bytes + 130: three frames of 54
	payload := append(rangeHeader(4, 0, 130), long...)
	tests := []struct {
		name  string
		cmd   *Command
		steps []exchange
		want  []byte
		err   error
	}{
		{
			name: "long write split in frames",
			cmd:  WriteDataCmd(4, 0, long, CommPlain),
			steps: []exchange{
				{want: "903D000036" + hex.EncodeToString(payload[:54]) + "00", resp: "91AF"},
				{want: "90AF000036" + hex.EncodeToString(payload[54:108]) + "00", resp: "91AF"},
				{want: "90AF00001D" + hex.EncodeToString(payload[108:]) + "00", resp: "9100"},
			},
			want: []byte{},
		},
		{
			name: "card refuses mid-write",
			cmd:  WriteDataCmd(4, 0, long, CommPlain),
			steps: []exchange{
				{resp: "91AF"},
				{resp: "91BE"},
			},
			err: ErrBoundary,
		},
		{
			name: "data in an intermediate answer",
			cmd:  WriteDataCmd(4, 0, long, CommPlain),
			steps: []exchange{
				{resp: "0191AF"},
			},
			err: ErrUnexpectedStatus,
		},
		{
			name: "success before the last frame",
			cmd:  WriteDataCmd(4, 0, long, CommPlain),
			steps: []exchange{
				{resp: "9100"},
			},
			err: ErrUnexpectedStatus,
		},
		{
			name: "long read reassembled",
			cmd:  ReadDataCmd(1, 0, 0, CommPlain),
			steps: []exchange{
				{want: "90BD0000070100000000000000", resp: "010203 91AF"},
				{want: "90AF000000", resp: "0405 91AF"},
				{want: "90AF000000", resp: "06 9100"},
			},
			want: []byte{1, 2, 3, 4, 5, 6},
		},
		{
			name: "empty continuation frame",
			cmd:  ReadDataCmd(1, 0, 0, CommPlain),
			steps: []exchange{
				{resp: "01 91AF"},
				{resp: "91AF"},
			},
			err: ErrUnexpectedStatus,
		},
		{
			name:  "ISO status word",
			cmd:   ReadDataCmd(1, 0, 0, CommPlain),
			steps: []exchange{{resp: "6A82"}},
			err:   ErrUnknownStatus,
		},
		{
			name:  "answer without status word",
			cmd:   ReadDataCmd(1, 0, 0, CommPlain),
			steps: []exchange{{resp: "91"}},
			err:   ErrShortResponse,
		},
		{
			name:  "transport error",
			cmd:   ReadDataCmd(1, 0, 0, CommPlain),
			steps: []exchange{{err: context.DeadlineExceeded}},
			err:   context.DeadlineExceeded,
		},
		{
			name:  "protected mode without channel",
			cmd:   CreditCmd(1, 5, CommMAC),
			steps: nil,
			err:   ErrNotAuthenticated,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := newScript(t, tc.steps...)
			card := NewCard(tr)
			got, err := card.Exec(context.Background(), tc.cmd)
			if !errors.Is(err, tc.err) {
				t.Fatalf("error %v, want %v", err, tc.err)
			}
			if tc.err == nil && !bytes.Equal(got, tc.want) {
				t.Fatalf("data %X, want %X", got, tc.want)
			}
			tr.done()
			if card.RoundTrips() != len(tc.steps) {
				t.Fatalf("%d round trips, want %d", card.RoundTrips(), len(tc.steps))
			}
		})
	}
}

func TestExecResponseBound(t *testing.T) {
	frame := strings.Repeat("AB", 200)
	var steps []exchange
	for range 3 {
		steps = append(steps, exchange{resp: frame + "91AF"})
	}
	card := NewCard(newScript(t, steps...), WithMaxResponse(500))
	_, err := card.Exec(context.Background(), ReadDataCmd(1, 0, 0, CommPlain))
	if !errors.Is(err, ErrLongResponse) {
		t.Fatalf("error %v, want ErrLongResponse", err)
	}
	if card.RoundTrips() != 3 {
		t.Fatalf("%d round trips, want 3 (stop as soon as the bound is passed)", card.RoundTrips())
	}
}

func TestCardOptions(t *testing.T) {
	if got := NewCard(nil).MaxFrame(); got != DefaultMaxFrame {
		t.Fatalf("default frame %d", got)
	}
	if got := NewCard(nil, WithMaxFrame(120)).MaxFrame(); got != 120 {
		t.Fatalf("frame %d, want 120", got)
	}
	for _, bad := range []int{0, 8, 256} {
		if got := NewCard(nil, WithMaxFrame(bad)).MaxFrame(); got != DefaultMaxFrame {
			t.Fatalf("WithMaxFrame(%d) gave %d", bad, got)
		}
	}
	// A larger frame sends the 137-byte write in two frames.
	data := bytes.Repeat([]byte{1}, 130)
	tr := newScript(t, exchange{resp: "91AF"}, exchange{resp: "9100"})
	card := NewCard(tr, WithMaxFrame(120))
	if err := card.WriteData(context.Background(), 1, 0, data, CommPlain); err != nil {
		t.Fatal(err)
	}
	tr.done()
	if n := len(tr.sent[0]); n != 6+120 {
		t.Fatalf("first frame of %d bytes", n)
	}
}

// fakeChannel is a Channel without cryptography: Seal passes header ‖ data
// through, Open returns the data. It refuses to seal (ErrNotPipelinable)
// while a reply marked blocking is unopened, like EV1 after an
// unpredictable answer.
type fakeChannel struct {
	closed  bool
	pending int // unopened blocking replies
	sealed  []*Command
}

func (f *fakeChannel) Seal(cmd *Command) ([]byte, Reply, error) {
	if f.closed {
		return nil, nil, ErrChannelClosed
	}
	if f.pending > 0 {
		return nil, nil, ErrNotPipelinable
	}
	f.sealed = append(f.sealed, cmd)
	r := &fakeReply{ch: f, blocking: !cmd.Predictable}
	if r.blocking {
		f.pending++
	}
	return append(append([]byte(nil), cmd.Header...), cmd.Data...), r, nil
}

func (f *fakeChannel) Close()             { f.closed = true }
func (f *fakeChannel) Err() error         { return map[bool]error{true: ErrChannelClosed}[f.closed] }
func (f *fakeChannel) Generation() string { return "fake" }

type fakeReply struct {
	ch       *fakeChannel
	blocking bool
}

func (r *fakeReply) Open(status byte, data []byte) ([]byte, error) {
	if r.blocking {
		r.ch.pending--
	}
	if r.ch.closed {
		return nil, ErrChannelClosed
	}
	if status != StatusOK {
		r.ch.closed = true
		return nil, NewStatusError(status)
	}
	return data, nil
}

func TestExecClosesChannelOnError(t *testing.T) {
	ch := &fakeChannel{}
	card := NewCard(newScript(t, exchange{resp: "91AE"}))
	card.SetChannel(ch)
	if _, err := card.Exec(context.Background(), GetValueCmd(1, CommMAC)); !errors.Is(err, ErrAuthentication) {
		t.Fatalf("error %v", err)
	}
	if !ch.closed {
		t.Fatal("channel still open after an error")
	}
	// A transport error is not seen by the channel; the card closes it.
	ch2 := &fakeChannel{}
	card = NewCard(newScript(t, exchange{err: errors.New("tag lost")}))
	card.SetChannel(ch2)
	if _, err := card.Exec(context.Background(), GetValueCmd(1, CommMAC)); err == nil {
		t.Fatal("no error")
	}
	if !ch2.closed {
		t.Fatal("channel still open after a transport error")
	}
}

// fakeAuth is an Authenticator that checks the exchange order.
type fakeAuth struct {
	t         *testing.T
	challenge []byte
	ch        Channel
	failAt    string
}

func (a *fakeAuth) Start() (byte, []byte) { return 0xAA, []byte{0x01} }

func (a *fakeAuth) Respond(status byte, data []byte) ([]byte, error) {
	if status != StatusAdditionalFrame {
		return nil, NewStatusError(status)
	}
	a.challenge = data
	if a.failAt == "respond" {
		return nil, ErrRndA
	}
	return bytes.Repeat([]byte{0x22}, 32), nil
}

func (a *fakeAuth) Finish(status byte, data []byte) (Channel, error) {
	if status != StatusOK {
		return nil, NewStatusError(status)
	}
	if a.failAt == "finish" {
		return nil, ErrRndA
	}
	return a.ch, nil
}

func TestAuthenticate(t *testing.T) {
	steps := func(last string) []exchange {
		return []exchange{
			{want: "90AA0000010100", resp: strings.Repeat("11", 16) + "91AF"},
			{want: "90AF000020" + strings.Repeat("22", 32) + "00", resp: last},
		}
	}
	t.Run("installs the channel", func(t *testing.T) {
		tr := newScript(t, steps(strings.Repeat("33", 16)+"9100")...)
		card := NewCard(tr)
		old := &fakeChannel{}
		card.SetChannel(old)
		ch := &fakeChannel{}
		if err := card.Authenticate(context.Background(), &fakeAuth{t: t, ch: ch}); err != nil {
			t.Fatal(err)
		}
		tr.done()
		if card.Channel() != ch || !old.closed || ch.closed {
			t.Fatalf("channel %v, old closed %v", card.Channel(), old.closed)
		}
		if card.SessionMode() != CommMAC || card.RoundTrips() != 2 {
			t.Fatalf("mode %v, trips %d", card.SessionMode(), card.RoundTrips())
		}
	})
	for _, tc := range []struct {
		name, last, failAt string
		n                  int
		err                error
	}{
		{"card refuses the proof", "91AE", "", 2, ErrAuthentication},
		{"bad proof", strings.Repeat("33", 16) + "9100", "finish", 2, ErrRndA},
		{"bad challenge", "", "respond", 1, ErrRndA},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := newScript(t, steps(tc.last)[:tc.n]...)
			card := NewCard(tr)
			old := &fakeChannel{}
			card.SetChannel(old)
			err := card.Authenticate(context.Background(), &fakeAuth{t: t, ch: &fakeChannel{}, failAt: tc.failAt})
			if !errors.Is(err, tc.err) {
				t.Fatalf("error %v, want %v", err, tc.err)
			}
			tr.done()
			if card.Channel() != nil || !old.closed {
				t.Fatal("failed authentication left a channel")
			}
		})
	}
}

// recorder is a TransactionObserver that records what it sees.
type recorder struct {
	seen []string
	err  error
}

func (r *recorder) Add(code byte, header, data, resp []byte) error {
	r.seen = append(r.seen, fmt.Sprintf("%02X %X %X %X", code, header, data, resp))
	return r.err
}

func TestObserver(t *testing.T) {
	obs := &recorder{}
	tr := newScript(t, exchange{resp: "9100"}, exchange{resp: "0A000000 9100"})
	card := NewCard(tr, WithObserver(obs))
	ctx := context.Background()
	if err := card.Credit(ctx, 2, 7, CommPlain); err != nil {
		t.Fatal(err)
	}
	if v, err := card.GetValue(ctx, 2, CommPlain); err != nil || v != 10 {
		t.Fatalf("value %d, %v", v, err)
	}
	want := []string{"0C 02 07000000 ", "6C 02  0A000000"}
	if fmt.Sprint(obs.seen) != fmt.Sprint(want) {
		t.Fatalf("observer saw %q, want %q", obs.seen, want)
	}
	obs.err = ErrTMIInput
	card = NewCard(newScript(t, exchange{resp: "9100"}))
	card.SetObserver(obs)
	if err := card.Credit(ctx, 2, 7, CommPlain); !errors.Is(err, ErrObserver) || !errors.Is(err, ErrTMIInput) {
		t.Fatalf("error %v, want ErrObserver wrapping ErrTMIInput", err)
	}
}

func TestTrace(t *testing.T) {
	var log []string
	fn := func(c, r []byte, err error) { log = append(log, fmt.Sprintf("%X>%X %v", c, r, err)) }
	plain := Trace(newScript(t, exchange{resp: "9100"}), fn)
	if _, ok := plain.(Batcher); ok {
		t.Fatal("tracing a plain transport made a Batcher")
	}
	if _, err := plain.Transmit(context.Background(), []byte{0x90, 0x60, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	bs := &batchScript{scriptTransport: newScript(t, exchange{resp: "9100"}, exchange{resp: "91AE"}), err: errors.New("tag lost"), errAfter: 1}
	bt := Trace(bs, fn)
	b, ok := bt.(Batcher)
	if !ok {
		t.Fatal("tracing a Batcher lost TransmitBatch")
	}
	cmds := []BatchCommand{{APDU: []byte{1}}, {APDU: []byte{2}}, {APDU: []byte{3}}}
	if _, err := b.TransmitBatch(context.Background(), cmds); err == nil {
		t.Fatal("no error")
	}
	want := []string{"9060000000>9100 <nil>", "01>9100 <nil>", "02> tag lost"}
	if fmt.Sprint(log) != fmt.Sprint(want) {
		t.Fatalf("trace %q, want %q", log, want)
	}
}
