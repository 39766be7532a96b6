// Package keys supplies the AES keys a session needs for one card: master
// keys are looked up by application, key number and version (or by name,
// for the Transaction MAC key), and per-card keys are diversified from them
// with NXP AN10922 (UID ‖ AID ‖ system identifier). The Provider interface
// is shaped so an HSM or cloud KMS can implement it later; the file-backed
// implementation here is for single-operator deployments and development.
//
// Key material never appears in logs: Secret formats as "[REDACTED]".
package keys

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/desfire-relay/relay/desfire/dfcrypto"
)

// Errors of the key provider.
var (
	ErrNotFound    = errors.New("keys: no such key")
	ErrPermissions = errors.New("keys: key file is readable by group or others")
	ErrMalformed   = errors.New("keys: malformed key file")
	ErrDevKeys     = errors.New("keys: development keys refused in production")
)

// Secret is key material. It prints as [REDACTED] with every fmt verb so a
// stray log line cannot leak it.
type Secret []byte

// String hides the key.
func (Secret) String() string { return "[REDACTED]" }

// GoString hides the key from %#v.
func (Secret) GoString() string { return "[REDACTED]" }

// Format hides the key from every verb, including %x.
func (Secret) Format(f fmt.State, _ rune) { io.WriteString(f, "[REDACTED]") }

// TMACName is the name of the Transaction MAC key of an application.
const TMACName = "tmac"

// Ref names a master key. App keys are found by AID, KeyNo and Version;
// a Ref with a Name (such as TMACName) is found by AID, Name and Version.
type Ref struct {
	AID     uint32
	KeyNo   byte
	Version byte
	Name    string
}

func (r Ref) String() string {
	if r.Name != "" {
		return fmt.Sprintf("app %06X key %q v%d", r.AID, r.Name, r.Version)
	}
	return fmt.Sprintf("app %06X key %d v%d", r.AID, r.KeyNo, r.Version)
}

// Provider returns the key a given card holds.
type Provider interface {
	// CardKey returns the key the card with this UID holds for ref:
	// diversified from the master key when the key is configured so.
	CardKey(ctx context.Context, ref Ref, uid []byte) (Secret, error)
	// Dev reports whether these are generated development keys.
	Dev() bool
}

// Entry is one master key in a key file.
type Entry struct {
	AID       string `json:"aid"` // hex, most significant byte first ("014499"); "000000" for the PICC
	Name      string `json:"name,omitempty"`
	KeyNo     byte   `json:"key_no"`
	Version   byte   `json:"version"`
	Key       string `json:"key"` // 32 hex digits
	Diversify bool   `json:"diversify"`
}

// File is the JSON layout of a key file.
type File struct {
	// Dev marks generated development keys; production refuses them.
	Dev bool `json:"dev"`
	// SystemID is the AN10922 system identifier appended to UID ‖ AID.
	SystemID string  `json:"system_id"`
	Keys     []Entry `json:"keys"`
}

type entry struct {
	ref       Ref
	key       Secret
	diversify bool
}

// Static is a Provider over keys held in memory (loaded from a file).
type Static struct {
	dev      bool
	systemID []byte
	keys     map[Ref]entry
}

// LoadFile reads a key file. It refuses a file that group or others can
// read, and malformed entries; nothing of the file is kept on error.
func LoadFile(path string) (*Static, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("key file %s has mode %v: %w", path, st.Mode().Perm(), ErrPermissions)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	var f File
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("key file %s: %v: %w", path, err, ErrMalformed)
	}
	return New(f)
}

// New builds a provider from a parsed key file.
func New(f File) (*Static, error) {
	s := &Static{dev: f.Dev, systemID: []byte(f.SystemID), keys: map[Ref]entry{}}
	if len(s.systemID) > dfcrypto.MaxDiversificationInput-10 {
		return nil, fmt.Errorf("system_id too long: %w", ErrMalformed)
	}
	for i, e := range f.Keys {
		aid, err := parseAID(e.AID)
		if err != nil {
			return nil, fmt.Errorf("key %d: %v: %w", i, err, ErrMalformed)
		}
		k, err := hex.DecodeString(e.Key)
		if err != nil || len(k) != dfcrypto.KeySize {
			return nil, fmt.Errorf("key %d (%s): key must be 32 hex digits: %w", i, Ref{AID: aid, KeyNo: e.KeyNo, Version: e.Version, Name: e.Name}, ErrMalformed)
		}
		if e.Name == "" && e.KeyNo > 13 {
			return nil, fmt.Errorf("key %d: key number %d above 13: %w", i, e.KeyNo, ErrMalformed)
		}
		ref := Ref{AID: aid, KeyNo: e.KeyNo, Version: e.Version, Name: e.Name}
		if e.Name != "" {
			ref.KeyNo = 0
		}
		if _, dup := s.keys[ref]; dup {
			return nil, fmt.Errorf("key %d: duplicate %s: %w", i, ref, ErrMalformed)
		}
		s.keys[ref] = entry{ref: ref, key: Secret(k), diversify: e.Diversify}
	}
	return s, nil
}

