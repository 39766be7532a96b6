package ntag424

import (
	"context"
	"fmt"
	"sync"

	"github.com/desfire-relay/relay/desfire"
)

// SelectFirst returns t with the ISO SELECT of the NDEF application put in
// front of the first command sent over it. Over a desfire.Batcher both go
// in one round trip (the select's answer is a bare, forgeable 9000 that
// proves nothing, so nothing is lost by not waiting for it: the
// authentication that follows proves the application). Over a plain
// Transport the select goes first on its own, as SelectApp does. A select
// answered with anything but 9000 fails the first command with ErrSelect,
// and the command behind it is not reported as answered.
func SelectFirst(t desfire.Transport) desfire.Transport {
	s := &selectFirst{t: t}
	if b, ok := t.(desfire.Batcher); ok {
		return &selectFirstBatcher{selectFirst: s, b: b}
	}
	return s
}

type selectFirst struct {
	t    desfire.Transport
	mu   sync.Mutex // guards done
	done bool
}

// first reports whether the select is still to be sent, marking it sent.
func (s *selectFirst) first() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return false
	}
	s.done = true
	return true
}

// Transmit implements desfire.Transport.
func (s *selectFirst) Transmit(ctx context.Context, capdu []byte) ([]byte, error) {
	if s.first() {
		if err := SelectApp(ctx, s.t); err != nil {
			return nil, err
		}
	}
	return s.t.Transmit(ctx, capdu)
}

type selectFirstBatcher struct {
	*selectFirst
	b desfire.Batcher
}

// Transmit implements desfire.Transport: the first command rides in one
// batch behind the select.
func (s *selectFirstBatcher) Transmit(ctx context.Context, capdu []byte) ([]byte, error) {
	if !s.first() {
		return s.b.Transmit(ctx, capdu)
	}
	// The last command's answer comes back whatever its status word.
	rs, err := s.batch(ctx, []desfire.BatchCommand{{APDU: capdu, Expect: []uint16{0x9000, 0x9100, 0x91AF}}})
	if err != nil {
		return nil, err
	}
	if len(rs) != 1 || rs[0] == nil {
		return nil, fmt.Errorf("select NDEF application: no answer to the command behind it: %w", desfire.ErrNotExecuted)
	}
	return rs[0], nil
}

// TransmitBatch implements desfire.Batcher: the first batch gets the
// select in front.
func (s *selectFirstBatcher) TransmitBatch(ctx context.Context, cmds []desfire.BatchCommand) ([][]byte, error) {
	if !s.first() {
		return s.b.TransmitBatch(ctx, cmds)
	}
	return s.batch(ctx, cmds)
}

// batch sends the select and cmds in one round trip and returns the
// answers to cmds.
func (s *selectFirstBatcher) batch(ctx context.Context, cmds []desfire.BatchCommand) ([][]byte, error) {
	all := append([]desfire.BatchCommand{{APDU: SelectAppAPDU(), Expect: []uint16{0x9000}}}, cmds...)
	rs, err := s.b.TransmitBatch(ctx, all)
	if len(rs) == 0 {
		if err == nil {
			err = fmt.Errorf("select NDEF application: no answer: %w", ErrSelect)
		}
		return nil, fmt.Errorf("select NDEF application: %w", err)
	}
	sel := rs[0]
	if sw, swErr := desfire.StatusWord(sel); swErr != nil || sw != 0x9000 || len(sel) != 2 {
		return nil, fmt.Errorf("select NDEF application: answer %X: %w", sel, ErrSelect)
	}
	return rs[1:], err
}
