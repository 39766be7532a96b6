package provision_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/desfire/simcard"
	"github.com/desfire-relay/relay/transaction"
	"github.com/desfire-relay/relay/transaction/keys"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/ledger/sqlite"
	"github.com/desfire-relay/relay/transaction/lock"
	"github.com/desfire-relay/relay/transaction/profile"
	"github.com/desfire-relay/relay/transaction/provision"
)

type issueFixture struct {
	env  *provision.Env
	pl   ledger.ProvisionLedger
	plan *provision.IssuePlan
}

func newIssueFixture(t testing.TB, p profile.Profile) *issueFixture {
	t.Helper()
	env, kp := newEnv(t, p.AID)
	plan, err := provision.PlanIssue(context.Background(), kp, profile.Set{p.Name: p}, provision.IssueRequest{Profile: p.Name, Initial: 1500, KeyVersion: 1})
	if err != nil {
		t.Fatal(err)
	}
	return &issueFixture{env: env, pl: env.Ledger, plan: plan}
}

// newEnv is a provisioning environment on a fresh SQLite ledger with
// development keys (for the applications aids, besides the NTAG 424
// keys) and an in-memory lock.
func newEnv(t testing.TB, aids ...uint32) (*provision.Env, keys.Provider) {
	t.Helper()
	l, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "l.db"), ledger.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	f, err := keys.DevFile(nil, aids...)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := keys.New(f)
	if err != nil {
		t.Fatal(err)
	}
	return &provision.Env{Ledger: l.(ledger.ProvisionLedger), Keys: kp, Locker: lock.NewMemory()}, kp
}

func newBlank(t testing.TB) *simcard.Card { return newBlankN(t, 0) }

