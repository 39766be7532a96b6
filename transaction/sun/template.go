package sun

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/desfire-relay/relay/transaction/keys"
)

// Modes of secure dynamic messaging.
const (
	ModeAES = "aes"
	ModeLRP = "lrp"
)

// Bounds on what a template may ask the parser to accept.
const (
	// MaxFileData is the largest encrypted file data a template may take
	// (bytes; the NDEF file of an NTAG 424 DNA is 256 bytes).
	MaxFileData = 128
	// MaxKeyVersions bounds the key versions tried for one message.
	MaxKeyVersions = 4
)

// ErrTemplate is returned for a template that cannot work.
var ErrTemplate = errors.New("sun: invalid template")

// Duration is a time.Duration written as "10m" in JSON.
type Duration time.Duration

// UnmarshalJSON parses a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// KeyRef names an SDM key in the key provider: the application (AID,
// 6 hex digits as in the key file), key number, and the versions to try,
// newest first (more than one while tags are re-keyed). Whether the key
// is diversified per tag (AN10922 with the tag's UID) is the key file's
// setting, as provisioning writes it.
//
// Derivation "sdm-backend" instead takes the key file's entry (not
// diversified there) as the master key of nfc-developer/sdm-backend's
// scheme and derives the tag's key from it (meta-read: key 1,
// undiversified; file-read: per UID and key number).
type KeyRef struct {
	AID        string `json:"aid"`
	KeyNo      byte   `json:"key_no"`
	Versions   []byte `json:"versions,omitempty"`
	Derivation string `json:"derivation,omitempty"`
}

// DerivationSDMBackend selects the sdm-backend key derivation.
const DerivationSDMBackend = "sdm-backend"

func (k KeyRef) refs() ([]keys.Ref, error) {
	b, err := hex.DecodeString(k.AID)
	if err != nil || len(b) != 3 {
		return nil, fmt.Errorf("aid %q must be 6 hex digits: %w", k.AID, ErrTemplate)
	}
	if k.KeyNo > 4 {
		return nil, fmt.Errorf("key number %d above 4: %w", k.KeyNo, ErrTemplate)
	}
	if k.Derivation != "" && k.Derivation != DerivationSDMBackend {
		return nil, fmt.Errorf("derivation %q: %w", k.Derivation, ErrTemplate)
	}
	vs := k.Versions
	if len(vs) == 0 {
		vs = []byte{0}
	}
	if len(vs) > MaxKeyVersions {
		return nil, fmt.Errorf("%d key versions (at most %d): %w", len(vs), MaxKeyVersions, ErrTemplate)
	}
	aid := uint32(b[0])<<16 | uint32(b[1])<<8 | uint32(b[2])
	out := make([]keys.Ref, 0, len(vs))
	for _, v := range vs {
		out = append(out, keys.Ref{AID: aid, KeyNo: k.KeyNo, Version: v})
	}
	return out, nil
}

// Tamper says where a TagTamper tag mirrors its status: two ASCII
// characters (permanent, current; 'C' closed, 'O' open, 'I' invalid, 'N'
// not enabled), either at FileOffset in the decrypted file data or as the
// plain parameter Param.
type Tamper struct {
	Param      string `json:"param,omitempty"`
	FileOffset *int   `json:"file_offset,omitempty"`
}

// Template describes the URL a provisioned tag produces and how to check
// it. Parameter names are those in the tag's NDEF URL template.
type Template struct {
	// Name is the {template} path segment.
	Name string `json:"name"`
	// Mode is "aes" (default) or "lrp".
	Mode string `json:"mode,omitempty"`
	// PICCParam carries encrypted PICCData (UID and counter). Leave empty
	// for plain mirroring with UIDParam and CtrParam.
	PICCParam string `json:"picc_param,omitempty"`
	UIDParam  string `json:"uid_param,omitempty"`
	CtrParam  string `json:"ctr_param,omitempty"`
	// FileParam carries encrypted file data (optional).
	FileParam string `json:"file_param,omitempty"`
	// FileDataMax bounds the encrypted file data, in bytes (default 32).
	FileDataMax int `json:"file_data_max,omitempty"`
	// MACParam carries the SDMMAC.
	MACParam string `json:"mac_param"`
	// MACInputFrom names the parameter whose value starts the MAC input
	// (SDMMACInputOffset); the input runs up to the SDMMAC value, "&" and
	// parameter name included. Empty: SDMMACInputOffset equals
	// SDMMACOffset, the MAC covers nothing but the session key.
	MACInputFrom string `json:"mac_input_from,omitempty"`
	// MetaReadKey decrypts PICCData (not diversified: the UID is inside).
	MetaReadKey *KeyRef `json:"meta_read_key,omitempty"`
	// FileReadKey derives the SDM session keys; usually diversified.
	FileReadKey KeyRef `json:"file_read_key"`
	// Tamper, if set, reads TagTamper status.
	Tamper *Tamper `json:"tamper,omitempty"`
	// RequireKnown answers unknown_tag for tags not registered in the
	// ledger (provisioning registers them).
	RequireKnown bool `json:"require_known,omitempty"`
	// MaxCounterGap, if not 0, raises a counter_jump signal when a counter
	// is more than this above the last accepted one.
	MaxCounterGap uint32 `json:"max_counter_gap,omitempty"`
	// MaxAge, if not 0, raises a stale_gap signal when counters were
	// skipped (read but never submitted) and the last accepted message is
	// older than this: a harvested URL used late.
	MaxAge Duration `json:"max_age,omitempty"`
	// TravelWindow, if not 0, raises impossible_travel when two accepted
	// messages of one tag come from different region hints within it.
	TravelWindow Duration `json:"travel_window,omitempty"`

	metaRefs, fileRefs []keys.Ref
}

