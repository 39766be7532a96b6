package simcard

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/desfire-relay/relay/desfire"
)

var (
	testAID = []byte{0x56, 0x34, 0x12}
	zero16  = make([]byte, 16)
	tmKey   = bytes.Repeat([]byte{0x7E}, 16)
)

func testKey(n byte) []byte { return bytes.Repeat([]byte{0x10 + n}, 16) }

// access packs Read, Write, ReadWrite, Change into the 2 wire bytes.
func access(r, w, rw, ch byte) []byte { return []byte{rw<<4 | ch, r<<4 | w} }

const (
	fValue  = 1 // Full, R=1 W=2 RW=2 C=0, 0..10000, value 100, limited credit
	fBackup = 2 // MAC, 100 bytes
	fCyclic = 3 // Full, 16-byte records, 4 (3 usable)
	fStd    = 4 // plain, free access, 32 bytes
	fTMAC   = 5 // TMAC file, read free, CommitReaderID enabled with free access (not required)
	fLinear = 6 // MAC, 8-byte records, 2
)

// personalise issues a blank card by raw APDUs: application testAID with
// keys testKey(0..4) and one file of each type. It returns the host,
// authenticated with nothing.
func personalise(t *testing.T, c *Card, ev2 bool) *testHost {
	t.Helper()
	h := newHost(t, c)
	auth := func(k byte, key []byte) {
		t.Helper()
		var err error
		if ev2 {
			err = h.authEV2(k, key, true)
		} else {
			err = h.authEV1(k, key)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	h.must(h.plain(0x5A, 0, 0, 0))
	auth(0, zero16)
	h.must(h.plain(0xCA, append(append([]byte(nil), testAID...), 0x0F, 0x85)...))
	h.must(h.plain(0x5A, testAID...))
	auth(0, zero16)
	for k := byte(1); k <= 4; k++ {
		if err := h.changeKey(k, testKey(k), zero16, 1); err != nil {
			t.Fatalf("change key %d: %v", k, err)
		}
	}
	if err := h.changeKey(0, testKey(0), nil, 1); err != nil {
		t.Fatalf("change key 0: %v", err)
	}
	auth(0, testKey(0))
	hdr := func(no byte, comm desfire.CommMode, acc []byte, rest ...[]byte) []byte {
		b := append([]byte{no, byte(comm)}, acc...)
		for _, r := range rest {
			b = append(b, r...)
		}
		return b
	}
	h.must(h.plain(0xCC, hdr(fValue, desfire.CommFull, access(1, 2, 2, 0), le32b(0), le32b(10000), le32b(100), []byte{1})...))
	h.must(h.plain(0xCB, hdr(fBackup, desfire.CommMAC, access(1, 2, 2, 0), le24b(100))...))
	h.must(h.plain(0xC0, hdr(fCyclic, desfire.CommFull, access(1, 2, 2, 0), le24b(16), le24b(4))...))
	h.must(h.plain(0xCD, hdr(fStd, desfire.CommPlain, access(0xE, 0xE, 0xE, 0xE), le24b(32))...))
	h.must(h.cmd(0xCE, hdr(fTMAC, desfire.CommPlain, access(0xE, 0xF, 0xE, 0), []byte{0x02}), append(append([]byte(nil), tmKey...), 0x01), desfire.CommFull, desfire.CommMAC))
	h.must(h.plain(0xC1, hdr(fLinear, desfire.CommMAC, access(1, 2, 2, 0), le24b(8), le24b(2))...))
	h.kind = 0
	h.must(h.plain(0x5A, testAID...))
	return h
}

func newCard(t *testing.T, opts Options) *Card {
	t.Helper()
	if opts.Rand == nil {
		opts.Rand = zeroRand(3)
	}
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func isStatus(err error, st byte) bool {
	var s statusErr
	return errors.As(err, &s) && byte(s) == st
}

func (h *testHost) auth(ev2 bool, k byte) {
	h.t.Helper()
	var err error
	if ev2 {
		err = h.authEV2(k, testKey(k), true)
	} else {
		err = h.authEV1(k, testKey(k))
	}
	if err != nil {
		h.t.Fatal(err)
	}
}

func (h *testHost) value(full bool) []byte {
	h.t.Helper()
	return h.must(h.cmd(0x6C, []byte{fValue}, nil, desfire.CommMAC, desfire.CommFull))
}

func gens(t *testing.T, f func(t *testing.T, ev2 bool)) {
	for _, g := range []struct {
		name string
		ev2  bool
	}{{"ev1", false}, {"ev2", true}} {
		t.Run(g.name, func(t *testing.T) { f(t, g.ev2) })
	}
}

func TestIssuanceResult(t *testing.T) {
	gens(t, func(t *testing.T, ev2 bool) {
		c := newCard(t, Options{})
		personalise(t, c, ev2)
		if apps := c.Applications(); len(apps) != 1 || !bytes.Equal(apps[0], testAID) {
			t.Fatalf("applications %X", apps)
		}
		for k := 0; k <= 4; k++ {
			key, ver, err := c.Key(testAID, k)
			if err != nil || !bytes.Equal(key, testKey(byte(k))) || ver != 1 {
				t.Fatalf("key %d = %X v%d %v", k, key, ver, err)
			}
		}
		if v, err := c.Value(testAID, fValue); err != nil || v != 100 {
			t.Fatalf("value %d %v", v, err)
		}
		if tmc, tmv, err := c.TransactionMAC(testAID); err != nil || tmc != 0 || len(tmv) != 8 {
			t.Fatalf("tmac %d %X %v", tmc, tmv, err)
		}
	})
}

// TestTopUp credits a value file and checks commit, TMC and TMV against an
// independent TMI accumulation.
func TestTopUp(t *testing.T) {
	gens(t, func(t *testing.T, ev2 bool) {
		c := newCard(t, Options{})
		h := personalise(t, c, ev2)
		h.auth(ev2, 2)
		tm, err := desfire.NewTransactionMAC(tmKey, c.UID())
		if err != nil {
			t.Fatal(err)
		}
		v := h.value(true)
		if !bytes.Equal(v, le32b(100)) {
			t.Fatalf("value %X", v)
		}
		_ = tm.Add(0x6C, []byte{fValue}, nil, v)
		h.must(h.cmd(0x0C, []byte{fValue}, le32b(50), desfire.CommFull, desfire.CommMAC))
		_ = tm.Add(0x0C, []byte{fValue}, le32b(50), nil)
		if got := h.value(true); !bytes.Equal(got, le32b(100)) {
			t.Fatalf("uncommitted credit visible: %X", got)
		}
		_ = tm.Add(0x6C, []byte{fValue}, nil, le32b(100))
		if !c.Pending() {
			t.Fatal("no pending transaction")
		}
		r := h.must(h.cmd(0xC7, []byte{0x01}, nil, desfire.CommMAC, desfire.CommMAC))
		tmc, tmv, err := desfire.ParseCommitTransactionTMAC(r)
		if err != nil || tmc != 1 {
			t.Fatalf("commit answer %X: %v", r, err)
		}
		if err := tm.Verify(tmc, tmv); err != nil {
			t.Fatal(err)
		}
		if val, _ := c.Value(testAID, fValue); val != 150 {
			t.Fatalf("value after commit %d", val)
		}
		if gotTMC, gotTMV, _ := c.TransactionMAC(testAID); gotTMC != 1 || !bytes.Equal(gotTMV, tmv) {
			t.Fatalf("TMAC file %d %X", gotTMC, gotTMV)
		}
		// The TMAC file reads back TMC ‖ TMV (free read access).
		d := h.must(h.cmd(0xBD, append([]byte{fTMAC}, 0, 0, 0, 0, 0, 0), nil, desfire.CommPlain, desfire.CommPlain))
		if !bytes.Equal(d, r) {
			t.Fatalf("TMAC file %X, commit said %X", d, r)
		}
		// An empty transaction leaves the counter alone.
		h.must(h.cmd(0xC7, []byte{0x01}, nil, desfire.CommMAC, desfire.CommMAC))
		if n, _, _ := c.TransactionMAC(testAID); n != 1 {
			t.Fatalf("TMC %d after an empty commit", n)
		}
	})
}

func TestCommitReaderID(t *testing.T) {
	c := newCard(t, Options{})
	h := personalise(t, c, true)
	h.auth(true, 2)
	tm, _ := desfire.NewTransactionMAC(tmKey, c.UID())
	tmri := bytes.Repeat([]byte{0x33}, 16)
	enc := h.must(h.cmd(0xC8, nil, tmri, desfire.CommMAC, desfire.CommMAC))
	prev, err := tm.DecryptReaderID(1, enc)
	if err != nil || !bytes.Equal(prev, zero16) {
		t.Fatalf("TMRIPrev %X %v", prev, err)
	}
	_ = tm.Add(0xC8, nil, tmri, enc)
	if _, err := h.cmd(0xC8, nil, tmri, desfire.CommMAC, desfire.CommMAC); !isStatus(err, 0x9D) {
		t.Fatalf("second CommitReaderID: %v", err)
	}
	h.auth(true, 2)
	enc = h.must(h.cmd(0xC8, nil, tmri, desfire.CommMAC, desfire.CommMAC))
	tm.Reset()
	_ = tm.Add(0xC8, nil, tmri, enc)
	r := h.must(h.cmd(0xC7, []byte{0x01}, nil, desfire.CommMAC, desfire.CommMAC))
	tmc, tmv, _ := desfire.ParseCommitTransactionTMAC(r)
	if err := tm.Verify(tmc, tmv); err != nil {
		t.Fatal(err)
	}
	// The next transaction sees this reader as the previous one.
	enc = h.must(h.cmd(0xC8, nil, bytes.Repeat([]byte{0x44}, 16), desfire.CommMAC, desfire.CommMAC))
	if prev, _ := tm.DecryptReaderID(2, enc); !bytes.Equal(prev, tmri) {
		t.Fatalf("TMRIPrev %X", prev)
	}
}

// TestCommitReaderIDRequired: a Transaction MAC file whose ReadWrite
// right (AppCommitReaderIDKey) names a key refuses CommitTransaction of a
// transaction without CommitReaderID (nothing is committed), takes
// CommitReaderID only under that key, and covers it in the TMV; with the
// right F the command is disabled.
func TestCommitReaderIDRequired(t *testing.T) {
	recreate := func(h *testHost, rw byte) {
		t.Helper()
		h.auth(true, 0)
		h.must(h.cmd(0xDF, []byte{fTMAC}, nil, desfire.CommMAC, desfire.CommMAC))
		h.must(h.cmd(0xCE, append([]byte{fTMAC, byte(desfire.CommPlain)}, append(access(0xE, 0xF, rw, 0), 0x02)...), append(append([]byte(nil), tmKey...), 0x01), desfire.CommFull, desfire.CommMAC))
	}
	credit := func(h *testHost) {
		t.Helper()
		h.must(h.cmd(0x0C, []byte{fValue}, le32b(5), desfire.CommFull, desfire.CommMAC))
	}
	c := newCard(t, Options{})
	h := personalise(t, c, true)
	recreate(h, 2)
	h.auth(true, 2)
	credit(h)
	if _, err := h.cmd(0xC7, []byte{0x01}, nil, desfire.CommMAC, desfire.CommMAC); !isStatus(err, 0x9D) {
		t.Fatalf("commit without CommitReaderID: %v", err)
	}
	if v, _ := c.Value(testAID, fValue); v != 100 {
		t.Fatalf("value %d after a refused commit, want 100", v)
	}
	h.auth(true, 1)
	if _, err := h.cmd(0xC8, nil, bytes.Repeat([]byte{0x55}, 16), desfire.CommMAC, desfire.CommMAC); err == nil {
		t.Fatal("CommitReaderID under another key accepted")
	}
	h.auth(true, 2)
	tm, _ := desfire.NewTransactionMAC(tmKey, c.UID())
	tmri := bytes.Repeat([]byte{0x66}, 16)
	enc := h.must(h.cmd(0xC8, nil, tmri, desfire.CommMAC, desfire.CommMAC))
	_ = tm.Add(0xC8, nil, tmri, enc)
	credit(h)
	_ = tm.Add(0x0C, []byte{fValue}, le32b(5), nil)
	r := h.must(h.cmd(0xC7, []byte{0x01}, nil, desfire.CommMAC, desfire.CommMAC))
	tmc, tmv, _ := desfire.ParseCommitTransactionTMAC(r)
	if err := tm.Verify(tmc, tmv); err != nil {
		t.Fatalf("TMV with the reader ID: %v", err)
	}
	if v, _ := c.Value(testAID, fValue); v != 105 {
		t.Fatalf("value %d, want 105", v)
	}
	recreate(h, 0xF)
	h.auth(true, 2)
	if _, err := h.cmd(0xC8, nil, tmri, desfire.CommMAC, desfire.CommMAC); !isStatus(err, 0x9D) {
		t.Fatalf("CommitReaderID while disabled: %v", err)
	}
}

// TestDiscard: abort, selection, new authentication and removal all drop
// the working image; only commit makes it durable.
func TestDiscard(t *testing.T) {
	cases := []struct {
		name string
		end  func(h *testHost, c *Card) error
		want int32
	}{
		{"commit", func(h *testHost, c *Card) error { _, err := h.plain(0xC7); return err }, 130},
		{"abort", func(h *testHost, c *Card) error { _, err := h.plain(0xA7); return err }, 100},
		{"select", func(h *testHost, c *Card) error { _, err := h.plain(0x5A, testAID...); return err }, 100},
		{"reauth", func(h *testHost, c *Card) error { return h.authEV2(2, testKey(2), true) }, 100},
		{"remove", func(h *testHost, c *Card) error { c.Remove(); return c.Tap() }, 100},
		{"tear before commit", func(h *testHost, c *Card) error {
			c.RemoveAfter(0)
			_, err := h.plain(0xC7)
			if !errors.Is(err, ErrCardRemoved) {
				return errors.New("commit went through")
			}
			return c.Tap()
		}, 100},
		{"tear after commit", func(h *testHost, c *Card) error {
			c.SetTearAfterCommit(true)
			_, err := h.plain(0xC7)
			if !errors.Is(err, ErrCardRemoved) {
				return errors.New("no tear")
			}
			if _, err := h.plain(0x5A, testAID...); !errors.Is(err, ErrCardRemoved) {
				return errors.New("card still in the field")
			}
			return c.Tap()
		}, 130},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newCard(t, Options{})
			h := personalise(t, c, true)
			h.auth(true, 2)
			h.must(h.cmd(0x0C, []byte{fValue}, le32b(40), desfire.CommFull, desfire.CommMAC))
			h.must(h.cmd(0xDC, []byte{fValue}, le32b(10), desfire.CommFull, desfire.CommMAC))
			if err := tc.end(h, c); err != nil {
				t.Fatal(err)
			}
			if v, _ := c.Value(testAID, fValue); v != tc.want {
				t.Fatalf("value %d, want %d", v, tc.want)
			}
			if c.Pending() {
				t.Fatal("working image survived")
			}
		})
	}
}

// TestStatusTable checks the card's status for commands that must fail,
// and that each error ends the authentication.
func TestStatusTable(t *testing.T) {
	type step func(h *testHost) error
	full := desfire.CommFull
	cases := []struct {
		name  string
		auth  int // key to authenticate with (EV2), -1 none
		run   step
		want  byte
		check func(t *testing.T, c *Card)
	}{
		{"read value unauthenticated", -1, func(h *testHost) error {
			_, err := h.cmd(0x6C, []byte{fValue}, nil, desfire.CommPlain, desfire.CommPlain)
			return err
		}, 0xAE, nil},
		{"read value with key 3", 3, func(h *testHost) error {
			_, err := h.cmd(0x6C, []byte{fValue}, nil, desfire.CommMAC, full)
			return err
		}, 0x9D, nil},
		{"credit with read key", 1, func(h *testHost) error {
			_, err := h.cmd(0x0C, []byte{fValue}, le32b(1), full, desfire.CommMAC)
			return err
		}, 0x9D, nil},
		{"credit past upper limit", 2, func(h *testHost) error {
			_, err := h.cmd(0x0C, []byte{fValue}, le32b(9901), full, desfire.CommMAC)
			return err
		}, 0xBE, nil},
		{"debit under lower limit", 1, func(h *testHost) error {
			_, err := h.cmd(0xDC, []byte{fValue}, le32b(101), full, desfire.CommMAC)
			return err
		}, 0xBE, nil},
		{"negative credit", 2, func(h *testHost) error {
			_, err := h.cmd(0x0C, []byte{fValue}, le32b(-5), full, desfire.CommMAC)
			return err
		}, 0x9E, nil},
		{"limited credit without debit", 2, func(h *testHost) error {
			_, err := h.cmd(0x1C, []byte{fValue}, le32b(1), full, desfire.CommMAC)
			return err
		}, 0xBE, nil},
		{"file not found", 2, func(h *testHost) error {
			_, err := h.cmd(0x6C, []byte{9}, nil, desfire.CommMAC, full)
			return err
		}, 0xF0, nil},
		{"read beyond file", -1, func(h *testHost) error {
			_, err := h.cmd(0xBD, []byte{fStd, 30, 0, 0, 3, 0, 0}, nil, desfire.CommPlain, desfire.CommPlain)
			return err
		}, 0xBE, nil},
		{"application not found", -1, func(h *testHost) error { _, err := h.plain(0x5A, 9, 9, 9); return err }, 0xA0, nil},
		{"illegal command", 2, func(h *testHost) error { _, err := h.plain(0x99); return err }, 0x1C, nil},
		{"length", 2, func(h *testHost) error {
			_, err := h.cmd(0x6C, []byte{fValue, 0}, nil, desfire.CommMAC, full)
			return err
		}, 0x7E, nil},
		{"bad command MAC or CRC", 2, func(h *testHost) error {
			// Host and card chains disagree: EV2 counter, EV1 IV.
			h.ctr++
			if h.iv != nil {
				h.iv[0] ^= 1
			}
			_, err := h.cmd(0x0C, []byte{fValue}, le32b(1), full, desfire.CommMAC)
			return err
		}, 0x1E, nil},
		{"no such key", -1, func(h *testHost) error { return h.authAny(7, zero16) }, 0x40, nil},
		{"wrong key", -1, func(h *testHost) error { return h.authAny(1, zero16) }, 0xAE, nil},
		{"NonFirst without a session", -1, func(h *testHost) error { return h.authEV2(1, testKey(1), false) }, 0xAE, nil},
		{"duplicate file", 0, func(h *testHost) error {
			_, err := h.plain(0xCD, fStd, 0, 0xEE, 0xEE, 1, 0, 0)
			return err
		}, 0xDE, nil},
		{"file too large", 0, func(h *testHost) error {
			_, err := h.plain(0xCD, 20, 0, 0xEE, 0xEE, 0, 0, 1)
			return err
		}, 0x0E, nil},
		{"change key frozen by settings", 1, func(h *testHost) error { return h.changeKey(3, zero16, testKey(3), 0) }, 0x9D, nil},
		{"linear record file full", 2, func(h *testHost) error {
			for i := 0; i < 3; i++ {
				if _, err := h.cmd(0x3B, []byte{fLinear, 0, 0, 0, 1, 0, 0}, []byte{byte(i)}, desfire.CommMAC, desfire.CommMAC); err != nil {
					return err
				}
				if _, err := h.plain(0xC7); err != nil {
					return err
				}
			}
			return nil
		}, 0xBE, func(t *testing.T, c *Card) {
			if r, _ := c.Records(testAID, fLinear); len(r) != 2 {
				t.Fatalf("%d records", len(r))
			}
		}},
	}
	gens(t, func(t *testing.T, ev2 bool) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				runStatusCase(t, ev2, tc.auth, tc.run, tc.want, tc.check)
			})
		}
	})
}

