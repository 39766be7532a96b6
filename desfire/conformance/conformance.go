// Package conformance is a behaviour suite for a DESFire EV2/EV3 card
// reached through any desfire.Transport: the simulated card in tests, or a
// real card behind a PC/SC reader. It uses only the card's public command
// set through package desfire, so a failure is either a card that does not
// behave like a DESFire EV2/EV3 or a host bug. The card must start blank:
// PICC master key all-zero AES, version 0, and the suite creates (and
// finally deletes) its own application.
//
// Faults a real card cannot be told to produce (tearing) are covered by
// the simulated card's own tests, not here.
package conformance

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/desfire-relay/relay/desfire"
)

// AID of the application the suite creates (sent LSB first).
var AID = []byte{0xC0, 0xF0, 0x0F}

// Open returns a transport to a freshly presented card.
type Open func(t *testing.T) desfire.Transport

var (
	zero   = make([]byte, 16)
	appKey = bytes.Repeat([]byte{0x5A}, 16)
	tmKey  = bytes.Repeat([]byte{0x7E}, 16)
)

type gen struct {
	name string
	auth func(keyNo byte, key []byte) desfire.Authenticator
}

var gens = []gen{
	{"ev1", func(no byte, k []byte) desfire.Authenticator { a, _ := desfire.NewAuthAES(no, k, nil); return a }},
	{"ev2", func(no byte, k []byte) desfire.Authenticator { return desfire.NewAuthEV2First(no, k, nil) }},
}

// Run runs the suite, once per authentication generation.
func Run(t *testing.T, open Open) {
	for _, g := range gens {
		t.Run(g.name, func(t *testing.T) { run(t, open, g) })
	}
}

