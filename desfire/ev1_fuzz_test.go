package desfire

import (
	"bytes"
	"testing"
)

// FuzzEV1ReplyOpen feeds arbitrary answers to EV1 replies in every mode:
// Open must not panic, must never return more bytes than it was given, and
// must close the channel whenever it fails.
func FuzzEV1ReplyOpen(f *testing.F) {
	seed := func(mode CommMode, data []byte, respLen int, predictable bool) {
		ch, card := newEV1FuzzPair(f)
		cmd := &Command{Code: 0xBD, Header: []byte{1, 0, 0, 0, 0, 0, 0}, RespMode: mode, RespLen: respLen,
			Predictable: predictable, Predicted: data}
		p, _, err := ch.Seal(cmd)
		if err != nil {
			f.Fatal(err)
		}
		card.receive(cmd.Code, p, CommPlain, 7, 0)
		f.Add(byte(StatusOK), card.answer(data, mode), byte(mode), int16(respLen), predictable)
	}
	seed(CommMAC, []byte{1, 2, 3, 4}, 4, false)
	seed(CommPlain, nil, 0, true)
	seed(CommFull, []byte{1, 2, 3, 4}, -1, false)
	seed(CommFull, bytes.Repeat([]byte{7}, 28), 28, true)
	f.Add(byte(StatusBoundaryError), []byte{}, byte(CommMAC), int16(0), false)
	f.Add(byte(StatusOK), make([]byte, 48), byte(CommFull), int16(-1), false)
	f.Fuzz(func(t *testing.T, status byte, data []byte, mode byte, respLen int16, predictable bool) {
		if len(data) > MaxResponse {
			return
		}
		ch, _ := newEV1FuzzPair(t)
		cmd := &Command{Code: 0xBD, Header: []byte{1, 0, 0, 0, 0, 0, 0}, RespMode: CommMode(mode & 3), RespLen: int(respLen)}
		if predictable && respLen >= 0 && respLen <= 64 {
			cmd.Predictable, cmd.Predicted = true, bytes.Repeat([]byte{7}, int(respLen))
		}
		_, r, err := ch.Seal(cmd)
		if err != nil {
			return // an invalid comm mode
		}
		out, err := r.Open(status, data)
		switch {
		case err != nil && ch.Err() == nil:
			t.Fatalf("failed without closing the channel: %v", err)
		case err == nil && len(out) > len(data):
			t.Fatalf("%d bytes out of %d", len(out), len(data))
		case err == nil && cmd.RespLen >= 0 && len(out) != cmd.RespLen:
			t.Fatalf("%d bytes, want %d", len(out), cmd.RespLen)
		}
	})
}

// FuzzEV1AuthFinish feeds arbitrary card answers to both AuthenticateAES
// steps: no panic, and the early channel is closed whenever Finish fails.
func FuzzEV1AuthFinish(f *testing.F) {
	f.Add(byte(StatusAdditionalFrame), make([]byte, 16), byte(StatusOK), make([]byte, 16))
	f.Add(byte(StatusAdditionalFrame), make([]byte, 15), byte(StatusOK), []byte{})
	f.Add(byte(StatusAuthenticationError), []byte{}, byte(StatusAuthenticationError), []byte{})
	f.Fuzz(func(t *testing.T, st1 byte, challenge []byte, st2 byte, proof []byte) {
		a, err := NewAuthAES(0, ev1TestKey, bytes.NewReader(make([]byte, 16)))
		if err != nil {
			t.Fatal(err)
		}
		a.Start()
		second, err := a.Respond(st1, challenge)
		if err != nil {
			if _, err := a.EarlyChannel(); err == nil {
				t.Fatal("early channel after a failed challenge")
			}
			return
		}
		if len(second) != 32 {
			t.Fatalf("second frame of %d bytes", len(second))
		}
		early, err := a.EarlyChannel()
		if err != nil {
			t.Fatal(err)
		}
		ch, err := a.Finish(st2, proof)
		if err != nil && (ch != nil || early.Err() == nil) {
			t.Fatalf("failed proof left a channel: %v", err)
		}
		if err == nil && ch != early {
			t.Fatal("Finish returned another channel")
		}
	})
}

func newEV1FuzzPair(tb testing.TB) (*EV1Channel, *ev1TestCard) {
	tb.Helper()
	ch, err := newEV1Channel(ev1TestKey, 0)
	if err != nil {
		tb.Fatal(err)
	}
	return ch, newEV1TestCard(tb, ev1TestKey)
}
