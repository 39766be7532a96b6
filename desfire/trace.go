package desfire

import "context"

// Trace wraps t so that fn sees every command APDU with its response APDU
// (or the transport error) after the exchange: for logs in tests and for
// recording traces. Data protected by secure messaging stays protected;
// plain commands show plaintext, so fn decides what may be kept. When t is
// a Batcher the wrapper is one too, and fn is called once per command of
// the batch that was answered, then once with the error for the command
// that failed, if any.
func Trace(t Transport, fn func(capdu, rapdu []byte, err error)) Transport {
	tt := tracer{t: t, fn: fn}
	if b, ok := t.(Batcher); ok {
		return batchTracer{tracer: tt, b: b}
	}
	return tt
}

type tracer struct {
	t  Transport
	fn func(capdu, rapdu []byte, err error)
}

func (t tracer) Transmit(ctx context.Context, capdu []byte) ([]byte, error) {
	in := append([]byte(nil), capdu...)
	r, err := t.t.Transmit(ctx, capdu)
	t.fn(in, r, err)
	return r, err
}

type batchTracer struct {
	tracer
	b Batcher
}

func (t batchTracer) TransmitBatch(ctx context.Context, cmds []BatchCommand) ([][]byte, error) {
	ins := make([][]byte, len(cmds))
	for i, c := range cmds {
		ins[i] = append([]byte(nil), c.APDU...)
	}
	rs, err := t.b.TransmitBatch(ctx, cmds)
	for i, r := range rs {
		if i < len(ins) {
			t.fn(ins[i], r, nil)
		}
	}
	if err != nil {
		var in []byte
		if len(rs) < len(ins) {
			in = ins[len(rs)]
		}
		t.fn(in, nil, err)
	}
	return rs, err
}
