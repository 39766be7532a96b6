package personalize

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

// Errors of key files and key sets.
var (
	ErrNotFound    = errors.New("keys: no such key")
	ErrPermissions = errors.New("keys: key file is readable by group or others")
	ErrMalformed   = errors.New("keys: malformed key file")
)

// TMACName is the name of the Transaction MAC key of an application.
const TMACName = "tmac"

// KeyRef names a master key. App keys are found by AID, KeyNo and
// Version; a KeyRef with a Name (such as TMACName) is found by AID, Name
// and Version.
type KeyRef struct {
	AID     uint32
	KeyNo   byte
	Version byte
	Name    string
}

// String names the key without its material.
func (r KeyRef) String() string {
	if r.Name != "" {
		return fmt.Sprintf("app %06X key %q v%d", r.AID, r.Name, r.Version)
	}
	return fmt.Sprintf("app %06X key %d v%d", r.AID, r.KeyNo, r.Version)
}

// KeyEntry is one master key in a key file.
type KeyEntry struct {
	AID       string `json:"aid"` // hex, most significant byte first ("014499"); "000000" for the PICC
	Name      string `json:"name,omitempty"`
	KeyNo     byte   `json:"key_no"`
	Version   byte   `json:"version"`
	Key       string `json:"key"` // 32 hex digits
	Diversify bool   `json:"diversify"`
}

// KeyFile is the JSON layout of a key file.
type KeyFile struct {
	// Dev marks generated development keys; production refuses them.
	Dev bool `json:"dev"`
	// SystemID is the AN10922 system identifier appended to UID ‖ AID.
	SystemID string     `json:"system_id"`
	Keys     []KeyEntry `json:"keys"`
}

// keyEntry is one parsed master key.
type keyEntry struct {
	key       []byte
	diversify bool
}

// KeySet is the master keys of a key file, held in memory.
type KeySet struct {
	dev      bool
	systemID []byte
	keys     map[KeyRef]keyEntry
}

// ReadKeyFile reads a key file. It refuses a file that group or others
// can read, and unknown fields.
func ReadKeyFile(path string) (KeyFile, error) {
	st, err := os.Stat(path)
	if err != nil {
		return KeyFile{}, fmt.Errorf("key file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return KeyFile{}, fmt.Errorf("key file %s has mode %v: %w", path, st.Mode().Perm(), ErrPermissions)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return KeyFile{}, fmt.Errorf("key file: %w", err)
	}
	var f KeyFile
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return KeyFile{}, fmt.Errorf("key file %s: %w: %w", path, err, ErrMalformed)
	}
	return f, nil
}

// LoadKeySet reads a key file (ReadKeyFile) and parses it (NewKeySet).
func LoadKeySet(path string) (*KeySet, error) {
	f, err := ReadKeyFile(path)
	if err != nil {
		return nil, err
	}
	return NewKeySet(f)
}

// NewKeySet parses a key file's entries; nothing of the file is kept on
// error.
func NewKeySet(f KeyFile) (*KeySet, error) {
	s := &KeySet{dev: f.Dev, systemID: []byte(f.SystemID), keys: map[KeyRef]keyEntry{}}
	if len(s.systemID) > dfcrypto.MaxDiversificationInput-10 {
		return nil, fmt.Errorf("system_id too long: %w", ErrMalformed)
	}
	for i, e := range f.Keys {
		aid, err := parseAID(e.AID)
		if err != nil {
			return nil, fmt.Errorf("key %d: %w: %w", i, err, ErrMalformed)
		}
		k, err := hex.DecodeString(e.Key)
		if err != nil || len(k) != dfcrypto.KeySize {
			return nil, fmt.Errorf("key %d (%s): key must be 32 hex digits: %w", i, KeyRef{AID: aid, KeyNo: e.KeyNo, Version: e.Version, Name: e.Name}, ErrMalformed)
		}
		if e.Name == "" && e.KeyNo > 13 {
			return nil, fmt.Errorf("key %d: key number %d above 13: %w", i, e.KeyNo, ErrMalformed)
		}
		ref := KeyRef{AID: aid, KeyNo: e.KeyNo, Version: e.Version, Name: e.Name}
		if e.Name != "" {
			ref.KeyNo = 0
		}
		if _, dup := s.keys[ref]; dup {
			return nil, fmt.Errorf("key %d: duplicate %s: %w", i, ref, ErrMalformed)
		}
		s.keys[ref] = keyEntry{key: k, diversify: e.Diversify}
	}
	return s, nil
}

// parseAID reads an AID written most significant byte first.
func parseAID(s string) (uint32, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 3 {
		return 0, fmt.Errorf("aid %q must be 6 hex digits", s)
	}
	return uint32(b[0])<<16 | uint32(b[1])<<8 | uint32(b[2]), nil
}

// Dev reports whether the file was marked as development keys.
func (s *KeySet) Dev() bool { return s.dev }

// CardKey returns the key the card with this UID holds for ref:
// diversified from the master key (AN10922: UID ‖ AID ‖ system
// identifier) when the key is configured so. The caller owns the result.
func (s *KeySet) CardKey(ref KeyRef, uid []byte) ([]byte, error) {
	if ref.Name != "" {
		ref.KeyNo = 0
	}
	e, ok := s.keys[ref]
	if !ok {
		return nil, fmt.Errorf("%s: %w", ref, ErrNotFound)
	}
	if !e.diversify {
		return append([]byte(nil), e.key...), nil
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
	return k, nil
}

// Source returns the set as a KeySource.
func (s *KeySet) Source() KeySource {
	return func(_ context.Context, ref KeyRef, uid []byte) ([]byte, error) { return s.CardKey(ref, uid) }
}

// Refs lists the configured keys (without material), sorted.
func (s *KeySet) Refs() []KeyRef {
	out := make([]KeyRef, 0, len(s.keys))
	for r := range s.keys {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// DevKeyFile returns freshly generated development keys for the
// applications given (AIDs), with the AN12113 key roles: per application
// key 0 (master, not diversified), keys 1..3 (diversified) and the
// Transaction MAC key (diversified), plus the PICC master key. It reads
// randomness from rnd (nil means crypto/rand).
func DevKeyFile(rnd io.Reader, aids ...uint32) (KeyFile, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	f := KeyFile{Dev: true, SystemID: "relay-dev"}
	add := func(aid uint32, no byte, name string, div bool) error {
		k := make([]byte, dfcrypto.KeySize)
		if _, err := io.ReadFull(rnd, k); err != nil {
			return fmt.Errorf("generate key: %w", err)
		}
		f.Keys = append(f.Keys, KeyEntry{AID: fmt.Sprintf("%06X", aid), Name: name, KeyNo: no, Version: 1, Key: hex.EncodeToString(k), Diversify: div})
		return nil
	}
	if err := add(0, 0, "", false); err != nil {
		return KeyFile{}, err
	}
	seen := map[uint32]bool{}
	for _, aid := range aids {
		if seen[aid] {
			continue
		}
		seen[aid] = true
		for no := byte(0); no <= 3; no++ {
			if err := add(aid, no, "", no != 0); err != nil {
				return KeyFile{}, err
			}
		}
		if err := add(aid, 0, TMACName, true); err != nil {
			return KeyFile{}, err
		}
	}
	return f, nil
}

// WriteKeyFile writes f to path with mode 0600 (creating or replacing it).
func WriteKeyFile(path string, f KeyFile) error {
	raw, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("encode key file: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, raw, 0o600); err != nil {
		return fmt.Errorf("write key file: %w", err)
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fmt.Errorf("write key file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write key file: %w", err)
	}
	return nil
}
