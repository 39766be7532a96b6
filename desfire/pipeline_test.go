package desfire

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
)

// threeSteps is a plain pipeline: credit, commit, get value.
func threeSteps(t *testing.T, p *Pipeline) []*Result {
	t.Helper()
	var out []*Result
	for _, c := range []*Command{CreditCmd(2, 100, CommPlain), CommitTransactionCmd(false, false), GetValueCmd(2, CommPlain)} {
		r, err := p.Add(c)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

var threeAPDUs = []string{"900C0000050264000000 00", "90C7000000", "906C0000010200"}

func TestPipelineBatchAndSequential(t *testing.T) {
	answers := []string{"9100", "9100", "64000000 9100"}
	script := func() *scriptTransport {
		var s []exchange
		for i := range answers {
			s = append(s, exchange{want: threeAPDUs[i], resp: answers[i]})
		}
		return newScript(t, s...)
	}
	for _, tc := range []struct {
		name  string
		tr    Transport
		trips int
	}{
		{"batcher: one round trip", &batchScript{scriptTransport: script()}, 1},
		{"plain transport: one per command", script(), 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			card := NewCard(tc.tr)
			p := card.Pipeline()
			rs := threeSteps(t, p)
			if err := p.Run(context.Background()); err != nil {
				t.Fatal(err)
			}
			for i, r := range rs {
				if !r.Done || !r.Answered || r.Err != nil || r.SW != 0x9100 || r.Status != StatusOK {
					t.Fatalf("step %d: %+v", i, r)
				}
			}
			if v, err := ParseValue(rs[2].Data); err != nil || v != 100 {
				t.Fatalf("value %d, %v", v, err)
			}
			if card.RoundTrips() != tc.trips {
				t.Fatalf("%d round trips, want %d", card.RoundTrips(), tc.trips)
			}
			if err := p.Run(context.Background()); !errors.Is(err, ErrParameter) {
				t.Fatalf("second Run: %v", err)
			}
			if _, err := p.Add(GetValueCmd(2, CommPlain)); !errors.Is(err, ErrParameter) {
				t.Fatalf("Add after Run: %v", err)
			}
		})
	}
}

func TestPipelineFailures(t *testing.T) {
	tagLost := errors.New("tag lost")
	tests := []struct {
		name     string
		answers  []string
		bs       batchScript
		err      error
		done     int // steps verified
		answered int // steps with an answer
	}{
		{name: "stop at the first unexpected status", answers: []string{"9100", "91BE"}, err: ErrBoundary, done: 1, answered: 2},
		{name: "ISO status", answers: []string{"6700"}, err: ErrUnknownStatus, done: 0, answered: 1},
		{name: "chained answer", answers: []string{"01 91AF"}, err: ErrUnexpectedStatus, done: 0, answered: 1},
		{name: "short answer without reason", answers: []string{"9100", "9100", "64000000 9100"}, bs: batchScript{cutAfter: 2}, err: ErrShortResponse, done: 2, answered: 2},
		{name: "transport error mid-batch", answers: []string{"9100", "9100", "64000000 9100"}, bs: batchScript{err: tagLost, errAfter: 1}, err: tagLost, done: 1, answered: 1},
		{name: "more answers than commands", answers: []string{"9100", "9100", "64000000 9100"}, bs: batchScript{extra: true}, err: ErrLongResponse, done: 3, answered: 3},
		{name: "overlong value", answers: []string{"9100", "9100", "6400000000 9100"}, err: ErrLongResponse, done: 2, answered: 3},
		{name: "status word missing", answers: []string{"9100", "91"}, err: ErrShortResponse, done: 1, answered: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var s []exchange
			for _, a := range tc.answers {
				s = append(s, exchange{resp: a})
			}
			bs := tc.bs
			bs.scriptTransport = newScript(t, s...)
			card := NewCard(&bs)
			ch := &fakeChannel{}
			card.SetChannel(ch)
			p := card.Pipeline()
			var rs []*Result
			for _, c := range []*Command{CreditCmd(2, 100, CommPlain), CommitTransactionCmd(false, false), GetValueCmd(2, CommPlain)} {
				r, err := p.Add(c)
				if err != nil {
					t.Fatal(err)
				}
				rs = append(rs, r)
			}
			err := p.Run(context.Background())
			if !errors.Is(err, tc.err) {
				t.Fatalf("error %v, want %v", err, tc.err)
			}
			if !ch.closed {
				t.Fatal("channel not closed after a failed pipeline")
			}
			done, answered := 0, 0
			for i, r := range rs {
				if r.Done {
					done++
					if i >= tc.done {
						t.Fatalf("step %d done after the failure", i)
					}
				}
				if r.Answered {
					answered++
				}
				if i > tc.done && !errors.Is(r.Err, ErrNotExecuted) && i < len(rs) {
					t.Fatalf("step %d: %v, want ErrNotExecuted", i, r.Err)
				}
			}
			if done != tc.done || answered != tc.answered {
				t.Fatalf("%d done, %d answered; want %d, %d", done, answered, tc.done, tc.answered)
			}
			if tc.done < len(rs) && rs[tc.done].Err == nil {
				t.Fatalf("failing step %d has no error", tc.done)
			}
			if bs.batches != 1 || card.RoundTrips() != 1 {
				t.Fatalf("%d batches, %d round trips", bs.batches, card.RoundTrips())
			}
		})
	}
}