func parseAID(s string) (uint32, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 3 {
		return 0, fmt.Errorf("aid %q must be 6 hex digits", s)
	}
	return uint32(b[0])<<16 | uint32(b[1])<<8 | uint32(b[2]), nil
}

// Dev reports whether the file was marked as development keys.
func (s *Static) Dev() bool { return s.dev }

// CardKey implements Provider.
func (s *Static) CardKey(_ context.Context, ref Ref, uid []byte) (Secret, error) {
	if ref.Name != "" {
		ref.KeyNo = 0
	}
	e, ok := s.keys[ref]
	if !ok {
		return nil, fmt.Errorf("%s: %w", ref, ErrNotFound)
	}
	if !e.diversify {
		return append(Secret(nil), e.key...), nil
	}
	if len(uid) != 7 && len(uid) != 4 && len(uid) != 10 {
		return nil, fmt.Errorf("diversify %s: UID of %d bytes", ref, len(uid))
	}
	aid := []byte{byte(ref.AID), byte(ref.AID >> 8), byte(ref.AID >> 16)}
	m := dfcrypto.DiversificationInput(uid, aid, s.systemID)
	k, err := dfcrypto.Diversify(e.key, m)
	if err != nil {
		return nil, fmt.Errorf("diversify %s: %w", ref, err)
	}
	return Secret(k), nil
}

// Versioner is implemented by providers that can list the versions they
// hold of a key, so that a caller can prepare every version a card may
// name before it knows which one the card holds.
type Versioner interface {
	// Versions lists the versions held of the key ref names (ref.Version
	// is ignored), in ascending order.
	Versions(ref Ref) []byte
}

// Versions implements Versioner.
func (s *Static) Versions(ref Ref) []byte {
	if ref.Name != "" {
		ref.KeyNo = 0
	}
	var out []byte
	for r := range s.keys {
		if r.AID == ref.AID && r.Name == ref.Name && r.KeyNo == ref.KeyNo {
			out = append(out, r.Version)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// Refs lists the configured keys (without material), sorted, for start-up
// reports.
func (s *Static) Refs() []Ref {
	out := make([]Ref, 0, len(s.keys))
	for r := range s.keys {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// DevFile returns freshly generated development keys for the applications
// given (AIDs), with the AN12113 key roles: per application key 0 (master,
// not diversified), keys 1..3 (diversified) and the Transaction MAC key
// (diversified), plus the PICC master key and the NTAG 424 DNA master
// keys 0..4 (diversified per tag, NTAG424KeyName). It reads randomness from rnd
// (nil means crypto/rand).
func DevFile(rnd io.Reader, aids ...uint32) (File, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	f := File{Dev: true, SystemID: "relay-dev"}
	add := func(aid uint32, no byte, name string, div bool) error {
		k := make([]byte, dfcrypto.KeySize)
		if _, err := io.ReadFull(rnd, k); err != nil {
			return fmt.Errorf("generate key: %w", err)
		}
		f.Keys = append(f.Keys, Entry{AID: fmt.Sprintf("%06X", aid), Name: name, KeyNo: no, Version: 1, Key: hex.EncodeToString(k), Diversify: div})
		return nil
	}
	if err := add(0, 0, "", false); err != nil {
		return File{}, err
	}
	seen := map[uint32]bool{}
	for _, aid := range aids {
		if seen[aid] {
			continue
		}
		seen[aid] = true
		for no := byte(0); no <= 3; no++ {
			if err := add(aid, no, "", no != 0); err != nil {
				return File{}, err
			}
		}
		if err := add(aid, 0, TMACName, true); err != nil {
			return File{}, err
		}
	}
	for no := byte(0); no < NTAG424Keys; no++ {
		if err := add(0, 0, NTAG424KeyName(no), true); err != nil {
			return File{}, err
		}
	}
	return f, nil
}

// NTAG424Keys is the number of NTAG 424 DNA application keys (0..4).
const NTAG424Keys = 5

// NTAG424KeyName names master key no of NTAG 424 DNA tags in a key file
// ("ntag424.k0" … "ntag424.k4", AID 000000, diversified per tag).
func NTAG424KeyName(no byte) string { return fmt.Sprintf("ntag424.k%d", no) }

// WriteFile writes f to path with mode 0600 (creating or replacing it).
func WriteFile(path string, f File) error {
	raw, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, raw, 0o600); err != nil {
		return fmt.Errorf("write key file: %w", err)
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fmt.Errorf("write key file: %w", err)
	}
	return os.Rename(tmp, path)
}
