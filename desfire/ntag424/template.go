package ntag424

import (
	"errors"
	"fmt"
	"strings"

	"github.com/desfire-relay/relay/desfire"
)

// Placeholders of a SUN URL template. The server computes their offsets
// inside the NDEF file; the tag fills them on every read.
const (
	PlaceholderUID  = "{uid}"  // UID, 14 hex digits, mirrored in plain
	PlaceholderCtr  = "{ctr}"  // SDMReadCtr, 6 hex digits, mirrored in plain
	PlaceholderPICC = "{picc}" // encrypted PICCData (UID and counter), 32 hex digits
	PlaceholderEnc  = "{enc}"  // encrypted file data, 32 hex digits
	PlaceholderMAC  = "{mac}"  // SDMMAC, 16 hex digits (required)
)

// Key roles of the SDM settings a template produces (the AN12196
// example: SDMMetaRead key 2, SDMFileRead and SDMCtrRet key 1).
const (
	KeyMetaRead byte = 2
	KeyFileRead byte = 1
	KeyCtrRet   byte = 1
)

// ErrTemplate is returned for a URL template that cannot become an SDM
// NDEF message.
var ErrTemplate = errors.New("ntag424: invalid URL template")

// URI identifier codes of the NFC Forum URI record type definition.
var uriPrefixes = []struct {
	code   byte
	prefix string
}{{0x04, "https://"}, {0x03, "http://"}}

// ndefHeaderLen is NLEN(2) ‖ D1 01 PayloadLen 55 ‖ URI identifier code:
// the file offset of the first character after the URI prefix.
const ndefHeaderLen = 7

// Layout is an NDEF file and the SDM settings computed from a template.
type Layout struct {
	// File is the NDEF file content: NLEN(2, BE) ‖ one short URI record,
	// with every placeholder replaced by as many '0' characters as the tag
	// will mirror there.
	File []byte
	// Settings are the NDEF file's settings with SDM on: plain comm mode,
	// read free (any phone reads the URL), write and change key 0.
	Settings FileSettings
}

// ParseTemplate turns a URL template into the NDEF file and SDM settings:
// https:// or http:// URL, printable ASCII, {mac} exactly once, each
// placeholder at most once, {picc} not together with {uid} or {ctr}, at
// least one of them, {enc} only with {picc} and before {mac}, and the
// whole message within the NDEF file. The MAC covers the encrypted data
// and what follows it up to the MAC when {enc} is present, otherwise
// nothing (SDMMACInputOffset = SDMMACOffset, as in AN12196 section 4.4).
func ParseTemplate(tpl string) (*Layout, error) {
	var code byte
	rest := ""
	for _, p := range uriPrefixes {
		if strings.HasPrefix(tpl, p.prefix) {
			code, rest = p.code, tpl[len(p.prefix):]
			break
		}
	}
	if code == 0 {
		return nil, fmt.Errorf("template must start with https:// or http://: %w", ErrTemplate)
	}
	for i := 0; i < len(rest); i++ {
		if rest[i] < 0x21 || rest[i] > 0x7E {
			return nil, fmt.Errorf("template byte %d (%#x) is not printable ASCII: %w", i, rest[i], ErrTemplate)
		}
	}
	lens := map[string]int{PlaceholderUID: UIDMirrorLen, PlaceholderCtr: CtrMirrorLen, PlaceholderPICC: PICCMirrorLen,
		PlaceholderEnc: EncBlockLen, PlaceholderMAC: MACMirrorLen}
	offs := map[string]uint32{}
	var uri strings.Builder
	for i := 0; i < len(rest); {
		if rest[i] == '{' {
			j := strings.IndexByte(rest[i:], '}')
			if j < 0 {
				return nil, fmt.Errorf("unclosed placeholder at %d: %w", i, ErrTemplate)
			}
			ph := rest[i : i+j+1]
			n, ok := lens[ph]
			if !ok {
				return nil, fmt.Errorf("unknown placeholder %q: %w", ph, ErrTemplate)
			}
			if _, dup := offs[ph]; dup {
				return nil, fmt.Errorf("placeholder %s twice: %w", ph, ErrTemplate)
			}
			offs[ph] = uint32(ndefHeaderLen + uri.Len())
			uri.WriteString(strings.Repeat("0", n))
			i += j + 1
			continue
		}
		if rest[i] == '}' {
			return nil, fmt.Errorf("stray } at %d: %w", i, ErrTemplate)
		}
		uri.WriteByte(rest[i])
		i++
	}
	has := func(ph string) bool { _, ok := offs[ph]; return ok }
	switch {
	case !has(PlaceholderMAC):
		return nil, fmt.Errorf("template without %s: %w", PlaceholderMAC, ErrTemplate)
	case has(PlaceholderPICC) && (has(PlaceholderUID) || has(PlaceholderCtr)):
		return nil, fmt.Errorf("%s with a plain %s or %s: %w", PlaceholderPICC, PlaceholderUID, PlaceholderCtr, ErrTemplate)
	case !has(PlaceholderPICC) && !has(PlaceholderUID) && !has(PlaceholderCtr):
		return nil, fmt.Errorf("template needs %s, %s or %s: %w", PlaceholderPICC, PlaceholderUID, PlaceholderCtr, ErrTemplate)
	case has(PlaceholderEnc) && !has(PlaceholderPICC):
		return nil, fmt.Errorf("%s needs %s: %w", PlaceholderEnc, PlaceholderPICC, ErrTemplate)
	case has(PlaceholderEnc) && offs[PlaceholderEnc] > offs[PlaceholderMAC]:
		return nil, fmt.Errorf("%s after %s: %w", PlaceholderEnc, PlaceholderMAC, ErrTemplate)
	}
	payload := 1 + uri.Len()
	if ndefHeaderLen+uri.Len() > NDEFSize || payload > 255 {
		return nil, fmt.Errorf("URL of %d bytes does not fit the %d-byte NDEF file: %w", uri.Len(), NDEFSize, ErrTemplate)
	}
	nlen := 4 + payload
	file := []byte{byte(nlen >> 8), byte(nlen), 0xD1, 0x01, byte(payload), 'U', code}
	file = append(file, uri.String()...)

	s := &desfire.SDMSettings{Options: SDMASCII, MetaRead: desfire.AccessFree, FileRead: KeyFileRead, CtrRet: KeyCtrRet}
	ptr := func(v uint32) *uint32 { return &v }
	if has(PlaceholderPICC) {
		s.Options |= SDMUIDMirror | SDMCtrMirror
		s.MetaRead = KeyMetaRead
		s.PICCDataOffset = ptr(offs[PlaceholderPICC])
	}
	if has(PlaceholderUID) {
		s.Options |= SDMUIDMirror
		s.UIDOffset = ptr(offs[PlaceholderUID])
	}
	if has(PlaceholderCtr) {
		s.Options |= SDMCtrMirror
		s.ReadCtrOffset = ptr(offs[PlaceholderCtr])
	}
	s.MACOffset = ptr(offs[PlaceholderMAC])
	s.MACInputOffset = ptr(offs[PlaceholderMAC])
	if has(PlaceholderEnc) {
		s.Options |= SDMEncFileData
		s.ENCOffset = ptr(offs[PlaceholderEnc])
		s.ENCLength = ptr(EncBlockLen)
		s.MACInputOffset = ptr(offs[PlaceholderEnc])
	}
	fs := FileSettings{Mode: desfire.CommPlain, Access: desfire.NewAccessRights(desfire.AccessFree, 0, 0, 0), SDM: s}
	if err := fs.Validate(len(file)); err != nil {
		return nil, fmt.Errorf("template: %w", err)
	}
	return &Layout{File: file, Settings: fs}, nil
}

