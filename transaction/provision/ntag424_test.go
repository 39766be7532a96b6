package provision_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/desfire/ntag424"
	"github.com/desfire-relay/relay/desfire/ntag424/simtag"
	"github.com/desfire-relay/relay/desfire/sdm"
	"github.com/desfire-relay/relay/transaction"
	"github.com/desfire-relay/relay/transaction/keys"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/lock"
	"github.com/desfire-relay/relay/transaction/profile"
	"github.com/desfire-relay/relay/transaction/provision"
)

const tpl = "https://sun.example.com/t?p={picc}&e={enc}&m={mac}"

type fixture struct {
	env  *provision.Env
	pl   ledger.ProvisionLedger
	plan *provision.Plan
}

func newFixture(t testing.TB, req provision.NTAG424Request) *fixture {
	t.Helper()
	env, kp := newEnv(t)
	if req.Template == "" {
		req.Template = tpl
	}
	if req.KeyVersion == 0 {
		req.KeyVersion = 1
	}
	plan, err := provision.PlanNTAG424(context.Background(), kp, req)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{env: env, pl: env.Ledger, plan: plan}
}

func newTag(t testing.TB) *simtag.Tag {
	t.Helper()
	tag, err := simtag.New(simtag.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return tag
}

func (f *fixture) key(t testing.TB, tag *simtag.Tag, n, v byte) []byte {
	t.Helper()
	if v == 0 {
		return make([]byte, 16)
	}
	k, err := f.env.Keys.CardKey(context.Background(), keys.Ref{Name: provision.NTAG424KeyName(n), Version: v}, tag.UID())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// known checks the invariant of the write-ahead rule: for every key, the
// value the tag holds is the one the ledger records or the pending one.
func (f *fixture) known(t testing.TB, tag *simtag.Tag) {
	t.Helper()
	rec, err := f.pl.GetProvision(context.Background(), strings.ToUpper(hex.EncodeToString(tag.UID())))
	if errors.Is(err, ledger.ErrNotFound) {
		for n := byte(0); n < ntag424.NumKeys; n++ {
			if k, _ := tag.Key(n); !bytes.Equal(k, make([]byte, 16)) {
				t.Fatalf("key %d changed without a ledger record", n)
			}
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, ks := range rec.Keys {
		have, ver := tag.Key(ks.KeyNo)
		ok := bytes.Equal(have, f.key(t, tag, ks.KeyNo, ks.Version)) && ver == ks.Version
		if ks.Pending != nil && bytes.Equal(have, f.key(t, tag, ks.KeyNo, *ks.Pending)) && ver == *ks.Pending {
			ok = true
		}
		if !ok {
			t.Fatalf("key %d: tag holds version %d, ledger has %d (pending %v)", ks.KeyNo, ver, ks.Version, ks.Pending)
		}
	}
}

func (f *fixture) run(tag desfire.Transport, uid []byte) provision.Result {
	return f.env.ProvisionNTAG424(context.Background(), lost{tag}, uid, f.plan)
}

// lost maps the simulated tag's removal to the bridge's tag_lost, as the
// server's transport does.
type lost struct{ desfire.Transport }

func (l lost) Transmit(ctx context.Context, a []byte) ([]byte, error) {
	r, err := l.Transport.Transmit(ctx, a)
	if errors.Is(err, simtag.ErrRemoved) {
		return nil, fmt.Errorf("%w: %w", desfire.ErrTagLost, err)
	}
	return r, err
}

func (l lost) TransmitBatch(ctx context.Context, cmds []desfire.BatchCommand) ([][]byte, error) {
	if b, ok := l.Transport.(desfire.Batcher); ok {
		rs, err := b.TransmitBatch(ctx, cmds)
		if errors.Is(err, simtag.ErrRemoved) {
			err = fmt.Errorf("%w: %w", desfire.ErrTagLost, err)
		}
		return rs, err
	}
	return desfire.SequentialBatch(ctx, l, cmds)
}

// checkTapped reads the tag as a phone does and verifies the SUN message
// with the per-tag SDM keys (meta read key 2, file read key 1).
func (f *fixture) checkTapped(t testing.TB, tag *simtag.Tag) string {
	t.Helper()
	if err := tag.Tap(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, a := range [][]byte{ntag424.SelectAppAPDU(), ntag424.SelectFileAPDU(ntag424.FIDNDEF)} {
		if r, err := tag.Transmit(ctx, a); err != nil || !bytes.Equal(r, []byte{0x90, 0}) {
			t.Fatalf("select: %X %v", r, err)
		}
	}
	r, err := tag.Transmit(ctx, ntag424.ReadBinaryAPDU(0, 0))
	if err != nil || len(r) < 2 {
		t.Fatalf("read: %v", err)
	}
	file := r[:len(r)-2]
	u, err := ntag424.URL(file)
	if err != nil {
		t.Fatal(err)
	}
	s := f.plan.Layout.Settings.SDM
	field := func(off *uint32, n int) []byte {
		b, err := hex.DecodeString(string(file[*off : int(*off)+n]))
		if err != nil {
			t.Fatalf("field at %d of %s: %v", *off, u, err)
		}
		return b
	}
	p, err := sdm.DecryptPICCData(f.key(t, tag, ntag424.KeyMetaRead, f.plan.Req.KeyVersion), field(s.PICCDataOffset, 32))
	if err != nil || !bytes.Equal(p.UID, tag.UID()) {
		t.Fatalf("PICC data of %s: %+v %v", u, p, err)
	}
	in := file[*s.MACInputOffset:*s.MACOffset]
	if err := sdm.VerifyMAC(f.key(t, tag, ntag424.KeyFileRead, f.plan.Req.KeyVersion), p, in, field(s.MACOffset, 16)); err != nil {
		t.Fatalf("SDMMAC of %s: %v", u, err)
	}
	return u
}

func TestProvisionFactoryTag(t *testing.T) {
	f := newFixture(t, provision.NTAG424Request{Lock: true})
	tag := newTag(t)
	res := f.run(tag, tag.UID())
	if !res.OK || res.Step != ledger.StepDone || len(res.KeysChanged) != 5 || res.Resumed {
		t.Fatalf("result %+v", res)
	}
	t.Logf("exchanges: %d (one APDU each over a plain transport: %d APDUs)", res.Exchanges, tag.APDUs())
	f.known(t, tag)
	for n := byte(0); n < ntag424.NumKeys; n++ {
		if k, v := tag.Key(n); v != 1 || !bytes.Equal(k, f.key(t, tag, n, 1)) {
			t.Fatalf("key %d not the per-tag key", n)
		}
	}
	u1, u2 := f.checkTapped(t, tag), f.checkTapped(t, tag)
	if u1 == u2 {
		t.Fatal("two reads gave the same URL")
	}
	if cc := tag.FileData(ntag424.FileCC); cc[ntag424.CCWriteAccessOffset] != 0xFF {
		t.Fatal("CC not read-only")
	}
	if fs, _ := tag.Settings(ntag424.FileNDEF); fs.Access.Write() != desfire.AccessNever || fs.Access.Read() != desfire.AccessFree {
		t.Fatalf("NDEF access %04X", uint16(fs.Access))
	}
	// A second run is refused without touching the tag.
	n := tag.APDUs()
	if res := f.run(tag, tag.UID()); res.OK || res.Reason != provision.ReasonProvisioned || tag.APDUs() != n {
		t.Fatalf("second run %+v", res)
	}
}

// TestExchangeCounts publishes the exchange counts: over a batching
// bridge, a factory tag takes 6 exchanges (the ISO select rides with the first authentication command).
func TestExchangeCounts(t *testing.T) {
	for _, lockIt := range []bool{false, true} {
		f := newFixture(t, provision.NTAG424Request{Lock: lockIt})
		tag := newTag(t)
		b := &batcher{Transport: tag}
		res := f.run(b, tag.UID())
		if !res.OK || res.Exchanges != 6 || b.batches != 6 {
			t.Fatalf("lock=%v: %+v, %d batches", lockIt, res, b.batches)
		}
	}
}

type batcher struct {
	desfire.Transport
	batches int
}

func (b *batcher) Transmit(ctx context.Context, a []byte) ([]byte, error) {
	b.batches++
	return b.Transport.Transmit(ctx, a)
}

func (b *batcher) TransmitBatch(ctx context.Context, cmds []desfire.BatchCommand) ([][]byte, error) {
	b.batches++
	return desfire.SequentialBatch(ctx, b.Transport, cmds)
}

// TestTearAtEveryAPDU tears the session at every APDU, both before the
// tag executes it and after (answer lost), then retries: at every point
// the ledger knows the keys the tag holds, and the retry completes.
func TestTearAtEveryAPDU(t *testing.T) {
	probe := newFixture(t, provision.NTAG424Request{Lock: true})
	clean := newTag(t)
	if res := probe.run(clean, clean.UID()); !res.OK {
		t.Fatal(res)
	}
	total := clean.APDUs()
	f := newFixture(t, provision.NTAG424Request{Lock: true}) // one ledger; each tag has a random UID
	for _, executed := range []bool{false, true} {
		for n := 0; n < total; n++ {
			t.Run(fmt.Sprintf("executed=%v/apdu=%d", executed, n), func(t *testing.T) {
				tag := newTag(t)
				if executed {
					tag.TearAt(n)
				} else {
					tag.RemoveAfter(n)
				}
				res := f.run(tag, tag.UID())
				if res.OK || res.Reason != transaction.ReasonTagLost {
					t.Fatalf("torn run: %+v", res)
				}
				f.known(t, tag)
				if err := tag.Tap(); err != nil {
					t.Fatal(err)
				}
				res = f.run(tag, tag.UID())
				if !res.OK {
					t.Fatalf("retry: %+v", res)
				}
				f.known(t, tag)
				f.checkTapped(t, tag)
			})
		}
	}
}

func TestWrongKey0(t *testing.T) {
	f := newFixture(t, provision.NTAG424Request{})
	tag := newTag(t)
	// Someone else owns this tag: key 0 is not the factory key.
	c := authed(t, tag, make([]byte, 16))
	cmd, _ := ntag424.ChangeKeyCmd(0, bytes.Repeat([]byte{9}, 16), nil, 3)
	if _, err := c.Exec(context.Background(), cmd); err != nil {
		t.Fatal(err)
	}
	_ = tag.Tap()
	changes := tag.Changes()
	res := f.run(tag, tag.UID())
	if res.OK || res.Reason != transaction.ReasonCardError || !strings.Contains(res.Message, "91AE") || tag.Changes() != changes {
		t.Fatalf("%+v", res)
	}
}

func authed(t *testing.T, tag *simtag.Tag, k0 []byte) *desfire.Card {
	t.Helper()
	if err := ntag424.SelectApp(context.Background(), tag); err != nil {
		t.Fatal(err)
	}
	c := desfire.NewCard(tag)
	if err := c.Authenticate(context.Background(), desfire.NewAuthEV2First(0, k0, nil)); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestLockedOrUsedTagRefused(t *testing.T) {
	for name, prep := range map[string]func(c *desfire.Card) error{
		"locked": func(c *desfire.Card) error {
			cmd, err := ntag424.ChangeFileSettingsCmd(ntag424.FileNDEF, ntag424.FileSettings{Access: desfire.NewAccessRights(desfire.AccessFree, desfire.AccessNever, desfire.AccessNever, 0)})
			if err != nil {
				return err
			}
			_, err = c.Exec(context.Background(), cmd)
			return err
		},
		"foreign key 2": func(c *desfire.Card) error {
			cmd, err := ntag424.ChangeKeyCmd(2, bytes.Repeat([]byte{7}, 16), make([]byte, 16), 4)
			if err != nil {
				return err
			}
			_, err = c.Exec(context.Background(), cmd)
			return err
		},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, provision.NTAG424Request{})
			tag := newTag(t)
			if err := prep(authed(t, tag, make([]byte, 16))); err != nil {
				t.Fatal(err)
			}
			_ = tag.Tap()
			changes := tag.Changes()
			res := f.run(tag, tag.UID())
			want := provision.ReasonLocked
			if name != "locked" {
				want = provision.ReasonNotBlank
			}
			if res.OK || res.Reason != want || tag.Changes() != changes {
				t.Fatalf("%+v (changes %d → %d)", res, changes, tag.Changes())
			}
		})
	}
}

func TestBridgeLiesAboutUID(t *testing.T) {
	f := newFixture(t, provision.NTAG424Request{})
	tag := newTag(t)
	res := f.run(tag, []byte{4, 9, 9, 9, 9, 9, 9})
	if res.OK || res.Reason != transaction.ReasonCardMismatch || tag.Changes() != 0 {
		t.Fatalf("%+v", res)
	}
}

func TestBadInput(t *testing.T) {
	f := newFixture(t, provision.NTAG424Request{})
	long := "https://example.com/" + strings.Repeat("x", 250) + "{picc}{mac}"
	for name, req := range map[string]provision.NTAG424Request{
		"no MAC":            {Template: "https://example.com/?p={picc}", KeyVersion: 1},
		"too long":          {Template: long, KeyVersion: 1},
		"unknown version":   {Template: tpl, KeyVersion: 9},
		"picc and uid both": {Template: "https://e.com/{picc}{uid}{mac}", KeyVersion: 1},
	} {
		if _, err := provision.PlanNTAG424(context.Background(), f.env.Keys, req); !errors.Is(err, provision.ErrInvalid) || provision.ReasonOf(err) != provision.ReasonInvalid {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestDiversifiedMetaReadKeyRefused: a key file whose meta-read key
// (ntag424.k2) is diversified per tag cannot serve a {picc} template (no
// verifier could decrypt PICCData before knowing the UID): refused before
// any card is touched; plain mirrors ({uid}{ctr}) do not use it and pass.
func TestDiversifiedMetaReadKeyRefused(t *testing.T) {
	f, err := keys.DevFile(nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range f.Keys {
		if f.Keys[i].Name == keys.NTAG424KeyName(ntag424.KeyMetaRead) {
			if f.Keys[i].Diversify {
				t.Fatal("dev file diversifies the meta-read key")
			}
			f.Keys[i].Diversify = true
		}
	}
	kp, err := keys.New(f)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_, err = provision.PlanNTAG424(ctx, kp, provision.NTAG424Request{Template: tpl, KeyVersion: 1})
	if !errors.Is(err, provision.ErrInvalid) || !strings.Contains(err.Error(), "diversified") {
		t.Fatalf("{picc} with a diversified meta-read key: %v", err)
	}
	if _, err := provision.PlanNTAG424(ctx, kp, provision.NTAG424Request{Template: "https://e.com/?u={uid}&c={ctr}&m={mac}", KeyVersion: 1}); err != nil {
		t.Fatalf("plain mirrors: %v", err)
	}
}

// gate blocks the first APDU until released, so a second session can try
// the same tag while the first holds it.
type gate struct {
	desfire.Transport
	once    sync.Once
	started chan struct{}
	release chan struct{}
}

func (g *gate) Transmit(ctx context.Context, a []byte) ([]byte, error) {
	g.once.Do(func() { close(g.started); <-g.release })
	return g.Transport.Transmit(ctx, a)
}

func TestConcurrentSessionsOneTag(t *testing.T) {
	f := newFixture(t, provision.NTAG424Request{})
	tag := newTag(t)
	g := &gate{Transport: tag, started: make(chan struct{}), release: make(chan struct{})}
	done := make(chan provision.Result)
	go func() { done <- f.run(g, tag.UID()) }()
	<-g.started
	second := f.run(tag, tag.UID())
	close(g.release)
	first := <-done
	if !first.OK || second.OK || second.Reason != transaction.ReasonCardBusy {
		t.Fatalf("first %+v, second %+v", first, second)
	}
}

// forger is a hostile bridge: it answers 9100 to ChangeKey of key 0
// without passing it to the tag, and can answer 91AE to authentication.
type forger struct {
	desfire.Transport
	changeKey0 bool
	authFail   bool
}

func (h *forger) Transmit(ctx context.Context, a []byte) ([]byte, error) {
	if h.changeKey0 && len(a) > 5 && a[0] == 0x90 && a[1] == desfire.CmdChangeKey && a[5] == 0 {
		return []byte{0x91, 0x00}, nil
	}
	if h.authFail && len(a) > 1 && a[0] == 0x90 && a[1] == desfire.CmdAdditionalFrame {
		return []byte{0x91, 0xAE}, nil
	}
	return h.Transport.Transmit(ctx, a)
}

// TestForgedStatusWords: a forged 9100 for ChangeKey 0 is not believed
// (the new key must authenticate), and a forged 91AE changes nothing in
// the ledger.
func TestForgedStatusWords(t *testing.T) {
	f := newFixture(t, provision.NTAG424Request{})
	tag := newTag(t)
	res := f.run(&forger{Transport: tag, changeKey0: true}, tag.UID())
	if res.OK || res.Step == ledger.StepDone {
		t.Fatalf("forged ChangeKey 0 believed: %+v", res)
	}
	f.known(t, tag)
	rec, _ := f.pl.GetProvision(context.Background(), res.CardUID)
	if rec.Keys[0].Version != 0 || rec.Keys[0].Pending == nil {
		t.Fatalf("key 0 record %+v", rec.Keys[0])
	}
	_ = tag.Tap()
	res = f.run(&forger{Transport: tag, authFail: true}, tag.UID())
	if res.OK || res.Reason != transaction.ReasonIntegrity {
		t.Fatalf("forged 91AE: %+v", res)
	}
	after, _ := f.pl.GetProvision(context.Background(), res.CardUID)
	if after.Keys[0].Version != 0 || after.Keys[0].Pending == nil || after.Step != rec.Step {
		t.Fatalf("ledger moved on a forged status: %+v", after)
	}
	_ = tag.Tap()
	if res = f.run(tag, tag.UID()); !res.OK {
		t.Fatalf("honest retry: %+v", res)
	}
	f.known(t, tag)
}

// TestRandomID: random ID is switched on last; a tear on that very
// command leaves the tag showing random IDs with the ledger at step
// files; a retry must name the UID (the keys derive from it) and then
// completes, GetCardUID proving the UID.
func TestRandomID(t *testing.T) {
	f := newFixture(t, provision.NTAG424Request{RandomID: true})
	tag := newTag(t)
	probe := newTag(t)
	if res := f.run(probe, probe.UID()); !res.OK || res.Created[len(res.Created)-1] != "random_id" {
		t.Fatalf("%+v", res)
	}
	total := probe.APDUs()
	_ = probe.Tap()
	if !ntag424.IsRandomID(probe.AnticollisionUID()) {
		t.Fatal("random ID not on")
	}
	f.checkTapped(t, probe)

	tag.TearAt(total - 1) // the SetConfiguration
	if res := f.run(tag, tag.UID()); res.OK || res.Reason != transaction.ReasonTagLost || res.Step != ledger.StepFiles {
		t.Fatalf("torn: %+v", res)
	}
	f.known(t, tag)
	_ = tag.Tap()
	rid := tag.AnticollisionUID()
	changes := tag.Changes()
	if res := f.run(tag, rid); res.OK || res.Reason != provision.ReasonInvalid || tag.Changes() != changes {
		t.Fatalf("random ID without a UID: %+v", res)
	}
	named, err := provision.PlanNTAG424(context.Background(), f.env.Keys, provision.NTAG424Request{Template: tpl, KeyVersion: 1, RandomID: true, UID: hex.EncodeToString(tag.UID())})
	if err != nil {
		t.Fatal(err)
	}
	wrong, _ := provision.PlanNTAG424(context.Background(), f.env.Keys, provision.NTAG424Request{Template: tpl, KeyVersion: 1, UID: "04AAAAAAAAAAAA"})
	if res := f.env.ProvisionNTAG424(context.Background(), lost{tag}, rid, wrong); res.OK || res.Reason != transaction.ReasonCardError || tag.Changes() != changes {
		t.Fatalf("wrong UID named: %+v", res)
	}
	_ = tag.Tap()
	res := f.env.ProvisionNTAG424(context.Background(), lost{tag}, tag.AnticollisionUID(), named)
	if !res.OK || res.Step != ledger.StepDone || !res.Resumed {
		t.Fatalf("resume: %+v", res)
	}
	f.known(t, tag)
}

// TestCurrentKeyVersion: without a version the plans pick the highest one
// the key provider holds of every key they write.
func TestCurrentKeyVersion(t *testing.T) {
	f, err := keys.DevFile(nil, profile.AN12113().AID)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range append([]keys.Entry(nil), f.Keys...) {
		if e.Version == 1 {
			e.Version = 2
			f.Keys = append(f.Keys, e)
		}
	}
	// Version 3 of one NTAG key only: not current for the set.
	f.Keys = append(f.Keys, keys.Entry{AID: "000000", Name: keys.NTAG424KeyName(2), Version: 3, Key: strings.Repeat("11", 16), Diversify: true})
	kp, err := keys.New(f)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := provision.PlanNTAG424(context.Background(), kp, provision.NTAG424Request{Template: tpl})
	if err != nil || plan.Req.KeyVersion != 2 {
		t.Fatalf("ntag424 plan %+v %v", plan, err)
	}
	p := profile.AN12113()
	ip, err := provision.PlanIssue(context.Background(), kp, profile.Set{p.Name: p}, provision.IssueRequest{Profile: p.Name})
	if err != nil || ip.Req.KeyVersion != 2 {
		t.Fatalf("issue plan %+v %v", ip, err)
	}
	empty, _ := keys.New(keys.File{})
	if _, err := provision.PlanNTAG424(context.Background(), empty, provision.NTAG424Request{Template: tpl}); !errors.Is(err, provision.ErrInvalid) {
		t.Fatalf("no keys: %v", err)
	}
}

// TestOffsetsOverride: a request may move the MAC input to the start of
// the mirrored UID; the tag then MACs "UID&c=CTR&m=" and the verifier
// accepts it.
func TestOffsetsOverride(t *testing.T) {
	l, err := ntag424.ParseTemplate("https://e.com/t?u={uid}&c={ctr}&m={mac}")
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, provision.NTAG424Request{Template: "https://e.com/t?u={uid}&c={ctr}&m={mac}", Offsets: &ntag424.Offsets{MACInput: l.Settings.SDM.UIDOffset}})
	tag := newTag(t)
	if res := f.run(tag, tag.UID()); !res.OK {
		t.Fatalf("%+v", res)
	}
	_ = tag.Tap()
	ctx := context.Background()
	for _, a := range [][]byte{ntag424.SelectAppAPDU(), ntag424.SelectFileAPDU(ntag424.FIDNDEF)} {
		if _, err := tag.Transmit(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	r, err := tag.Transmit(ctx, ntag424.ReadBinaryAPDU(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	file := r[:len(r)-2]
	s := f.plan.Layout.Settings.SDM
	in := file[*s.MACInputOffset:*s.MACOffset]
	mac, _ := hex.DecodeString(string(file[*s.MACOffset : *s.MACOffset+16]))
	ctr, err := sdm.ParseReadCtr(string(file[*s.ReadCtrOffset : *s.ReadCtrOffset+6]))
	if err != nil || ctr != 1 || !strings.HasPrefix(string(in), strings.ToUpper(hex.EncodeToString(tag.UID()))+"&c=") {
		t.Fatalf("input %q ctr %d %v", in, ctr, err)
	}
	p := &sdm.PICCData{UID: tag.UID(), ReadCtr: ctr, HasReadCtr: true}
	if err := sdm.VerifyMAC(f.key(t, tag, ntag424.KeyFileRead, 1), p, in, mac); err != nil {
		t.Fatal(err)
	}
}

func TestCodes(t *testing.T) {
	for err, want := range map[error]transaction.Reason{
		provision.ErrInvalid:            provision.ReasonInvalid,
		ledger.ErrInvalid:               provision.ReasonInvalid,
		provision.ErrAlreadyProvisioned: provision.ReasonProvisioned,
		provision.ErrLocked:             provision.ReasonLocked,
		provision.ErrNotBlank:           provision.ReasonNotBlank,
		fmt.Errorf("x: %w", &desfire.StatusError{SW: 0x91AE}):                         transaction.ReasonCardError,
		fmt.Errorf("%w: %w", provision.ErrNotBlank, &desfire.StatusError{SW: 0x91AE}): transaction.ReasonCardError,
		provision.ErrKeyState:  transaction.ReasonIntegrity,
		ledger.ErrKeyState:     transaction.ReasonIntegrity,
		ledger.ErrCardMismatch: transaction.ReasonCardMismatch,
		ledger.ErrStaleFence:   transaction.ReasonCardBusy,
		lock.ErrLocked:         transaction.ReasonCardBusy,
		desfire.ErrTagLost:     transaction.ReasonTagLost,
	} {
		if got := provision.ReasonOf(err); got != want {
			t.Errorf("%v: %s, want %s", err, got, want)
		}
	}
	if provision.ReasonOf(nil) != "" {
		t.Error("nil error has a code")
	}
}

// TestTagTamper: tag_tamper switches detection on a TagTamper tag (its
// status then rides in the encrypted file data, checked in the server's
// end-to-end test); on a plain NTAG 424 DNA it is refused with the tag's
// status (card_error) before any key or file is written; a template
// without {enc} is refused up front.
func TestTagTamper(t *testing.T) {
	ctx := context.Background()
	if _, err := provision.PlanNTAG424(ctx, nil, provision.NTAG424Request{Template: "https://e.com/?p={picc}&m={mac}", KeyVersion: 1, TagTamper: true}); !errors.Is(err, provision.ErrInvalid) {
		t.Fatalf("tag_tamper without {enc}: %v", err)
	}
	f := newFixture(t, provision.NTAG424Request{TagTamper: true})
	plain := newTag(t)
	changes := plain.Changes()
	res := f.run(plain, plain.UID())
	if res.OK || res.Reason != transaction.ReasonCardError || !strings.Contains(res.Message, "TagTamper") || plain.Changes() != changes {
		t.Fatalf("plain tag: %+v (changes %d → %d)", res, changes, plain.Changes())
	}
	if _, v := plain.Key(0); v != 0 {
		t.Fatalf("plain tag key 0 at version %d", v)
	}
	tt, err := simtag.New(simtag.Options{TagTamper: true})
	if err != nil {
		t.Fatal(err)
	}
	res = f.run(tt, tt.UID())
	if !res.OK || !tt.TagTamperEnabled() || !slices.Contains(res.Created, "tag_tamper") {
		t.Fatalf("TagTamper tag: %+v enabled=%v", res, tt.TagTamperEnabled())
	}
}
