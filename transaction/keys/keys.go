// Package keys supplies the AES keys a session needs for one card: master
// keys are looked up by application, key number and version (or by name,
// for the Transaction MAC key), and per-card keys are diversified from them
// with NXP AN10922 (UID ‖ AID ‖ system identifier). The key file format
// and the diversification live in desfire/personalize, which the issuing
// side (the simulated bridge) shares without linking this package. The
// Provider interface
// is shaped so an HSM or cloud KMS can implement it later; the file-backed
// implementation here is for single-operator deployments and development.
//
// Key material never appears in logs: Secret formats as "[REDACTED]".
package keys

import (
	"crypto/rand"
	"encoding/hex"

	"context"
	"errors"
	"fmt"
	"github.com/desfire-relay/relay/desfire/dfcrypto"
	"io"
	"slices"

	"github.com/desfire-relay/relay/desfire/personalize"
)

// Errors of the key provider.
var (
	ErrNotFound    = personalize.ErrNotFound
	ErrPermissions = personalize.ErrPermissions
	ErrMalformed   = personalize.ErrMalformed
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
const TMACName = personalize.TMACName

// Ref names a master key (see personalize.KeyRef).
type Ref = personalize.KeyRef

// Provider returns the key a given card holds.
type Provider interface {
	// CardKey returns the key the card with this UID holds for ref:
	// diversified from the master key when the key is configured so.
	CardKey(ctx context.Context, ref Ref, uid []byte) (Secret, error)
	// Dev reports whether these are generated development keys.
	Dev() bool
}

// Entry is one master key in a key file.
type Entry = personalize.KeyEntry

// File is the JSON layout of a key file.
type File = personalize.KeyFile

// Static is a Provider over keys held in memory (loaded from a file).
type Static struct {
	set *personalize.KeySet
	// versions lists, per key (version aside), the versions held,
	// ascending: computed once, asked for by every session.
	versions map[Ref][]byte
}

// LoadFile reads a key file. It refuses a file that group or others can
// read, and malformed entries; nothing of the file is kept on error.
func LoadFile(path string) (*Static, error) {
	f, err := personalize.ReadKeyFile(path)
	if err != nil {
		return nil, err
	}
	return New(f)
}

// New builds a provider from a parsed key file.
func New(f File) (*Static, error) {
	set, err := personalize.NewKeySet(f)
	if err != nil {
		return nil, err
	}
	versions := make(map[Ref][]byte)
	for _, r := range set.Refs() {
		k := versionKey(r)
		versions[k] = append(versions[k], r.Version)
	}
	for _, v := range versions {
		slices.Sort(v)
	}
	return &Static{set: set, versions: versions}, nil
}

// Dev reports whether the file was marked as development keys.
func (s *Static) Dev() bool { return s.set.Dev() }

// CardKey implements Provider.
func (s *Static) CardKey(_ context.Context, ref Ref, uid []byte) (Secret, error) {
	k, err := s.set.CardKey(ref, uid)
	if err != nil {
		return nil, err
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
	return slices.Clone(s.versions[versionKey(ref)])
}

// versionKey is ref without its version (and, for a named key, without
// its number).
func versionKey(ref Ref) Ref {
	if ref.Name != "" {
		ref.KeyNo = 0
	}
	ref.Version = 0
	return ref
}

// Refs lists the configured keys (without material), sorted, for start-up
// reports.
func (s *Static) Refs() []Ref { return s.set.Refs() }

// DevFile returns freshly generated development keys (see
// personalize.DevKeyFile) plus the NTAG 424 DNA master keys 0..4
// (AddNTAG424DevKeys).
func DevFile(rnd io.Reader, aids ...uint32) (File, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	f, err := personalize.DevKeyFile(rnd, aids...)
	if err != nil {
		return File{}, err
	}
	if _, err := AddNTAG424DevKeys(&f, rnd); err != nil {
		return File{}, err
	}
	return f, nil
}

// NTAG424Keys is the number of NTAG 424 DNA application keys (0..4).
const NTAG424Keys = 5

// NTAG424MetaReadKey is the key number provisioning gives the SDM
// meta-read right (ntag424.KeyMetaRead). Its entry is not diversified:
// a verifier must decrypt PICCData before it knows the UID.
const NTAG424MetaReadKey = 2

// NTAG424KeyName names master key no of NTAG 424 DNA tags in a key file
// ("ntag424.k0" … "ntag424.k4", AID 000000; diversified per tag, except
// the meta-read key).
func NTAG424KeyName(no byte) string { return fmt.Sprintf("ntag424.k%d", no) }

// AddNTAG424DevKeys adds freshly generated NTAG 424 DNA master keys at
// version 1 for every ntag424.k0..k4 that f lacks (development key files
// written before provisioning existed), and returns how many it added.
func AddNTAG424DevKeys(f *File, rnd io.Reader) (int, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	have := map[string]bool{}
	for _, e := range f.Keys {
		have[e.Name] = true
	}
	added := 0
	for no := byte(0); no < NTAG424Keys; no++ {
		if have[NTAG424KeyName(no)] {
			continue
		}
		k := make([]byte, dfcrypto.KeySize)
		if _, err := io.ReadFull(rnd, k); err != nil {
			return added, fmt.Errorf("generate key: %w", err)
		}
		f.Keys = append(f.Keys, Entry{AID: "000000", Name: NTAG424KeyName(no), Version: 1, Key: hex.EncodeToString(k),
			Diversify: no != NTAG424MetaReadKey})
		added++
	}
	return added, nil
}

// ReadFile reads and checks a key file without building a provider (see
// LoadFile for the checks).
func ReadFile(path string) (File, error) { return personalize.ReadKeyFile(path) }

// WriteFile writes f to path with mode 0600 (creating or replacing it).
func WriteFile(path string, f File) error { return personalize.WriteKeyFile(path, f) }