// URL returns the URL of an NDEF file holding one short URI record, as a
// phone reads it (prefix code expanded).
func URL(file []byte) (string, error) {
	if len(file) < ndefHeaderLen {
		return "", fmt.Errorf("NDEF file of %d bytes: %w", len(file), ErrTemplate)
	}
	nlen := int(file[0])<<8 | int(file[1])
	if file[2] != 0xD1 || file[3] != 0x01 || file[5] != 'U' || nlen != 4+int(file[4]) || 2+nlen > len(file) || file[4] == 0 {
		return "", fmt.Errorf("not a short URI record: %w", ErrTemplate)
	}
	prefix := ""
	for _, p := range uriPrefixes {
		if p.code == file[6] {
			prefix = p.prefix
		}
	}
	return prefix + string(file[ndefHeaderLen:2+nlen]), nil
}

// Offsets overrides SDM offsets a template computed (file offsets, as in
// ChangeFileSettings). Only mirrors the template switched on may be
// moved; the result must still pass Validate for the file.
type Offsets struct {
	UID       *uint32 `json:"uid,omitempty"`
	Ctr       *uint32 `json:"ctr,omitempty"`
	PICC      *uint32 `json:"picc,omitempty"`
	MACInput  *uint32 `json:"mac_input,omitempty"`
	ENC       *uint32 `json:"enc,omitempty"`
	ENCLength *uint32 `json:"enc_length,omitempty"`
	MAC       *uint32 `json:"mac,omitempty"`
}

// Override applies o to the layout's SDM settings and validates them
// against the NDEF file: an offset for a mirror the template does not
// have, an offset outside the file or mirrors that overlap fail with
// ErrSettings and leave the layout unchanged.
func (l *Layout) Override(o Offsets) error {
	if l.Settings.SDM == nil {
		return fmt.Errorf("no SDM settings: %w", ErrSettings)
	}
	s := *l.Settings.SDM
	set := func(name string, dst **uint32, v *uint32) error {
		if v == nil {
			return nil
		}
		if *dst == nil {
			return fmt.Errorf("offset %s for a mirror the template does not have: %w", name, ErrSettings)
		}
		x := *v
		*dst = &x
		return nil
	}
	for _, f := range []struct {
		name string
		dst  **uint32
		v    *uint32
	}{
		{"uid", &s.UIDOffset, o.UID}, {"ctr", &s.ReadCtrOffset, o.Ctr}, {"picc", &s.PICCDataOffset, o.PICC},
		{"mac_input", &s.MACInputOffset, o.MACInput}, {"enc", &s.ENCOffset, o.ENC}, {"enc_length", &s.ENCLength, o.ENCLength},
		{"mac", &s.MACOffset, o.MAC},
	} {
		if err := set(f.name, f.dst, f.v); err != nil {
			return err
		}
	}
	fs := l.Settings
	fs.SDM = &s
	if err := fs.Validate(len(l.File)); err != nil {
		return err
	}
	l.Settings = fs
	return nil
}
