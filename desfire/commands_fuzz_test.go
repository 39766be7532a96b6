package desfire

import (
	"bytes"
	"context"
	"errors"
	"testing"
)

// The fuzz targets feed card answers, which come from an untrusted bridge,
// to every parser of this layer: nothing may panic, and what parses must
// be consistent with its input.

func FuzzParseVersion(f *testing.F) {
	f.Add(mustHex(f, "04010133001A05 04010103001A05 04112233445566 BA5EBA11BA 26 25"))
	f.Add(mustHex(f, "04010133001A05 04010103001A05 04112233445566 BA5EBA11BA 26 25 1F"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := ParseVersion(b)
		if err != nil {
			return
		}
		if len(b) != 28 && len(b) != 29 || len(v.UID) != 7 || len(v.BatchNo) != 5 || v.HasFabKeyID != (len(b) == 29) {
			t.Fatalf("%d bytes parsed as %+v", len(b), v)
		}
	})
}

func FuzzParseFileSettings(f *testing.F) {
	for _, s := range []string{
		"00 03 1032 200000", "01 81 1032 400000 02 EEEE 0F21", "02 01 1030 00000000 A0860100 05000000 03",
		"03 00 1032 100000 0A0000 020000", "04 02 1032 200000 050000 050000", "05 20 F01F 02 44 78563412",
		"0040EEEE000100D1FE001F00004400004400002000006A0000", "00 40 E0EE 800000 E1 FFEF 200000 300000 0A0000", "",
	} {
		f.Add(mustHex(f, s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fs, err := ParseFileSettings(b)
		if err != nil {
			if !errors.Is(err, ErrShortResponse) && !errors.Is(err, ErrLongResponse) && !errors.Is(err, ErrParameter) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		if len(b) < 4 || FileType(b[0]) != fs.Type || b[1] != fs.Option || fs.Access != AccessRights(uint16(b[2])|uint16(b[3])<<8) {
			t.Fatalf("%X parsed as %+v", b, fs)
		}
		if fs.Mode() != CommPlain && fs.Mode() != CommMAC && fs.Mode() != CommFull {
			t.Fatalf("mode %v", fs.Mode())
		}
	})
}

func FuzzParseRecordsAndValues(f *testing.F) {
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8}, 4)
	f.Add([]byte{0xFF, 0xFF, 0xFF, 0x7F}, 0)
	f.Add([]byte{}, 16)
	f.Fuzz(func(t *testing.T, b []byte, size int) {
		if recs, err := SplitRecords(b, size); err == nil {
			if len(recs)*size != len(b) || (len(recs) > 0 && !bytes.Equal(bytes.Join(recs, nil), b)) {
				t.Fatalf("%d records of %d from %d bytes", len(recs), size, len(b))
			}
		}
		if v, err := ParseValue(b); err == nil && (len(b) != 4 || le32(v)[0] != b[0]) {
			t.Fatalf("value %d from %X", v, b)
		}
		if ids, err := ParseApplicationIDs(b); err == nil && len(ids)*AIDSize != len(b) {
			t.Fatalf("%d AIDs from %d bytes", len(ids), len(b))
		}
		if uid, err := ParseCardUID(b); err == nil && !bytes.Equal(uid, b) {
			t.Fatalf("UID %X from %X", uid, b)
		}
		if ks, err := ParseKeySettings(b); err == nil && 2+len(ks.Extra) != len(b) {
			t.Fatalf("key settings %+v from %X", ks, b)
		}
		if _, _, err := ParseCommitTransactionTMAC(b); err == nil && len(b) != CommitTransactionTMACSize {
			t.Fatalf("TMC/TMV from %d bytes", len(b))
		}
	})
}

// fuzzTransport answers every command with the next chunk of a fuzzed
// stream: byte n gives the length of the answer that follows.
type fuzzTransport struct{ b []byte }

func (f *fuzzTransport) Transmit(context.Context, []byte) ([]byte, error) {
	if len(f.b) == 0 {
		return nil, errors.New("stream ended")
	}
	n := min(int(f.b[0]), len(f.b)-1)
	r := f.b[1 : 1+n]
	f.b = f.b[1+n:]
	return r, nil
}

// FuzzChainedResponse drives the additional-frame loop (both directions)
// with arbitrary answers: it must end, stay within its bound and never
// return more data than the card sent.
func FuzzChainedResponse(f *testing.F) {
	f.Add([]byte{5, 1, 2, 3, 0x91, 0xAF, 3, 4, 0x91, 0x00}, false)
	f.Add([]byte{2, 0x91, 0xAF, 2, 0x91, 0xAF, 2, 0x91, 0x00}, true)
	f.Add([]byte{2, 0x91, 0xAF, 2, 0x91, 0xAF}, false)
	f.Add([]byte{2, 0x6A, 0x82}, true)
	f.Fuzz(func(t *testing.T, stream []byte, write bool) {
		card := NewCard(&fuzzTransport{b: stream}, WithMaxResponse(MaxShortData))
		cmd := ReadDataCmd(1, 0, 0, CommPlain)
		if write {
			cmd = WriteDataCmd(1, 0, bytes.Repeat([]byte{0xA5}, 150), CommPlain)
		}
		out, err := card.Exec(context.Background(), cmd)
		if card.RoundTrips() > len(stream)+1 {
			t.Fatalf("%d round trips from a %d-byte stream", card.RoundTrips(), len(stream))
		}
		if err == nil && (len(out) > MaxShortData || len(out) > len(stream) || write && len(out) != 0) {
			t.Fatalf("%d bytes out of a %d-byte stream", len(out), len(stream))
		}
	})
}

// FuzzPipelineAnswers feeds arbitrary batch answers to a pipeline: every
// step ends verified or with an error, and nothing after a failure is
// marked done.
func FuzzPipelineAnswers(f *testing.F) {
	f.Add([]byte{2, 0x91, 0x00, 2, 0x91, 0x00, 6, 1, 0, 0, 0, 0x91, 0x00}, uint8(3))
	f.Add([]byte{2, 0x91, 0xBE}, uint8(1))
	f.Fuzz(func(t *testing.T, stream []byte, n uint8) {
		ft := &fuzzTransport{b: stream}
		var answers [][]byte
		for range int(n % 6) {
			r, err := ft.Transmit(context.Background(), nil)
			if err != nil {
				break
			}
			answers = append(answers, r)
		}
		card := NewCard(fixedBatch(answers))
		p := card.Pipeline()
		for _, c := range []*Command{CreditCmd(2, 1, CommPlain), CommitTransactionCmd(true, false), GetValueCmd(2, CommPlain)} {
			if _, err := p.Add(c); err != nil {
				t.Fatal(err)
			}
		}
		err := p.Run(context.Background())
		failed := false
		for _, r := range p.Results() {
			if failed && r.Done {
				t.Fatal("a step after a failure is done")
			}
			if r.Err != nil {
				failed = true
			} else if !r.Done {
				t.Fatal("a step without error is not done")
			}
		}
		if (err != nil) != failed {
			t.Fatalf("Run error %v, failed steps %v", err, failed)
		}
	})
}

// fixedBatch is a Batcher returning the same answers to any batch.
type fixedBatch [][]byte

func (b fixedBatch) Transmit(context.Context, []byte) ([]byte, error) {
	return nil, errors.New("not used")
}

func (b fixedBatch) TransmitBatch(context.Context, []BatchCommand) ([][]byte, error) {
	return b, nil
}
