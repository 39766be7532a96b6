package desfire_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/desfire/simcard"
)

// These tests run the command layer against the simulated card, whose
// card side of secure messaging is written independently of the host code:
// issuance, a top-up with the Transaction MAC, reads of every kind, and
// the same top-up pipelined in one batch, over EV1 and EV2 channels.

var (
	aid      = []byte{0x01, 0x20, 0xF0}
	zeroKey  = make([]byte, 16)
	topUpKey = bytes.Repeat([]byte{0x11}, 16)
	tmKey    = bytes.Repeat([]byte{0x55}, 16)
)

const (
	fileData  = 1
	fileValue = 2
	fileLog   = 3
	fileTMAC  = 5
)

// batchSim makes the simulated card a Batcher with the relay rules and
// counts batches.
type batchSim struct {
	*simcard.Card
	batches int
}

func (b *batchSim) TransmitBatch(ctx context.Context, cmds []desfire.BatchCommand) ([][]byte, error) {
	b.batches++
	return desfire.SequentialBatch(ctx, b.Card, cmds)
}

// simFrame sends frames of the simulated card's size: the simulator takes
// a frame shorter than its maximum as the last one of a chained write,
// where a real card counts the bytes the header announces.
var simFrame = desfire.WithMaxFrame(desfire.DefaultMaxFrame)