func runStatusCase(t *testing.T, ev2 bool, auth int, run func(h *testHost) error, want byte, check func(t *testing.T, c *Card)) {
	c := newCard(t, Options{})
	h := personalise(t, c, ev2)
	h.ev2 = ev2
	if auth >= 0 {
		h.auth(ev2, byte(auth))
	}
	err := run(h)
	if !isStatus(err, want) {
		t.Fatalf("got %v, want status %02X", err, want)
	}
	if k, _ := c.Authenticated(); k != "" {
		t.Fatalf("still authenticated (%s) after an error", k)
	}
	if check != nil {
		check(t, c)
	}
}

func TestLimitedCredit(t *testing.T) {
	c := newCard(t, Options{})
	h := personalise(t, c, false)
	h.auth(false, 2)
	h.must(h.cmd(0xDC, []byte{fValue}, le32b(30), desfire.CommFull, desfire.CommMAC))
	h.must(h.plain(0xC7))
	if _, err := h.cmd(0x1C, []byte{fValue}, le32b(31), desfire.CommFull, desfire.CommMAC); !isStatus(err, 0xBE) {
		t.Fatalf("limited credit over the debit: %v", err)
	}
	h.auth(false, 2)
	h.must(h.cmd(0x1C, []byte{fValue}, le32b(30), desfire.CommFull, desfire.CommMAC))
	h.must(h.plain(0xC7))
	if v, _ := c.Value(testAID, fValue); v != 100 {
		t.Fatalf("value %d", v)
	}
	if _, err := h.cmd(0x1C, []byte{fValue}, le32b(1), desfire.CommFull, desfire.CommMAC); !isStatus(err, 0xBE) {
		t.Fatalf("second limited credit: %v", err)
	}
}