func TestPipelineNotPipelinable(t *testing.T) {
	bs := &batchScript{scriptTransport: newScript(t, exchange{resp: "0A000000 9100"})}
	card := NewCard(bs)
	ch := &fakeChannel{}
	card.SetChannel(ch)
	p := card.Pipeline()
	get, err := p.Add(GetValueCmd(2, CommMAC)) // answer not predictable
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Add(CreditCmd(2, 1, CommMAC)); !errors.Is(err, ErrNotPipelinable) {
		t.Fatalf("Add behind an unverified answer: %v", err)
	}
	if p.Len() != 1 || len(ch.sealed) != 1 {
		t.Fatalf("%d steps, %d sealed", p.Len(), len(ch.sealed))
	}
	if err := p.Run(context.Background()); err != nil {
		t.Fatalf("the steps before the refused one still run: %v", err)
	}
	if !get.Done || ch.closed || len(bs.sent) != 1 {
		t.Fatalf("done %v closed %v sent %d", get.Done, ch.closed, len(bs.sent))
	}
	// Once the answer is verified the next command can be sealed.
	p = card.Pipeline()
	if _, err := p.Add(CreditCmd(2, 1, CommMAC)); err != nil {
		t.Fatal(err)
	}
}

func TestPipelineFrameTooLong(t *testing.T) {
	card := NewCard(newScript(t))
	ch := &fakeChannel{}
	card.SetChannel(ch)
	p := card.Pipeline()
	first, err := p.Add(CreditCmd(2, 1, CommPlain))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Add(WriteDataCmd(1, 0, make([]byte, DefaultMaxFrame), CommPlain)); !errors.Is(err, ErrFrameTooLong) {
		t.Fatalf("error %v", err)
	}
	if !ch.closed {
		t.Fatal("channel not closed after sealing a command that cannot be sent")
	}
	if err := p.Run(context.Background()); !errors.Is(err, ErrFrameTooLong) {
		t.Fatalf("Run: %v", err)
	}
	if !errors.Is(first.Err, ErrNotExecuted) || card.RoundTrips() != 0 {
		t.Fatalf("first %v, trips %d", first.Err, card.RoundTrips())
	}
}

func TestPipelineNoChannelRefusesProtected(t *testing.T) {
	p := NewCard(newScript(t)).Pipeline()
	if _, err := p.Add(GetCardUIDCmd()); !errors.Is(err, ErrNotAuthenticated) {
		t.Fatalf("error %v", err)
	}
}