func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func run(t *testing.T, open Open, g gen) {
	ctx := context.Background()
	card := desfire.NewCard(open(t))
	must(t, "select PICC", card.SelectApplication(ctx, []byte{0, 0, 0}))
	must(t, "authenticate PICC master key", card.Authenticate(ctx, g.auth(0, zero)))
	_ = card.DeleteApplication(ctx, AID) // left over from an interrupted run
	must(t, "authenticate PICC master key", card.Authenticate(ctx, g.auth(0, zero)))
	must(t, "create application", card.CreateApplication(ctx, AID, 0x0B, 0x80|3))
	must(t, "select application", card.SelectApplication(ctx, AID))
	must(t, "authenticate application master key", card.Authenticate(ctx, g.auth(0, zero)))
	must(t, "change key 1", card.ChangeKey(ctx, 1, 0, appKey, zero, 7))
	acc := func(r, w, rw, c byte) []byte { return []byte{rw<<4 | c, r<<4 | w} }
	full, mac, plain := byte(desfire.CommFull), byte(desfire.CommMAC), byte(desfire.CommPlain)
	must(t, "create standard file", card.CreateStdDataFile(ctx, 1, full, acc(1, 1, 1, 0), 64))
	must(t, "create backup file", card.CreateBackupDataFile(ctx, 2, mac, acc(1, 1, 1, 0), 32))
	must(t, "create value file", card.CreateValueFile(ctx, 3, full, acc(1, 1, 1, 0), 0, 1000, 100, true))
	must(t, "create cyclic record file", card.CreateCyclicRecordFile(ctx, 4, full, acc(1, 1, 1, 0), 16, 4))
	must(t, "create linear record file", card.CreateLinearRecordFile(ctx, 5, plain, acc(1, 1, 1, 0), 8, 2))
	must(t, "create free file", card.CreateStdDataFile(ctx, 6, full, acc(0xE, 0xF, 0xF, 0), 8))
	must(t, "create transaction MAC file", card.CreateTransactionMACFile(ctx, 7, plain, acc(1, 0xF, 0xF, 0), tmKey, 1))

	t.Run("key version and file list", func(t *testing.T) {
		must(t, "select", card.SelectApplication(ctx, AID))
		v, err := card.GetKeyVersion(ctx, 1)
		if err != nil || v != 7 {
			t.Fatalf("key version %d %v", v, err)
		}
		must(t, "authenticate", card.Authenticate(ctx, g.auth(1, appKey)))
		ids, err := card.GetFileIDs(ctx)
		if err != nil || len(ids) != 7 {
			t.Fatalf("file IDs %v %v", ids, err)
		}
	})
	t.Run("wrong key is refused", func(t *testing.T) {
		must(t, "select", card.SelectApplication(ctx, AID))
		if err := card.Authenticate(ctx, g.auth(1, zero)); !errors.Is(err, desfire.ErrAuthentication) {
			t.Fatalf("wrong key: %v", err)
		}
	})
	t.Run("files in every comm mode", func(t *testing.T) {
		must(t, "select", card.SelectApplication(ctx, AID))
		must(t, "authenticate", card.Authenticate(ctx, g.auth(1, appKey)))
		data := bytes.Repeat([]byte{0xA5, 0x3C}, 30) // spans additional frames
		must(t, "write standard (full)", card.WriteData(ctx, 1, 2, data, desfire.CommFull))
		got, err := card.ReadData(ctx, 1, 2, uint32(len(data)), desfire.CommFull)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read standard %X %v", got, err)
		}
		must(t, "write backup (mac)", card.WriteData(ctx, 2, 0, []byte{1, 2, 3}, desfire.CommMAC))
		got, err = card.ReadData(ctx, 2, 0, 3, desfire.CommMAC)
		if err != nil || !bytes.Equal(got, []byte{0, 0, 0}) {
			t.Fatalf("backup file shows uncommitted data: %X %v", got, err)
		}
		must(t, "commit", commit(ctx, card))
		got, err = card.ReadData(ctx, 2, 0, 3, desfire.CommMAC)
		if err != nil || !bytes.Equal(got, []byte{1, 2, 3}) {
			t.Fatalf("backup after commit %X %v", got, err)
		}
		must(t, "write linear (plain)", card.WriteRecord(ctx, 5, 0, []byte{9, 9}, desfire.CommPlain))
		must(t, "commit", commit(ctx, card))
		recs, err := card.ReadRecords(ctx, 5, 0, 0, 8, desfire.CommPlain)
		if err != nil || len(recs) != 1 || recs[0][0] != 9 {
			t.Fatalf("linear records %X %v", recs, err)
		}
	})
	t.Run("value file and abort", func(t *testing.T) {
		must(t, "select", card.SelectApplication(ctx, AID))
		must(t, "authenticate", card.Authenticate(ctx, g.auth(1, appKey)))
		must(t, "credit", card.Credit(ctx, 3, 50, desfire.CommFull))
		must(t, "abort", card.AbortTransaction(ctx))
		v, err := card.GetValue(ctx, 3, desfire.CommFull)
		if err != nil || v != 100 {
			t.Fatalf("value after abort %d %v", v, err)
		}
		if err := card.Credit(ctx, 3, 901, desfire.CommFull); !errors.Is(err, desfire.ErrBoundary) {
			t.Fatalf("credit over the upper limit: %v", err)
		}
		must(t, "authenticate", card.Authenticate(ctx, g.auth(1, appKey)))
		must(t, "debit", card.Debit(ctx, 3, 30, desfire.CommFull))
		must(t, "commit", commit(ctx, card))
		// LimitedCredit may give back what the last committed transaction
		// debited, no more.
		if err := card.LimitedCredit(ctx, 3, 31, desfire.CommFull); !errors.Is(err, desfire.ErrBoundary) {
			t.Fatalf("limited credit above the last debit: %v", err)
		}
		must(t, "authenticate", card.Authenticate(ctx, g.auth(1, appKey)))
		must(t, "limited credit", card.LimitedCredit(ctx, 3, 30, desfire.CommFull))
		must(t, "credit", card.Credit(ctx, 3, 5, desfire.CommFull))
		must(t, "commit", commit(ctx, card))
		if v, err = card.GetValue(ctx, 3, desfire.CommFull); err != nil || v != 105 {
			t.Fatalf("value after commit %d %v", v, err)
		}
	})
	t.Run("cyclic records and transaction MAC counter", func(t *testing.T) {
		must(t, "select", card.SelectApplication(ctx, AID))
		uid := func() []byte {
			must(t, "authenticate", card.Authenticate(ctx, g.auth(1, appKey)))
			u, err := card.GetCardUID(ctx)
			must(t, "get card UID", err)
			return u
		}()
		var last uint32
		for i := 0; i < 5; i++ {
			tm, err := desfire.NewTransactionMAC(tmKey, uid)
			must(t, "transaction MAC", err)
			rec := bytes.Repeat([]byte{byte(i)}, 16)
			wr := desfire.WriteRecordCmd(4, 0, rec, desfire.CommFull)
			_, err = card.Exec(ctx, wr)
			must(t, "write record", err)
			must(t, "TMI", tm.Add(wr.Code, wr.Header, wr.Data, nil))
			tmc, tmv, err := card.CommitTransaction(ctx, true)
			must(t, "commit with TMAC", err)
			if tmc != last+1 && last != 0 {
				t.Fatalf("TMC %d after %d", tmc, last)
			}
			if err := tm.Verify(tmc, tmv); err != nil {
				t.Fatalf("TMV of commit %d: %v", i, err)
			}
			last = tmc
		}
		recs, err := card.ReadRecords(ctx, 4, 0, 0, 16, desfire.CommFull)
		if err != nil || len(recs) != 3 {
			t.Fatalf("cyclic file of 4 keeps 3 records: %d %v", len(recs), err)
		}
	})
	t.Run("access rights", func(t *testing.T) {
		must(t, "select", card.SelectApplication(ctx, AID))
		if _, err := card.ReadData(ctx, 1, 0, 4, desfire.CommPlain); !errors.Is(err, desfire.ErrAuthentication) && !errors.Is(err, desfire.ErrNotAuthenticated) {
			t.Fatalf("read without authentication: %v", err)
		}
		got, err := card.ReadData(ctx, 6, 0, 8, desfire.CommPlain)
		if err != nil || len(got) != 8 {
			t.Fatalf("free read: %v", err)
		}
		must(t, "authenticate key 0", card.Authenticate(ctx, g.auth(0, zero)))
		if _, err := card.ReadData(ctx, 1, 0, 4, desfire.CommFull); !errors.Is(err, desfire.ErrPermissionDenied) {
			t.Fatalf("read with the wrong key: %v", err)
		}
	})
	must(t, "select PICC", card.SelectApplication(ctx, []byte{0, 0, 0}))
	must(t, "authenticate PICC", card.Authenticate(ctx, g.auth(0, zero)))
	must(t, "delete application", card.DeleteApplication(ctx, AID))
}

// commit commits without asking for the Transaction MAC.
func commit(ctx context.Context, c *desfire.Card) error {
	_, _, err := c.CommitTransaction(ctx, false)
	return err
}