// TestRecordsAndChaining: long MACed writes and reads through additional
// frames, and cyclic record files.
func TestRecordsAndChaining(t *testing.T) {
	gens(t, func(t *testing.T, ev2 bool) {
		c := newCard(t, Options{})
		h := personalise(t, c, ev2)
		h.auth(ev2, 2)
		data := make([]byte, 100)
		for i := range data {
			data[i] = byte(i * 7)
		}
		before := c.APDUs()
		h.must(h.cmd(0x3D, []byte{fBackup, 0, 0, 0, 100, 0, 0}, data, desfire.CommMAC, desfire.CommMAC))
		if n := c.APDUs() - before; n != 2 {
			t.Fatalf("write of 100 bytes took %d frames", n)
		}
		if d, _ := c.Data(testAID, fBackup); !bytes.Equal(d, make([]byte, 100)) {
			t.Fatal("backup file written before commit")
		}
		h.must(h.plain(0xC7))
		h.auth(ev2, 1)
		before = c.APDUs()
		got := h.must(h.cmd(0xBD, []byte{fBackup, 0, 0, 0, 0, 0, 0}, nil, desfire.CommMAC, desfire.CommMAC))
		if !bytes.Equal(got, data) {
			t.Fatalf("read back %X", got)
		}
		if n := c.APDUs() - before; n != 2 {
			t.Fatalf("read of 100 bytes took %d frames", n)
		}
		h.auth(ev2, 2)
		for i := 1; i <= 5; i++ {
			h.must(h.cmd(0x3B, []byte{fCyclic, 0, 0, 0, 2, 0, 0}, []byte{byte(i), byte(i)}, desfire.CommFull, desfire.CommMAC))
			h.must(h.plain(0xC7))
		}
		recs, _ := c.Records(testAID, fCyclic)
		if len(recs) != 3 || recs[0][0] != 3 || recs[2][0] != 5 {
			t.Fatalf("records %X", recs)
		}
		got = h.must(h.cmd(0xBB, []byte{fCyclic, 0, 0, 0, 0, 0, 0}, nil, desfire.CommMAC, desfire.CommFull))
		if len(got) != 48 || got[0] != 3 || got[32] != 5 {
			t.Fatalf("ReadRecords all: %X", got)
		}
		got = h.must(h.cmd(0xBB, []byte{fCyclic, 1, 0, 0, 1, 0, 0}, nil, desfire.CommMAC, desfire.CommFull))
		if len(got) != 16 || got[0] != 4 {
			t.Fatalf("ReadRecords(1,1): %X", got)
		}
		h.must(h.plain(0xEB, fCyclic))
		h.must(h.plain(0xC7))
		if recs, _ := c.Records(testAID, fCyclic); len(recs) != 0 {
			t.Fatalf("records after clear %X", recs)
		}
		if _, err := h.cmd(0xBB, []byte{fCyclic, 0, 0, 0, 0, 0, 0}, nil, desfire.CommMAC, desfire.CommFull); !isStatus(err, 0xBE) {
			t.Fatalf("read of an empty record file: %v", err)
		}
	})
}

