package simtag

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/desfire/ntag424"
	"github.com/desfire-relay/relay/desfire/sdm"
)

// queue is a randomness source that first returns the bytes queued, then
// crypto/rand, so a test can replay the padding of a published trace.
type queue struct{ b []byte }

func (q *queue) Read(p []byte) (int, error) {
	if len(q.b) == 0 {
		return rand.Read(p)
	}
	n := copy(p, q.b)
	q.b = q.b[n:]
	return n, nil
}

type sdmVector struct {
	ID            string `json:"id"`
	UID           string `json:"uid"`
	ReadCtr       uint32 `json:"read_ctr"`
	EncPICC       string `json:"enc_picc_data"`
	PICCPlain     string `json:"picc_data_plain"`
	EncFile       string `json:"enc_file_data"`
	FileData      string `json:"file_data"`
	SDMMAC        string `json:"sdmmac"`
	ExpectValid   bool   `json:"expect_valid"`
	FileReadKey   string `json:"sdm_file_read_key"`
	MetaReadKey   string `json:"sdm_meta_read_key"`
	MACInputASCII string `json:"mac_input_ascii"`
}

func loadSDM(t *testing.T) []sdmVector {
	t.Helper()
	raw, err := readVector("sdm.json")
	if err != nil {
		t.Fatalf("vectors: %v", err)
	}
	var f struct{ Vectors []sdmVector }
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	return f.Vectors
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// host is a test host authenticated with key 0 over the tag.
func host(t *testing.T, tag desfire.Transport, k0 []byte) *desfire.Card {
	t.Helper()
	ctx := context.Background()
	if err := ntag424.SelectApp(ctx, tag); err != nil {
		t.Fatal(err)
	}
	c := desfire.NewCard(tag)
	if err := c.Authenticate(ctx, desfire.NewAuthEV2First(0, k0, nil)); err != nil {
		t.Fatal(err)
	}
	return c
}

// phoneRead reads the NDEF file as a phone does: select the application
// and the file, ISOReadBinary.
func phoneRead(t *testing.T, tag *Tag) string {
	t.Helper()
	ctx := context.Background()
	for _, apdu := range [][]byte{ntag424.SelectAppAPDU(), ntag424.SelectFileAPDU(ntag424.FIDNDEF)} {
		r, err := tag.Transmit(ctx, apdu)
		if err != nil || !bytes.Equal(r, []byte{0x90, 0}) {
			t.Fatalf("select: %X %v", r, err)
		}
	}
	r, err := tag.Transmit(ctx, ntag424.ReadBinaryAPDU(0, 0))
	if err != nil || len(r) < 2 || !bytes.Equal(r[len(r)-2:], []byte{0x90, 0}) {
		t.Fatalf("read binary: %X %v", r, err)
	}
	u, err := ntag424.URL(r[:len(r)-2])
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func personalise(t *testing.T, tag *Tag, tpl string) *ntag424.Layout {
	t.Helper()
	ctx := context.Background()
	l, err := ntag424.ParseTemplate(tpl)
	if err != nil {
		t.Fatal(err)
	}
	c := host(t, tag, make([]byte, 16))
	for off := 0; off < len(l.File); off += 32 {
		chunk := l.File[off:min(off+32, len(l.File))]
		if _, err := c.Exec(ctx, ntag424.WriteDataCmd(ntag424.FileNDEF, uint32(off), chunk, desfire.CommPlain)); err != nil {
			t.Fatal(err)
		}
	}
	cmd, err := ntag424.ChangeFileSettingsCmd(ntag424.FileNDEF, l.Settings)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, cmd); err != nil {
		t.Fatal(err)
	}
	return l
}

// TestSDMVectors reproduces the AN12196 SUN messages byte for byte: the
// tag is given the trace's UID, counter, keys, file data and PICCData
// padding, and mirrors exactly the published encrypted PICCData,
// encrypted file data and SDMMAC.
func TestSDMVectors(t *testing.T) {
	for _, v := range loadSDM(t) {
		if !v.ExpectValid || v.UID == "" || v.FileReadKey != strings.Repeat("0", 32) || v.MetaReadKey != strings.Repeat("0", 32) {
			continue
		}
		t.Run(v.ID, func(t *testing.T) {
			q := &queue{}
			tag, err := New(Options{UID: unhex(t, v.UID), Rand: q})
			if err != nil {
				t.Fatal(err)
			}
			tpl := "https://ntag.nxp.com/424?e={picc}&c={mac}"
			if v.EncFile != "" {
				tpl = "https://ntag.nxp.com/424?picc_data={picc}&enc={enc}&cmac={mac}"
			}
			l := personalise(t, tag, tpl)
			if v.FileData != "" {
				tag.SetFileData(ntag424.FileNDEF, int(*l.Settings.SDM.ENCOffset), unhex(t, v.FileData))
			}
			tag.SetReadCtr(v.ReadCtr - 1)
			if v.PICCPlain != "" {
				q.b = unhex(t, v.PICCPlain)[11:]
			}
			if err := tag.Tap(); err != nil {
				t.Fatal(err)
			}
			u := phoneRead(t, tag)
			s := l.Settings.SDM
			at := func(off *uint32, n int) string { return u[int(*off)-7+len("https://") : int(*off)-7+len("https://")+n] }
			if v.PICCPlain != "" {
				if got := at(s.PICCDataOffset, 32); got != v.EncPICC {
					t.Errorf("PICC data %s, want %s", got, v.EncPICC)
				}
			}
			if v.EncFile != "" {
				if got := at(s.ENCOffset, 32); got != v.EncFile {
					t.Errorf("enc file data %s, want %s", got, v.EncFile)
				}
			}
			if got := at(s.MACOffset, 16); got != v.SDMMAC {
				t.Errorf("SDMMAC %s, want %s (url %s)", got, v.SDMMAC, u)
			}
			// And the verifier of desfire/sdm accepts what the tag made.
			p, err := sdm.DecryptPICCData(make([]byte, 16), unhex(t, at(s.PICCDataOffset, 32)))
			if err != nil || p.ReadCtr != v.ReadCtr {
				t.Fatalf("PICC data: %+v %v", p, err)
			}
			in := at(s.MACInputOffset, int(*s.MACOffset-*s.MACInputOffset))
			if err := sdm.VerifyMAC(make([]byte, 16), p, []byte(in), unhex(t, at(s.MACOffset, 16))); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestCounterPerRead: every phone read after a selection increments the
// counter and changes the MAC.
func TestCounterPerRead(t *testing.T) {
	tag, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	personalise(t, tag, "https://example.com/t?u={uid}&c={ctr}&m={mac}")
	u1, u2 := phoneRead(t, tag), phoneRead(t, tag)
	if u1 == u2 || !strings.Contains(u1, "c=000001") || !strings.Contains(u2, "c=000002") {
		t.Fatalf("reads %s, %s", u1, u2)
	}
	if !strings.Contains(u1, "u="+strings.ToUpper(hex.EncodeToString(tag.UID()))) {
		t.Fatalf("UID not mirrored: %s", u1)
	}
}

// TestChangeKeyOldKeyRule: changing key 1 with a wrong old value answers
// 911E and leaves the key; changing key 0 ends the session.
func TestChangeKeyOldKeyRule(t *testing.T) {
	ctx := context.Background()
	tag, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	zero := make([]byte, 16)
	nk := bytes.Repeat([]byte{0x11}, 16)
	c := host(t, tag, zero)
	bad, err := ntag424.ChangeKeyCmd(1, nk, bytes.Repeat([]byte{0x22}, 16), 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, bad); !errors.Is(err, desfire.ErrIntegrity) {
		t.Fatalf("wrong old key: %v", err)
	}
	if k, v := tag.Key(1); !bytes.Equal(k, zero) || v != 0 {
		t.Fatal("key 1 changed")
	}
	c = host(t, tag, zero)
	good, _ := ntag424.ChangeKeyCmd(1, nk, zero, 1)
	if _, err := c.Exec(ctx, good); err != nil {
		t.Fatal(err)
	}
	d, err := c.Exec(ctx, ntag424.GetKeyVersionCmd(1, desfire.CommMAC))
	if err != nil || d[0] != 1 {
		t.Fatalf("key version %X %v", d, err)
	}
	k0, _ := ntag424.ChangeKeyCmd(0, nk, nil, 5)
	if _, err := c.Exec(ctx, k0); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, ntag424.GetKeyVersionCmd(1, desfire.CommMAC)); err == nil {
		t.Fatal("session survived ChangeKey 0")
	}
	c = host(t, tag, nk)
	if _, err := c.Exec(ctx, ntag424.GetKeyVersionCmd(0, desfire.CommMAC)); err != nil {
		t.Fatal(err)
	}
}

// TestTamperedAnswers: flipping any byte of a MACed answer is caught by
// the host.
func TestTamperedAnswers(t *testing.T) {
	ctx := context.Background()
	tag, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := host(t, tag, make([]byte, 16))
	good, err := c.Exec(ctx, ntag424.GetFileSettingsCmd(ntag424.FileNDEF, desfire.CommMAC))
	if err != nil || len(good) != 7 {
		t.Fatalf("settings %X %v", good, err)
	}
	for i := 0; i < 7+8; i++ {
		c := host(t, &flip{tag, i}, make([]byte, 16))
		if _, err := c.Exec(ctx, ntag424.GetFileSettingsCmd(ntag424.FileNDEF, desfire.CommMAC)); err == nil {
			t.Fatalf("flip %d accepted", i)
		}
	}
}

type flip struct {
	*Tag
	i int
}

func (f *flip) Transmit(ctx context.Context, a []byte) ([]byte, error) {
	r, err := f.Tag.Transmit(ctx, a)
	if err == nil && len(a) > 1 && a[1] == cmdGetFileSettings && f.i < len(r)-2 {
		r[f.i] ^= 0x01
	}
	return r, err
}

// TestTearKnobs: TearAt executes the command and loses the answer;
// RemoveAfter does not execute it.
func TestTearKnobs(t *testing.T) {
	ctx := context.Background()
	tag, err := New(Options{RandomID: true})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(tag.AnticollisionUID(), tag.UID()) || len(tag.AnticollisionUID()) != 4 {
		t.Fatal("random ID not random")
	}
	tag.RemoveAfter(0)
	if _, err := tag.Transmit(ctx, ntag424.SelectAppAPDU()); !errors.Is(err, ErrRemoved) {
		t.Fatal(err)
	}
	if err := tag.Tap(); err != nil {
		t.Fatal(err)
	}
	c := host(t, tag, make([]byte, 16))
	cmd, _ := ntag424.ChangeKeyCmd(2, bytes.Repeat([]byte{3}, 16), make([]byte, 16), 7)
	tag.TearAt(0)
	if _, err := c.Exec(ctx, cmd); !errors.Is(err, ErrRemoved) {
		t.Fatal(err)
	}
	if _, v := tag.Key(2); v != 7 {
		t.Fatal("torn ChangeKey did not run")
	}
}

// TestSetConfigurationRandomID: switching the random ID on takes effect
// at the next activation; GetCardUID still proves the real UID.
func TestSetConfigurationRandomID(t *testing.T) {
	ctx := context.Background()
	tag, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := host(t, tag, make([]byte, 16))
	if _, err := c.Exec(ctx, ntag424.SetConfigurationCmd(ntag424.ConfigPICC, []byte{0x04})); !errors.Is(err, desfire.ErrParameter) {
		t.Fatalf("unsupported bit: %v", err)
	}
	c = host(t, tag, make([]byte, 16))
	if _, err := c.Exec(ctx, ntag424.SetConfigurationCmd(ntag424.ConfigPICC, []byte{ntag424.PICCUseRandomID})); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(tag.AnticollisionUID(), tag.UID()) {
		t.Fatal("random ID before the next activation")
	}
	_ = tag.Tap()
	if !ntag424.IsRandomID(tag.AnticollisionUID()) {
		t.Fatalf("anticollision %X", tag.AnticollisionUID())
	}
	c = host(t, tag, make([]byte, 16))
	d, err := c.Exec(ctx, desfire.GetCardUIDCmd())
	if err != nil || !bytes.Equal(d, tag.UID()) {
		t.Fatalf("GetCardUID %X %v", d, err)
	}
}
