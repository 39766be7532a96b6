package ntag424

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/desfire-relay/relay/desfire"
)

func TestTemplateOffsets(t *testing.T) {
	l, err := ParseTemplate("https://ntag.nxp.com/424?e={picc}&c={mac}")
	if err != nil {
		t.Fatal(err)
	}
	s := l.Settings.SDM
	// "ntag.nxp.com/424?e=" is 19 characters after the 7-byte header.
	if *s.PICCDataOffset != 26 || *s.MACOffset != 26+32+3 || *s.MACInputOffset != *s.MACOffset {
		t.Fatalf("offsets %d %d %d", *s.PICCDataOffset, *s.MACOffset, *s.MACInputOffset)
	}
	if s.MetaRead != KeyMetaRead || s.FileRead != KeyFileRead || s.Options != SDMUIDMirror|SDMCtrMirror|SDMASCII {
		t.Fatalf("settings %+v", s)
	}
	u, err := URL(l.File)
	if err != nil || u != "https://ntag.nxp.com/424?e="+strings.Repeat("0", 32)+"&c="+strings.Repeat("0", 16) {
		t.Fatalf("URL %q %v", u, err)
	}
	enc, err := l.Settings.Encode()
	if err != nil {
		t.Fatal(err)
	}
	// FileOption 40 (SDM, plain), AccessRights 00 E0, SDMOptions C1,
	// SDMAccessRights F1 21, PICCDataOffset, MACInputOffset, MACOffset:
	// the AN12196 section 4.4 layout.
	want := []byte{0x40, 0x00, 0xE0, 0xC1, 0xF1, 0x21, 26, 0, 0, 61, 0, 0, 61, 0, 0}
	if !bytes.Equal(enc, want) {
		t.Fatalf("encoded %X, want %X", enc, want)
	}
	back, err := ParseChangeFileSettings(enc)
	if err != nil || *back.SDM.PICCDataOffset != 26 || back.Access != l.Settings.Access {
		t.Fatalf("round trip %+v %v", back, err)
	}
}