// TestFreeAccessIsPlain: a free file is read and written in plain even
// when authenticated; the EV2 counter still advances.
func TestFreeAccessIsPlain(t *testing.T) {
	gens(t, func(t *testing.T, ev2 bool) {
		c := newCard(t, Options{})
		h := personalise(t, c, ev2)
		h.must(h.cmd(0x3D, []byte{fStd, 0, 0, 0, 3, 0, 0}, []byte{1, 2, 3}, desfire.CommPlain, desfire.CommPlain))
		h.auth(ev2, 1)
		got := h.must(h.cmd(0xBD, []byte{fStd, 0, 0, 0, 3, 0, 0}, nil, desfire.CommPlain, desfire.CommPlain))
		if !bytes.Equal(got, []byte{1, 2, 3}) {
			t.Fatalf("read %X", got)
		}
		if ev2 && h.ctr != 1 {
			t.Fatalf("counter %d", h.ctr)
		}
		h.value(true) // the session is still in step
	})
}

func TestInfoCommands(t *testing.T) {
	gens(t, func(t *testing.T, ev2 bool) {
		c := newCard(t, Options{RandomUID: true})
		h := personalise(t, c, ev2)
		if id := c.AnticollisionUID(); len(id) != 4 || id[0] != 0x08 {
			t.Fatalf("random ID %X", id)
		}
		if _, err := h.plain(0x51); !isStatus(err, 0xAE) {
			t.Fatalf("GetCardUID without auth: %v", err)
		}
		h.auth(ev2, 1)
		uid := h.must(h.cmd(0x51, nil, nil, h.mgmt(), desfire.CommFull))
		if !bytes.Equal(uid, c.UID()) {
			t.Fatalf("UID %X", uid)
		}
		if v := h.must(h.plain(0x64, 3)); !bytes.Equal(v, []byte{1}) {
			t.Fatalf("key version %X", v)
		}
		if ks := h.must(h.plain(0x45)); !bytes.Equal(ks, []byte{0x0F, 0x85}) {
			t.Fatalf("key settings %X", ks)
		}
		h.auth(ev2, 0)
		if ids := h.must(h.plain(0x6F)); !bytes.Equal(ids, []byte{1, 2, 3, 4, 5, 6}) {
			t.Fatalf("file IDs %X", ids)
		}
		fs := h.must(h.plain(0xF5, fCyclic))
		want := append([]byte{FileCyclic, 3}, access(1, 2, 2, 0)...)
		want = append(append(append(want, le24b(16)...), le24b(4)...), 0, 0, 0)
		if !bytes.Equal(fs, want) {
			t.Fatalf("file settings %X, want %X", fs, want)
		}
		h.must(h.cmd(0x5F, []byte{fStd}, []byte{byte(desfire.CommMAC), 0xEE, 0xEE}, desfire.CommPlain, desfire.CommPlain))
		h.must(h.plain(0x5A, 0, 0, 0))
		if ev2 {
			_ = h.authEV2(0, zero16, true)
		} else {
			_ = h.authEV1(0, zero16)
		}
		if err := h.changeKey(0, testKey(0), nil, 2); err != nil {
			t.Fatal(err)
		}
		h.auth(ev2, 0)
		if ids := h.must(h.plain(0x6A)); !bytes.Equal(ids, testAID) {
			t.Fatalf("AIDs %X", ids)
		}
		// GetVersion: three frames 7, 7, 14 (+ MAC); zero UID in random mode.
		if h.kind == kindEV2 {
			// EV2 needs the command MAC: the host joins the frames.
			v := h.must(h.plain(0x60))
			if len(v) != 28 || !bytes.Equal(v[14:21], make([]byte, 7)) {
				t.Fatalf("version %X", v)
			}
			return
		}
		var frames []int
		st, d, err := h.frame(0x60, nil)
		for err == nil && st == 0xAF {
			frames = append(frames, len(d))
			st, d, err = h.frame(0xAF, nil)
		}
		frames = append(frames, len(d))
		if err != nil || st != 0 || len(frames) != 3 || frames[0] != 7 || frames[1] != 7 || frames[2] != 14+8 {
			t.Fatalf("GetVersion frames %v %v %02X", frames, err, st)
		}
	})
}