var paramName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,32}$`)

// Validate checks the template and prepares its key references.
func (t *Template) Validate() error {
	if !paramName.MatchString(t.Name) {
		return fmt.Errorf("template name %q: %w", t.Name, ErrTemplate)
	}
	switch t.Mode {
	case "":
		t.Mode = ModeAES
	case ModeAES, ModeLRP:
	default:
		return fmt.Errorf("template %s: mode %q: %w", t.Name, t.Mode, ErrTemplate)
	}
	if t.FileDataMax == 0 {
		t.FileDataMax = 32
	}
	if t.FileDataMax < 0 || t.FileDataMax > MaxFileData || t.FileDataMax%16 != 0 {
		return fmt.Errorf("template %s: file_data_max %d: %w", t.Name, t.FileDataMax, ErrTemplate)
	}
	seen := map[string]bool{}
	for _, p := range []string{t.PICCParam, t.UIDParam, t.CtrParam, t.FileParam, t.MACParam, tamperParam(t)} {
		if p == "" {
			continue
		}
		if !paramName.MatchString(p) || seen[p] {
			return fmt.Errorf("template %s: parameter %q invalid or used twice: %w", t.Name, p, ErrTemplate)
		}
		seen[p] = true
	}
	if t.MACParam == "" {
		return fmt.Errorf("template %s: mac_param is required: %w", t.Name, ErrTemplate)
	}
	if t.MACInputFrom != "" && !seen[t.MACInputFrom] {
		return fmt.Errorf("template %s: mac_input_from %q is not one of its parameters: %w", t.Name, t.MACInputFrom, ErrTemplate)
	}
	encrypted := t.PICCParam != ""
	if encrypted == (t.UIDParam != "" || t.CtrParam != "") || (!encrypted && (t.UIDParam == "" || t.CtrParam == "")) {
		return fmt.Errorf("template %s: give picc_param, or uid_param and ctr_param: %w", t.Name, ErrTemplate)
	}
	if encrypted {
		if t.MetaReadKey == nil {
			return fmt.Errorf("template %s: picc_param needs meta_read_key: %w", t.Name, ErrTemplate)
		}
		var err error
		if t.metaRefs, err = t.MetaReadKey.refs(); err != nil {
			return fmt.Errorf("template %s: meta_read_key: %w", t.Name, err)
		}
		if t.MetaReadKey.Derivation == DerivationSDMBackend && t.MetaReadKey.KeyNo != 1 {
			return fmt.Errorf("template %s: sdm-backend derives only key 1 undiversified: %w", t.Name, ErrTemplate)
		}
	}
	var err error
	if t.fileRefs, err = t.FileReadKey.refs(); err != nil {
		return fmt.Errorf("template %s: file_read_key: %w", t.Name, err)
	}
	if t.Tamper != nil {
		if (t.Tamper.Param == "") == (t.Tamper.FileOffset == nil) {
			return fmt.Errorf("template %s: tamper needs param or file_offset: %w", t.Name, ErrTemplate)
		}
		if t.Tamper.FileOffset != nil && (t.FileParam == "" || *t.Tamper.FileOffset < 0 || *t.Tamper.FileOffset+2 > t.FileDataMax) {
			return fmt.Errorf("template %s: tamper file_offset outside the file data: %w", t.Name, ErrTemplate)
		}
	}
	if t.MaxAge < 0 || t.TravelWindow < 0 {
		return fmt.Errorf("template %s: negative duration: %w", t.Name, ErrTemplate)
	}
	return nil
}

func tamperParam(t *Template) string {
	if t.Tamper == nil {
		return ""
	}
	return t.Tamper.Param
}

// TemplatesFile is the JSON layout of a templates file.
type TemplatesFile struct {
	Templates []Template `json:"templates"`
}

// ParseTemplates reads and validates a templates file's content.
func ParseTemplates(raw []byte) ([]Template, error) {
	var f TemplatesFile
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("templates: %w: %w", err, ErrTemplate)
	}
	names := map[string]bool{}
	for i := range f.Templates {
		if err := f.Templates[i].Validate(); err != nil {
			return nil, err
		}
		if names[f.Templates[i].Name] {
			return nil, fmt.Errorf("template %s defined twice: %w", f.Templates[i].Name, ErrTemplate)
		}
		names[f.Templates[i].Name] = true
	}
	return f.Templates, nil
}

// LoadTemplates reads a templates file.
func LoadTemplates(path string) ([]Template, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("templates: %w", err)
	}
	ts, err := ParseTemplates(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ts, nil
}