func TestTemplateBadInput(t *testing.T) {
	long := "https://example.com/" + strings.Repeat("a", 240) + "{uid}{mac}"
	for name, tpl := range map[string]string{
		"no MAC":           "https://example.com/?u={uid}",
		"no scheme":        "ftp://example.com/{uid}{mac}",
		"unknown":          "https://example.com/{uid}{foo}{mac}",
		"twice":            "https://example.com/{uid}{uid}{mac}",
		"picc with uid":    "https://example.com/{picc}{uid}{mac}",
		"nothing mirrored": "https://example.com/{mac}",
		"enc without picc": "https://example.com/{uid}{enc}{mac}",
		"enc after mac":    "https://example.com/{picc}{mac}{enc}",
		"too long":         long,
		"unclosed":         "https://example.com/{uid{mac}",
		"stray":            "https://example.com/}{uid}{mac}",
		"space":            "https://example.com/ {uid}{mac}",
		"non-ASCII":        "https://exämple.com/{uid}{mac}",
	} {
		if _, err := ParseTemplate(tpl); !errors.Is(err, ErrTemplate) && !errors.Is(err, ErrSettings) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func u32(v uint32) *uint32 { return &v }

func TestValidateOffsets(t *testing.T) {
	base := func() FileSettings {
		return FileSettings{Access: desfire.NewAccessRights(desfire.AccessFree, 0, 0, 0), SDM: &desfire.SDMSettings{
			Options: SDMUIDMirror | SDMCtrMirror | SDMASCII, MetaRead: desfire.AccessFree, FileRead: 1, CtrRet: 1,
			UIDOffset: u32(10), ReadCtrOffset: u32(30), MACInputOffset: u32(40), MACOffset: u32(40)}}
	}
	if err := base().Validate(NDEFSize); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*FileSettings){
		"overlap UID and counter": func(f *FileSettings) { f.SDM.ReadCtrOffset = u32(20) },
		"overlap MAC":             func(f *FileSettings) { f.SDM.MACOffset, f.SDM.MACInputOffset = u32(33), u32(33) },
		"MAC out of range":        func(f *FileSettings) { f.SDM.MACOffset = u32(250) },
		"offset above 24 bits":    func(f *FileSettings) { f.SDM.MACOffset = u32(1 << 24) },
		"input after MAC":         func(f *FileSettings) { f.SDM.MACInputOffset = u32(60) },
		"missing offset":          func(f *FileSettings) { f.SDM.UIDOffset = nil },
		"binary encoding":         func(f *FileSettings) { f.SDM.Options &^= SDMASCII },
		"bad key":                 func(f *FileSettings) { f.SDM.FileRead = 7 },
		"file read free":          func(f *FileSettings) { f.SDM.FileRead = desfire.AccessFree },
		"bad access":              func(f *FileSettings) { f.Access = desfire.NewAccessRights(9, 0, 0, 0) },
	} {
		f := base()
		mod(&f)
		if err := f.Validate(NDEFSize); !errors.Is(err, ErrSettings) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func FuzzParseTemplate(f *testing.F) {
	f.Add("https://ntag.nxp.com/424?e={picc}&c={mac}")
	f.Add("https://x/{picc}{enc}{mac}")
	f.Add("http://x/{uid}{ctr}{mac}")
	f.Fuzz(func(t *testing.T, tpl string) {
		l, err := ParseTemplate(tpl)
		if err != nil {
			return
		}
		if len(l.File) > NDEFSize {
			t.Fatalf("file of %d bytes", len(l.File))
		}
		enc, err := l.Settings.Encode()
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParseChangeFileSettings(enc)
		if err != nil {
			t.Fatal(err)
		}
		if err := back.Validate(len(l.File)); err != nil {
			t.Fatal(err)
		}
		if _, err := URL(l.File); err != nil {
			t.Fatal(err)
		}
	})
}

func FuzzParseChangeFileSettings(f *testing.F) {
	f.Add([]byte{0x40, 0x00, 0xE0, 0xC1, 0xF1, 0x21, 26, 0, 0, 61, 0, 0, 61, 0, 0})
	f.Add([]byte{0x00, 0xE0, 0xEE})
	f.Fuzz(func(t *testing.T, d []byte) {
		fs, err := ParseChangeFileSettings(d)
		if err != nil {
			return
		}
		if fs.Validate(NDEFSize) != nil {
			return
		}
		enc, err := fs.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseChangeFileSettings(enc); err != nil {
			t.Fatal(err)
		}
	})
}

func FuzzURL(f *testing.F) {
	f.Add([]byte{0, 5, 0xD1, 1, 1, 'U', 4})
	f.Fuzz(func(t *testing.T, d []byte) { _, _ = URL(d) })
}

func TestOverrideOffsets(t *testing.T) {
	fresh := func() *Layout {
		l, err := ParseTemplate("https://e.com/x?p={picc}&e={enc}&m={mac}")
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	l := fresh()
	picc := *l.Settings.SDM.PICCDataOffset
	for name, o := range map[string]Offsets{
		"overlap":       {MAC: u32(picc + 4)},
		"out of range":  {MAC: u32(250)},
		"no such":       {UID: u32(10)},
		"input after":   {MACInput: u32(*l.Settings.SDM.MACOffset + 1)},
		"enc too short": {ENCLength: u32(16)},
	} {
		l := fresh()
		before := *l.Settings.SDM
		if err := l.Override(o); !errors.Is(err, ErrSettings) {
			t.Errorf("%s: %v", name, err)
		}
		if *l.Settings.SDM.MACOffset != *before.MACOffset {
			t.Errorf("%s: layout changed on error", name)
		}
	}
	// Moving the MAC input to the start of the PICC data is allowed: the
	// MAC then covers the encrypted PICC data too.
	if err := l.Override(Offsets{MACInput: u32(picc)}); err != nil || *l.Settings.SDM.MACInputOffset != picc {
		t.Fatalf("override: %v", err)
	}
}

func FuzzOverride(f *testing.F) {
	f.Add(uint32(26), uint32(61), uint32(61), uint32(60), uint32(32), true)
	f.Fuzz(func(t *testing.T, picc, mac, in, enc, encLen uint32, withEnc bool) {
		tpl := "https://e.com/x?p={picc}&m={mac}"
		if withEnc {
			tpl = "https://e.com/x?p={picc}&e={enc}&m={mac}"
		}
		l, err := ParseTemplate(tpl)
		if err != nil {
			t.Fatal(err)
		}
		o := Offsets{PICC: &picc, MAC: &mac, MACInput: &in}
		if withEnc {
			o.ENC, o.ENCLength = &enc, &encLen
		}
		if err := l.Override(o); err != nil {
			return
		}
		if _, err := l.Settings.Encode(); err != nil {
			t.Fatalf("validated settings do not encode: %v", err)
		}
	})
}