// TestPipelineAuthSteps runs an authentication inside a pipeline: the first
// frame expects 91AF, the second installs a channel, and a command sealed
// with the (early) channel rides behind it.
func TestPipelineAuthSteps(t *testing.T) {
	challenge := strings.Repeat("11", 16)
	bs := &batchScript{scriptTransport: newScript(t,
		exchange{want: "905A00000312345600", resp: "9100"},
		exchange{want: "90AA0000010100", resp: challenge + "91AF"},
	)}
	card := NewCard(bs)
	p := card.Pipeline()
	if _, err := p.Add(SelectApplicationCmd([]byte{0x12, 0x34, 0x56})); err != nil {
		t.Fatal(err)
	}
	var got []byte
	first, err := p.AddRaw(0xAA, []byte{1}, []uint16{0x91AF}, func(status byte, data []byte) error {
		got = data
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !first.Done || first.Status != StatusAdditionalFrame || !bytes.Equal(got, mustHex(t, challenge)) {
		t.Fatalf("raw step %+v", first)
	}

	early := &fakeChannel{}
	bs.scriptTransport = newScript(t,
		exchange{want: "90AF000020" + strings.Repeat("22", 32) + "00", resp: strings.Repeat("33", 16) + "9100"},
		exchange{want: "906C0000010200", resp: "05000000 9100"},
	)
	p = card.Pipeline()
	if _, err := p.AddRaw(CmdAdditionalFrame, bytes.Repeat([]byte{0x22}, 32), nil, func(status byte, data []byte) error {
		card.SetChannel(early)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	card.SetChannel(early)
	val, err := p.Add(GetValueCmd(2, CommMAC))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if v, _ := ParseValue(val.Data); v != 5 || bs.batches != 2 || card.RoundTrips() != 2 {
		t.Fatalf("value %d, batches %d, trips %d", v, bs.batches, card.RoundTrips())
	}

	// An unexpected status on a raw step fails with the card's status.
	bs.scriptTransport = newScript(t, exchange{resp: "91AE"})
	p = card.Pipeline()
	if _, err := p.AddRaw(0xAA, []byte{1}, []uint16{0x91AF}, func(byte, []byte) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if err := p.Run(context.Background()); !errors.Is(err, ErrAuthentication) {
		t.Fatalf("error %v", err)
	}
	if !early.closed {
		t.Fatal("channel open after a failed raw step")
	}
	// A raw frame must fit one frame.
	if _, err := card.Pipeline().AddRaw(0xAF, make([]byte, 200), nil, nil); !errors.Is(err, ErrFrameTooLong) {
		t.Fatalf("error %v", err)
	}
}

func TestPipelineObserver(t *testing.T) {
	obs := &recorder{err: ErrTMIInput}
	bs := &batchScript{scriptTransport: newScript(t, exchange{resp: "9100"}, exchange{resp: "9100"}, exchange{resp: "64000000 9100"})}
	card := NewCard(bs, WithObserver(obs))
	p := card.Pipeline()
	rs := threeSteps(t, p)
	err := p.Run(context.Background())
	if !errors.Is(err, ErrObserver) {
		t.Fatalf("error %v", err)
	}
	for i, r := range rs {
		if !r.Done || r.Err != nil {
			t.Fatalf("step %d lost its verified result to the observer: %+v", i, r)
		}
	}
	if len(obs.seen) != 1 {
		t.Fatalf("observer fed %d times after its error", len(obs.seen))
	}
	obs = &recorder{}
	bs = &batchScript{scriptTransport: newScript(t, exchange{resp: "9100"}, exchange{resp: "9100"}, exchange{resp: "64000000 9100"})}
	card = NewCard(bs, WithObserver(obs))
	p = card.Pipeline()
	threeSteps(t, p)
	if err := p.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(obs.seen) != 3 {
		t.Fatalf("observer saw %q", obs.seen)
	}
}

func TestPipelineEmpty(t *testing.T) {
	card := NewCard(newScript(t))
	if err := card.Pipeline().Run(context.Background()); err != nil || card.RoundTrips() != 0 {
		t.Fatalf("%v, %d trips", err, card.RoundTrips())
	}
}

func TestPipelineSelectNeedsNoChannel(t *testing.T) {
	card := NewCard(newScript(t, exchange{want: "905A00000301020300", resp: "9100"}))
	ch := &fakeChannel{}
	card.SetChannel(ch)
	p := card.Pipeline()
	if _, err := p.Add(CreditCmd(1, 1, CommPlain)); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Add(SelectApplicationCmd([]byte{1, 2, 3})); !errors.Is(err, ErrParameter) {
		t.Fatalf("select sealed behind a session command: %v", err)
	}
	if len(ch.sealed) != 1 || ch.closed {
		t.Fatal("select reached the channel")
	}
	// At the start of a pipeline it drops the (here failed) channel.
	ch.closed = true
	p = card.Pipeline()
	if _, err := p.Add(SelectApplicationCmd([]byte{1, 2, 3})); err != nil || card.Channel() != nil {
		t.Fatalf("select at the start: %v, channel %v", err, card.Channel())
	}
	ch = &fakeChannel{}
	card.SetChannel(ch)
	if _, err := card.Exec(context.Background(), SelectApplicationCmd([]byte{1, 2, 3})); err != nil {
		t.Fatal(err)
	}
	if card.Channel() != nil || !ch.closed {
		t.Fatal("Exec of select kept the channel")
	}
}

// TestPipelineBeforeSend: the hook runs right before its step's command
// leaves — before the whole batch on a Batcher, after the earlier commands
// on a plain transport — and an error from it keeps that command and the
// rest from being sent.
func TestPipelineBeforeSend(t *testing.T) {
	answers := []string{"9100", "9100", "64000000 9100"}
	script := func(n int) *scriptTransport {
		var s []exchange
		for i := range n {
			s = append(s, exchange{want: threeAPDUs[i], resp: answers[i]})
		}
		return newScript(t, s...)
	}
	stop := errors.New("stop")
	for _, tc := range []struct {
		name       string
		batch      bool
		fail       bool
		sentBefore int // commands sent when the hook ran
		sentAfter  int
	}{
		{"batcher", true, false, 0, 3},
		{"plain", false, false, 1, 3},
		{"batcher, hook fails", true, true, 0, 0},
		{"plain, hook fails", false, true, 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := script(tc.sentAfter)
			var tr Transport = st
			if tc.batch {
				tr = &batchScript{scriptTransport: st}
			}
			p := NewCard(tr).Pipeline()
			rs := threeSteps(t, p)
			ran := -1
			p.BeforeSend(rs[1], func(context.Context) error {
				ran = len(st.sent)
				if tc.fail {
					return stop
				}
				return nil
			})
			err := p.Run(context.Background())
			if ran != tc.sentBefore {
				t.Fatalf("hook ran after %d commands, want %d", ran, tc.sentBefore)
			}
			if len(st.sent) != tc.sentAfter {
				t.Fatalf("%d commands sent, want %d", len(st.sent), tc.sentAfter)
			}
			if tc.fail {
				if !errors.Is(err, stop) || rs[1].Answered || rs[1].Err == nil || rs[2].Err == nil {
					t.Fatalf("err %v, commit step %+v", err, rs[1])
				}
				return
			}
			if err != nil || !rs[2].Done {
				t.Fatalf("run: %v", err)
			}
		})
	}
}