func TestCommandAbortedAndAF(t *testing.T) {
	c := newCard(t, Options{})
	h := newHost(t, c)
	if st, _, _ := h.frame(0xAF, nil); st != 0x1C {
		t.Fatalf("stray AF: %02X", st)
	}
	if st, _, _ := h.frame(0x60, nil); st != 0xAF {
		t.Fatalf("GetVersion: %02X", st)
	}
	if st, _, _ := h.frame(0x6A, nil); st != 0xCA {
		t.Fatalf("command during chaining: %02X", st)
	}
	r := mustTransmit(t, c, []byte{0x00, 0xA4, 0x04, 0x00})
	if !bytes.Equal(r, []byte{0x6E, 0x00}) {
		t.Fatalf("ISO CLA: %X", r)
	}
}

func TestDelayAndCorrupt(t *testing.T) {
	c := newCard(t, Options{})
	c.SetDelay(time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Transmit(ctx, []byte{0x90, 0x60, 0, 0, 0}); !errors.Is(err, context.Canceled) {
		t.Fatalf("delay ignored the context: %v", err)
	}
	if c.APDUs() != 0 {
		t.Fatal("APDU executed after cancellation")
	}
	c.SetDelay(0)
	c.SetCorrupt(func(r []byte) []byte { r[0] ^= 0xFF; return r })
	r := mustTransmit(t, c, []byte{0x90, 0x60, 0, 0, 0})
	if r[0] != 0x04^0xFF {
		t.Fatalf("corrupt not applied: %X", r)
	}
}

func TestRemoveAfterCount(t *testing.T) {
	c := newCard(t, Options{})
	c.RemoveAfter(2)
	apdu := []byte{0x90, 0x5A, 0, 0, 3, 0, 0, 0, 0}
	for i := 0; i < 2; i++ {
		mustTransmit(t, c, apdu)
	}
	if _, err := c.Transmit(context.Background(), apdu); !errors.Is(err, ErrCardRemoved) {
		t.Fatalf("third APDU: %v", err)
	}
	if err := c.Tap(); err != nil {
		t.Fatal(err)
	}
	mustTransmit(t, c, apdu)
}

func TestConcurrentUse(t *testing.T) {
	c := newCard(t, Options{})
	personalise(t, c, true)
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 50; j++ {
				_, _ = c.Transmit(context.Background(), []byte{0x90, 0x6C, 0, 0, 1, fValue, 0})
				_, _ = c.Value(testAID, fValue)
				c.SetCorrupt(nil)
			}
		}()
	}
	wg.Wait()
}