// newBlankN is a blank card with a UID of its own for each n, so many
// cards can share one ledger.
func newBlankN(t testing.TB, n int) *simcard.Card {
	t.Helper()
	c, err := simcard.New(simcard.Options{UID: []byte{4, 0x11, 0x22, 0x33, 0x44, byte(n >> 8), byte(n)}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// cardLost maps the simulated card's removal to tag_lost.
type cardLost struct{ c *simcard.Card }

func (l cardLost) Transmit(ctx context.Context, a []byte) ([]byte, error) {
	r, err := l.c.Transmit(ctx, a)
	if errors.Is(err, simcard.ErrCardRemoved) {
		return nil, fmt.Errorf("%w: %w", desfire.ErrTagLost, err)
	}
	return r, err
}

// loseAnswer lets the card execute APDU n (0-based) and loses its answer.
type loseAnswer struct {
	c *simcard.Card
	n int
}

func (l *loseAnswer) Transmit(ctx context.Context, a []byte) ([]byte, error) {
	r, err := l.c.Transmit(ctx, a)
	if l.n == 0 {
		l.n--
		l.c.Remove()
		return nil, fmt.Errorf("%w: answer lost", desfire.ErrTagLost)
	}
	l.n--
	if errors.Is(err, simcard.ErrCardRemoved) {
		return nil, fmt.Errorf("%w: %w", desfire.ErrTagLost, err)
	}
	return r, err
}

func (f *issueFixture) known(t testing.TB, c *simcard.Card) {
	t.Helper()
	p := f.plan.Profile
	rec, err := f.pl.GetProvision(context.Background(), fmt.Sprintf("%X", c.UID()))
	if errors.Is(err, ledger.ErrNotFound) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	key := func(no, v byte) []byte {
		if v == 0 {
			return make([]byte, 16)
		}
		k, err := f.env.Keys.CardKey(context.Background(), keys.Ref{AID: p.AID, KeyNo: no, Version: v}, c.UID())
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	for _, ks := range rec.Keys[:4] {
		have, ver, err := c.Key(p.AIDBytes(), int(ks.KeyNo))
		if err != nil {
			continue // application not created yet: nothing to know
		}
		ok := bytes.Equal(have, key(ks.KeyNo, ks.Version)) && ver == ks.Version
		if ks.Pending != nil && bytes.Equal(have, key(ks.KeyNo, *ks.Pending)) && ver == *ks.Pending {
			ok = true
		}
		if !ok {
			t.Fatalf("key %d: card at version %d, ledger %d (pending %v)", ks.KeyNo, ver, ks.Version, ks.Pending)
		}
	}
}

func (f *issueFixture) check(t testing.TB, c *simcard.Card) {
	t.Helper()
	p := f.plan.Profile
	if v, err := c.Value(p.AIDBytes(), p.ValueFile); err != nil || v != 1500 {
		t.Fatalf("value %d %v", v, err)
	}
	for _, no := range []byte{0, 1, 2, 3} {
		k, v, err := c.Key(p.AIDBytes(), int(no))
		want, _ := f.env.Keys.CardKey(context.Background(), keys.Ref{AID: p.AID, KeyNo: no, Version: 1}, c.UID())
		if err != nil || v != 1 || !bytes.Equal(k, want) {
			t.Fatalf("key %d: v%d %v", no, v, err)
		}
	}
}

func TestIssueDESFire(t *testing.T) {
	for _, p := range []profile.Profile{profile.AN12113(), profile.AN12113EV1(), profile.AN12113OTA()} {
		t.Run(p.Name, func(t *testing.T) {
			f := newIssueFixture(t, p)
			c := newBlank(t)
			res := f.env.IssueDESFire(context.Background(), cardLost{c}, c.UID(), f.plan)
			if !res.OK || res.Step != ledger.StepDone || len(res.Created) == 0 {
				t.Fatalf("%+v", res)
			}
			t.Logf("%s: %d exchanges, created %v", p.Name, res.Exchanges, res.Created)
			f.check(t, c)
			_ = c.Tap()
			if res := f.env.IssueDESFire(context.Background(), cardLost{c}, c.UID(), f.plan); res.Reason != provision.ReasonProvisioned {
				t.Fatalf("second issue: %+v", res)
			}
		})
	}
}

// TestIssueTearAtEveryAPDU: a tear before or after the card executes any
// APDU, then a retry: the ledger knows the card's keys at every point and
// the retry completes.
func TestIssueTearAtEveryAPDU(t *testing.T) {
	for _, p := range []profile.Profile{profile.AN12113(), profile.AN12113EV1(), profile.AN12113OTA()} {
		probe := newIssueFixture(t, p)
		clean := newBlank(t)
		if res := probe.env.IssueDESFire(context.Background(), cardLost{clean}, clean.UID(), probe.plan); !res.OK {
			t.Fatal(res)
		}
		total := clean.APDUs()
		f := newIssueFixture(t, p) // one ledger, one card UID per run
		run := 0
		for _, executed := range []bool{false, true} {
			for n := 0; n < total; n++ {
				run++
				t.Run(fmt.Sprintf("%s/executed=%v/apdu=%d", p.Name, executed, n), func(t *testing.T) {
					c := newBlankN(t, run)
					var tr desfire.Transport = cardLost{c}
					if executed {
						tr = &loseAnswer{c: c, n: n}
					} else {
						c.RemoveAfter(n)
					}
					res := f.env.IssueDESFire(context.Background(), tr, c.UID(), f.plan)
					if res.OK || res.Reason != transaction.ReasonTagLost {
						t.Fatalf("torn: %+v", res)
					}
					f.known(t, c)
					_ = c.Tap()
					if res = f.env.IssueDESFire(context.Background(), cardLost{c}, c.UID(), f.plan); !res.OK {
						t.Fatalf("retry: %+v", res)
					}
					f.known(t, c)
					f.check(t, c)
				})
			}
		}
	}
}

func TestIssueRefusesNonBlank(t *testing.T) {
	p := profile.AN12113()
	f := newIssueFixture(t, p)
	c := newBlank(t)
	// Someone else created the application with their own master key.
	card := desfire.NewCard(c)
	ctx := context.Background()
	if err := card.SelectApplication(ctx, []byte{0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	if err := card.Authenticate(ctx, desfire.NewAuthEV2First(0, make([]byte, 16), nil)); err != nil {
		t.Fatal(err)
	}
	if err := card.CreateApplication(ctx, p.AIDBytes(), 0x0B, 0x85); err != nil {
		t.Fatal(err)
	}
	if err := card.SelectApplication(ctx, p.AIDBytes()); err != nil {
		t.Fatal(err)
	}
	if err := card.Authenticate(ctx, desfire.NewAuthEV2First(0, make([]byte, 16), nil)); err != nil {
		t.Fatal(err)
	}
	if err := card.ChangeKey(ctx, 0, 0, bytes.Repeat([]byte{5}, 16), nil, 9); err != nil {
		t.Fatal(err)
	}
	_ = c.Tap()
	n := c.APDUs()
	res := f.env.IssueDESFire(ctx, cardLost{c}, c.UID(), f.plan)
	if res.OK || res.Reason != transaction.ReasonCardError {
		t.Fatalf("%+v", res)
	}
	if k, v, _ := c.Key(p.AIDBytes(), 1); v != 0 || !bytes.Equal(k, make([]byte, 16)) {
		t.Fatal("a key changed")
	}
	t.Logf("refused after %d APDUs", c.APDUs()-n)
}

func TestIssueBadInput(t *testing.T) {
	f := newIssueFixture(t, profile.AN12113())
	set := profile.Set{"an12113-ev2": profile.AN12113()}
	for name, req := range map[string]provision.IssueRequest{
		"unknown profile": {Profile: "nope", KeyVersion: 1},
		"initial too big": {Profile: "an12113-ev2", KeyVersion: 1, Initial: 1 << 30},
		"negative":        {Profile: "an12113-ev2", KeyVersion: 1, Initial: -1},
		"unknown keys":    {Profile: "an12113-ev2", KeyVersion: 4},
	} {
		if _, err := provision.PlanIssue(context.Background(), f.env.Keys, set, req); !errors.Is(err, provision.ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestIssueExchangeCounts publishes the exchange counts of issuance over
// a batching bridge: EV2 batches everything after each authentication;
// EV1 only behind predictable answers.
func TestIssueExchangeCounts(t *testing.T) {
	for _, c := range []struct {
		p    profile.Profile
		want int
	}{{profile.AN12113(), 10}, {profile.AN12113EV1(), 14}, {profile.AN12113OTA(), 10}} {
		f := newIssueFixture(t, c.p)
		card := newBlank(t)
		b := &batcher{Transport: cardLost{card}}
		res := f.env.IssueDESFire(context.Background(), b, card.UID(), f.plan)
		if !res.OK || res.Exchanges != c.want || b.batches != c.want {
			t.Errorf("%s: %d exchanges (%d batches), want %d; %+v", c.p.Name, res.Exchanges, b.batches, c.want, res)
		}
		t.Logf("%s: %d exchanges, %d APDUs", c.p.Name, res.Exchanges, card.APDUs())
	}
}

// TestIssueBridgeLiesAboutUID: keys are diversified from the UID the
// card proves (GetCardUID under the PICC session), not from the bridge's
// claim; a mismatch ends the session before anything is written.
func TestIssueBridgeLiesAboutUID(t *testing.T) {
	f := newIssueFixture(t, profile.AN12113())
	c := newBlank(t)
	res := f.env.IssueDESFire(context.Background(), cardLost{c}, []byte{4, 9, 9, 9, 9, 9, 9}, f.plan)
	if res.OK || res.Reason != transaction.ReasonCardMismatch || len(c.Applications()) != 0 {
		t.Fatalf("%+v, applications %X", res, c.Applications())
	}
}

// TestIssueMultipleAccessSets: with the AN12113 section 3.1 profile every
// file carries the terminal set and the server set; the server key
// reads and credits, the terminal keys read and debit, and a terminal key
// cannot credit.
func TestIssueMultipleAccessSets(t *testing.T) {
	p := profile.AN12113OTA()
	f := newIssueFixture(t, p)
	c := newBlank(t)
	ctx := context.Background()
	if res := f.env.IssueDESFire(ctx, cardLost{c}, c.UID(), f.plan); !res.OK {
		t.Fatalf("%+v", res)
	}
	key := func(no byte) []byte {
		k, err := f.env.Keys.CardKey(ctx, keys.Ref{AID: p.AID, KeyNo: no, Version: 1}, c.UID())
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	session := func(no byte) *desfire.Card {
		_ = c.Tap()
		card := desfire.NewCard(c)
		if err := card.SelectApplication(ctx, p.AIDBytes()); err != nil {
			t.Fatal(err)
		}
		if err := card.Authenticate(ctx, desfire.NewAuthEV2First(no, key(no), nil)); err != nil {
			t.Fatal(err)
		}
		return card
	}
	card := session(p.MasterKeyNo)
	fs, err := card.GetFileSettings(ctx, p.ValueFile)
	if err != nil {
		t.Fatal(err)
	}
	if fs.Access != desfire.NewAccessRights(1, 2, 0xF, 0) || len(fs.AdditionalAccess) != 1 || fs.AdditionalAccess[0] != desfire.NewAccessRights(3, 0xF, 3, 0) {
		t.Fatalf("value file access %04X + %04X", uint16(fs.Access), fs.AdditionalAccess)
	}
	// Server key 3: read and credit.
	card = session(3)
	if _, err := card.Exec(ctx, desfire.GetValueCmd(p.ValueFile, p.ValueMode)); err != nil {
		t.Fatalf("server GetValue: %v", err)
	}
	if _, err := card.Exec(ctx, desfire.CreditCmd(p.ValueFile, 10, p.ValueMode)); err != nil {
		t.Fatalf("server credit: %v", err)
	}
	// Terminal key 2: debit yes, credit no.
	card = session(2)
	if _, err := card.Exec(ctx, desfire.DebitCmd(p.ValueFile, 5, p.ValueMode)); err != nil {
		t.Fatalf("terminal debit: %v", err)
	}
	card = session(2)
	if _, err := card.Exec(ctx, desfire.CreditCmd(p.ValueFile, 5, p.ValueMode)); !errors.Is(err, desfire.ErrPermissionDenied) {
		t.Fatalf("terminal credit: %v", err)
	}
	// Terminal key 1 reads.
	card = session(1)
	if _, err := card.Exec(ctx, desfire.GetValueCmd(p.ValueFile, p.ValueMode)); err != nil {
		t.Fatalf("terminal GetValue: %v", err)
	}
}

// TestIssueEV1AmbiguousUID: on EV1 the enciphered GetCardUID answer of
// this UID also verifies one byte longer (its CRC starts with 00); the
// expected length keeps it unambiguous (found by the forged-status
// matrix).
func TestIssueEV1AmbiguousUID(t *testing.T) {
	f := newIssueFixture(t, profile.AN12113EV1())
	c := newBlankN(t, 0xD8)
	if res := f.env.IssueDESFire(context.Background(), cardLost{c}, c.UID(), f.plan); !res.OK {
		t.Fatalf("%+v", res)
	}
}