func authenticator(t *testing.T, gen string, keyNo byte, key []byte) desfire.Authenticator {
	t.Helper()
	if gen == "ev1" {
		a, err := desfire.NewAuthAES(keyNo, key, nil)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	return desfire.NewAuthEV2First(keyNo, key, nil)
}

// issue lays out a blank simulated card: application, keys, a data file,
// a value file in Full mode, a cyclic log in MAC mode and the Transaction
// MAC file.
func issue(t *testing.T, gen string) (*simcard.Card, *desfire.Card) {
	t.Helper()
	sim, err := simcard.New(simcard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	card := desfire.NewCard(sim, simFrame)
	ctx := context.Background()
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	access := desfire.NewAccessRights(1, 1, 1, 0).Bytes()
	must("select PICC", card.SelectApplication(ctx, []byte{0, 0, 0}))
	must("authenticate PICC", card.Authenticate(ctx, authenticator(t, gen, 0, zeroKey)))
	must("create application", card.CreateApplication(ctx, aid, 0x0B, 0x82))
	ids, err := card.GetApplicationIDs(ctx)
	must("get application IDs", err)
	if len(ids) != 1 || !bytes.Equal(ids[0], aid) {
		t.Fatalf("applications %X", ids)
	}
	must("select application", card.SelectApplication(ctx, aid))
	must("authenticate application", card.Authenticate(ctx, authenticator(t, gen, 0, zeroKey)))
	must("change key 1", card.ChangeKey(ctx, 1, 0, topUpKey, zeroKey, 1))
	must("create data file", card.CreateStdDataFile(ctx, fileData, byte(desfire.CommFull), desfire.NewAccessRights(1, 0, 1, 0).Bytes(), 100))
	must("create value file", card.CreateValueFile(ctx, fileValue, byte(desfire.CommFull), access, 0, 100000, 50, false))
	must("create log", card.CreateCyclicRecordFile(ctx, fileLog, byte(desfire.CommMAC), access, 16, 5))
	must("create TMAC file", card.CreateTransactionMACFile(ctx, fileTMAC, byte(desfire.CommPlain),
		desfire.NewAccessRights(1, desfire.AccessNever, desfire.AccessNever, 0).Bytes(), tmKey, 1))
	must("write data", card.WriteData(ctx, fileData, 0, bytes.Repeat([]byte{0xD0}, 100), desfire.CommFull))
	must("commit issuance", commitPlain(ctx, card))
	return sim, card
}

func commitPlain(ctx context.Context, card *desfire.Card) error {
	_, _, err := card.CommitTransaction(ctx, true)
	return err
}

func TestSimcardSession(t *testing.T) {
	for _, gen := range []string{"ev1", "ev2"} {
		t.Run(gen, func(t *testing.T) {
			sim, card := issue(t, gen)
			ctx := context.Background()
			if err := card.SelectApplication(ctx, aid); err != nil {
				t.Fatal(err)
			}
			if v, err := card.GetKeyVersion(ctx, 1); err != nil || v != 1 {
				t.Fatalf("key version %d, %v", v, err)
			}
			if err := card.Authenticate(ctx, authenticator(t, gen, 1, topUpKey)); err != nil {
				t.Fatal(err)
			}
			if card.Channel().Generation() != gen {
				t.Fatalf("generation %s", card.Channel().Generation())
			}
			tm, err := desfire.NewTransactionMAC(tmKey, sim.UID())
			if err != nil {
				t.Fatal(err)
			}
			card.SetObserver(tm)
			before, err := card.GetValue(ctx, fileValue, desfire.CommFull)
			if err != nil || before != 50 {
				t.Fatalf("value %d, %v", before, err)
			}
			if err := card.Credit(ctx, fileValue, 25, desfire.CommFull); err != nil {
				t.Fatal(err)
			}
			rec := bytes.Repeat([]byte{0x7A}, 16)
			if err := card.WriteRecord(ctx, fileLog, 0, rec, desfire.CommMAC); err != nil {
				t.Fatal(err)
			}
			tmc, tmv, err := card.CommitTransaction(ctx, true)
			if err != nil {
				t.Fatal(err)
			}
			if err := tm.Verify(tmc, tmv); err != nil {
				t.Fatalf("TMV: %v", err)
			}
			card.SetObserver(nil)
			if v, _ := sim.Value(aid, fileValue); v != 75 {
				t.Fatalf("card value %d", v)
			}
			if v, err := card.GetValue(ctx, fileValue, desfire.CommFull); err != nil || v != 75 {
				t.Fatalf("value %d, %v", v, err)
			}
			recs, err := card.ReadRecords(ctx, fileLog, 0, 0, 16, desfire.CommMAC)
			if err != nil || len(recs) != 1 || !bytes.Equal(recs[0], rec) {
				t.Fatalf("records %X, %v", recs, err)
			}
			data, err := card.ReadData(ctx, fileData, 0, 0, desfire.CommFull)
			if err != nil || !bytes.Equal(data, bytes.Repeat([]byte{0xD0}, 100)) {
				t.Fatalf("data %X, %v", data, err)
			}
			fs, err := card.GetFileSettings(ctx, fileValue)
			if err != nil || fs.Type != desfire.FileValue || fs.Mode() != desfire.CommFull || fs.Upper != 100000 {
				t.Fatalf("value file settings %+v, %v", fs, err)
			}
			fs, err = card.GetFileSettings(ctx, fileLog)
			if err != nil || fs.RecordSize != 16 || fs.MaxRecords != 5 || fs.CurrentRecords != 1 {
				t.Fatalf("log settings %+v, %v", fs, err)
			}
			fs, err = card.GetFileSettings(ctx, fileTMAC)
			if err != nil || fs.Type != desfire.FileTransactionMAC || fs.TMKeyVersion != 1 {
				t.Fatalf("TMAC settings %+v, %v", fs, err)
			}
			files, err := card.GetFileIDs(ctx)
			if err != nil || len(files) != 4 {
				t.Fatalf("files %X, %v", files, err)
			}
			if uid, err := card.GetCardUID(ctx); err != nil || !bytes.Equal(uid, sim.UID()) {
				t.Fatalf("UID %X, %v", uid, err)
			}
			if v, err := card.GetVersion(ctx); err != nil || v.Hardware.VendorID != 0x04 {
				t.Fatalf("version %+v, %v", v, err)
			}
			if ks, err := card.GetKeySettings(ctx); err != nil || ks.MaxKeys() != 2 {
				t.Fatalf("key settings %+v, %v", ks, err)
			}
			// A boundary error closes the channel; the next command says so.
			if err := card.Credit(ctx, fileValue, 1000000, desfire.CommFull); !errors.Is(err, desfire.ErrBoundary) {
				t.Fatalf("over the limit: %v", err)
			}
			if _, err := card.GetValue(ctx, fileValue, desfire.CommFull); !errors.Is(err, desfire.ErrChannelClosed) {
				t.Fatalf("after a failure: %v", err)
			}
		})
	}
}

// TestSimcardPipeline runs the top-up in a batch over the simulated card:
// on EV2 everything after authentication is predictable from the command
// counter; on EV1 only commands behind predictable answers can ride along,
// so the value is read after the commit.
func TestSimcardPipeline(t *testing.T) {
	for _, gen := range []string{"ev1", "ev2"} {
		t.Run(gen, func(t *testing.T) {
			sim, _ := issue(t, gen)
			bs := &batchSim{Card: sim}
			card := desfire.NewCard(bs, simFrame)
			ctx := context.Background()
			if err := card.SelectApplication(ctx, aid); err != nil {
				t.Fatal(err)
			}
			if err := card.Authenticate(ctx, authenticator(t, gen, 1, topUpKey)); err != nil {
				t.Fatal(err)
			}
			start := card.RoundTrips()
			p := card.Pipeline()
			var before *desfire.Result
			var err error
			if gen == "ev2" {
				if before, err = p.Add(desfire.GetValueCmd(fileValue, desfire.CommFull)); err != nil {
					t.Fatal(err)
				}
			} else if _, err := p.Add(desfire.GetValueCmd(fileValue, desfire.CommFull)); err != nil {
				t.Fatal(err)
			} else if _, err := p.Add(desfire.CreditCmd(fileValue, 1, desfire.CommFull)); !errors.Is(err, desfire.ErrNotPipelinable) {
				t.Fatalf("EV1 behind an unpredictable answer: %v", err)
			} else if err := p.Run(ctx); err != nil {
				t.Fatal(err)
			} else {
				p = card.Pipeline()
				start = card.RoundTrips()
			}
			for _, c := range []*desfire.Command{
				desfire.WriteRecordCmd(fileLog, 0, bytes.Repeat([]byte{0x3C}, 16), desfire.CommMAC),
				desfire.CreditCmd(fileValue, 30, desfire.CommFull),
				desfire.CommitTransactionCmd(true, true),
			} {
				if _, err := p.Add(c); err != nil {
					t.Fatal(err)
				}
			}
			commit := p.Results()[len(p.Results())-1]
			var after *desfire.Result
			if gen == "ev2" {
				if after, err = p.Add(desfire.GetValueCmd(fileValue, desfire.CommFull)); err != nil {
					t.Fatal(err)
				}
			}
			if err := p.Run(ctx); err != nil {
				t.Fatal(err)
			}
			if card.RoundTrips() != start+1 {
				t.Fatalf("%d round trips for the batch", card.RoundTrips()-start)
			}
			if _, _, err := desfire.ParseCommitTransactionTMAC(commit.Data); err != nil {
				t.Fatal(err)
			}
			if gen == "ev2" {
				b, _ := desfire.ParseValue(before.Data)
				a, _ := desfire.ParseValue(after.Data)
				if b != 50 || a != 80 {
					t.Fatalf("before %d after %d", b, a)
				}
			} else if v, err := card.GetValue(ctx, fileValue, desfire.CommFull); err != nil || v != 80 {
				t.Fatalf("value %d, %v", v, err)
			}
		})
	}
}