func TestNonFirstAndAdmin(t *testing.T) {
	c := newCard(t, Options{})
	h := personalise(t, c, true)
	h.auth(true, 2)
	h.value(true)
	ti := append([]byte(nil), h.ti...)
	if err := h.authEV2(1, testKey(1), false); err != nil {
		t.Fatal(err)
	}
	if h.ctr != 1 || !bytes.Equal(h.ti, ti) {
		t.Fatalf("NonFirst reset TI/counter: %X %d", h.ti, h.ctr)
	}
	h.value(true) // counter and TI carried on, new keys in use
	if _, k := c.Authenticated(); k != 1 {
		t.Fatalf("session key %d", k)
	}
	// ChangeKeySettings (Full) then GetKeySettings.
	h.auth(true, 0)
	h.must(h.cmd(0x54, nil, []byte{0x0B}, desfire.CommFull, desfire.CommMAC))
	if ks := h.must(h.plain(0x45)); !bytes.Equal(ks, []byte{0x0B, 0x85}) {
		t.Fatalf("key settings %X", ks)
	}
	// Delete the application from the PICC level, then format.
	h.must(h.plain(0x5A, 0, 0, 0))
	if err := h.authEV2(0, zero16, true); err != nil {
		t.Fatal(err)
	}
	h.must(h.plain(0xCA, 1, 1, 1, 0x0F, 0x81))
	h.must(h.plain(0xDA, testAID...))
	if apps := c.Applications(); len(apps) != 1 || apps[0][0] != 1 {
		t.Fatalf("apps %X", apps)
	}
	h.must(h.plain(0xFC))
	if len(c.Applications()) != 0 {
		t.Fatal("format kept applications")
	}
	if _, err := c.Value(testAID, fValue); !errors.Is(err, ErrNoSuchObject) {
		t.Fatalf("inspection of a deleted app: %v", err)
	}
}

