package desfire

import (
	"bytes"
	"context"
	"errors"
	"testing"
)

// script is a transport that answers from a list.
type script struct {
	answers [][]byte
	sent    [][]byte
}

func (s *script) Transmit(_ context.Context, a []byte) ([]byte, error) {
	s.sent = append(s.sent, append([]byte(nil), a...))
	if len(s.answers) == 0 {
		return nil, errors.New("no more answers")
	}
	r := s.answers[0]
	s.answers = s.answers[1:]
	return r, nil
}

func TestExecFraming(t *testing.T) {
	// A long write goes out in frames of DefaultMaxFrame; a long answer
	// comes back in 91AF frames and is joined.
	data := bytes.Repeat([]byte{0xAB}, 130)
	s := &script{answers: [][]byte{{0x91, 0xAF}, {0x91, 0xAF}, {0x91, 0x00}}}
	c := NewCard(s)
	if err := c.WriteData(context.Background(), 1, 0, data, CommPlain); err != nil {
		t.Fatal(err)
	}
	if len(s.sent) != 3 || s.sent[1][1] != 0xAF || int(s.sent[0][4]) != DefaultMaxFrame {
		t.Fatalf("frames %X", s.sent)
	}
	s = &script{answers: [][]byte{append(bytes.Repeat([]byte{1}, 59), 0x91, 0xAF), append(bytes.Repeat([]byte{2}, 10), 0x91, 0x00)}}
	c = NewCard(s)
	got, err := c.ReadData(context.Background(), 1, 0, 69, CommPlain)
	if err != nil || len(got) != 69 || got[68] != 2 {
		t.Fatalf("chained read %d %v", len(got), err)
	}
	// A card that never stops chaining is cut off.
	endless := &endlessAF{}
	if _, err := NewCard(endless).ReadData(context.Background(), 1, 0, 0, CommPlain); !errors.Is(err, ErrLongResponse) {
		t.Fatalf("endless chain: %v", err)
	}
}

type endlessAF struct{}

func (endlessAF) Transmit(context.Context, []byte) ([]byte, error) {
	return append(bytes.Repeat([]byte{7}, 59), 0x91, 0xAF), nil
}

func TestPipelineStopsAtFirstFailure(t *testing.T) {
	s := &script{}
	c := NewCard(batchScript{s, [][]byte{{0x91, 0x00}, {0x91, 0xA0}}})
	p := c.Pipeline()
	a, _ := p.Add(SelectApplicationCmd([]byte{1, 2, 3}))
	b, _ := p.Add(SelectApplicationCmd([]byte{4, 5, 6}))
	d, _ := p.Add(GetKeyVersionCmd(0))
	err := p.Run(context.Background())
	if !errors.Is(err, ErrApplicationNotFound) || !a.Done || b.Done || !errors.Is(d.Err, ErrNotExecuted) {
		t.Fatalf("err %v, a %+v b %+v d %+v", err, a, b, d)
	}
	if c.RoundTrips() != 1 {
		t.Fatalf("round trips %d", c.RoundTrips())
	}
}

type batchScript struct {
	s   *script
	ans [][]byte
}

func (b batchScript) Transmit(ctx context.Context, a []byte) ([]byte, error) {
	return b.s.Transmit(ctx, a)
}
func (b batchScript) TransmitBatch(_ context.Context, cmds []BatchCommand) ([][]byte, error) {
	return b.ans, nil
}

// FuzzExecResponse feeds arbitrary card answers to a plain session.
func FuzzExecResponse(f *testing.F) {
	f.Add([]byte{0x91, 0x00}, []byte{0x01, 0x91, 0x00})
	f.Add([]byte{0x91, 0xAF}, []byte{0x6A, 0x82})
	f.Fuzz(func(t *testing.T, a, b []byte) {
		s := &script{answers: [][]byte{a, b, a, b}}
		c := NewCard(s)
		if v, err := c.GetKeyVersion(context.Background(), 0); err == nil && v != a[0] && v != b[0] {
			t.Fatalf("version %d from nowhere", v)
		}
		NewCard(&script{answers: [][]byte{a, b}}).ReadRecords(context.Background(), 1, 0, 0, 16, CommPlain)
	})
}

// FuzzPipelineAnswers feeds arbitrary batch answers to a pipeline.
func FuzzPipelineAnswers(f *testing.F) {
	f.Add([]byte{0x91, 0x00}, []byte{0x01, 0x91, 0x00}, []byte{0x91, 0xAF})
	f.Fuzz(func(t *testing.T, a, b, c []byte) {
		card := NewCard(batchScript{&script{}, [][]byte{a, b, c}})
		p := card.Pipeline()
		p.Add(SelectApplicationCmd([]byte{1, 2, 3}))
		kv, _ := p.Add(GetKeyVersionCmd(1))
		p.AddRaw(0x71, []byte{1, 0}, []uint16{0x91AF}, func(byte, []byte) error { return nil })
		if err := p.Run(context.Background()); err == nil && len(kv.Data) != 1 {
			t.Fatal("key version of the wrong size accepted")
		}
	})
}