// TestNoChanges: Commit and Abort with nothing pending answer 0C under the
// session's MAC and keep the session; NoChangesOK turns that into 00.
func TestNoChanges(t *testing.T) {
	gens(t, func(t *testing.T, ev2 bool) {
		for _, tc := range []struct {
			name string
			ok   bool
			want byte
		}{{"default", false, 0x0C}, {"NoChangesOK", true, 0x00}} {
			t.Run(tc.name, func(t *testing.T) {
				c := newCard(t, Options{NoChangesOK: tc.ok})
				h := personalise(t, c, ev2)
				h.auth(ev2, 2)
				for _, code := range []byte{0xA7, 0xC7} {
					h.must(h.plain(code))
					if h.last != tc.want {
						t.Fatalf("command %02X: status %02X, want %02X", code, h.last, tc.want)
					}
				}
				h.value(true) // the session survived
				h.must(h.cmd(0x0C, []byte{fValue}, le32b(1), desfire.CommFull, desfire.CommMAC))
				h.must(h.plain(0xC7))
				if h.last != 0 {
					t.Fatalf("commit with changes: status %02X", h.last)
				}
			})
		}
	})
}

// TestShortFirstFrame: WriteData whose first frame carries only part of
// the data is completed by AF frames, whatever the first frame's size.
func TestShortFirstFrame(t *testing.T) {
	c := newCard(t, Options{})
	h := personalise(t, c, true)
	data := bytes.Repeat([]byte{0xAB}, 20)
	st, d, err := h.frame(0x3D, append([]byte{fStd, 2, 0, 0, 20, 0, 0}, data[:5]...))
	if err != nil || st != 0xAF || len(d) != 0 {
		t.Fatalf("first frame: %02X %X %v", st, d, err)
	}
	if st, _, err = h.frame(0xAF, data[5:12]); err != nil || st != 0xAF {
		t.Fatalf("second frame: %02X %v", st, err)
	}
	if st, _, err = h.frame(0xAF, data[12:]); err != nil || st != 0 {
		t.Fatalf("last frame: %02X %v", st, err)
	}
	got, _ := c.Data(testAID, fStd)
	if !bytes.Equal(got[2:22], data) {
		t.Fatalf("file %X", got)
	}
	// Too many bytes in the chain is a length error.
	h.frame(0x3D, append([]byte{fStd, 0, 0, 0, 2, 0, 0}, 1))
	if st, _, _ = h.frame(0xAF, []byte{1, 2}); st != 0x7E {
		t.Fatalf("overlong chain: %02X", st)
	}
}
