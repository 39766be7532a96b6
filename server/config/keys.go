package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"
)

// APIKeyEntry is one operator API key of an API keys file: its id (for
// logs and the audit trail), the SHA-256 hex digest of the key, the tenant
// it acts for and an optional expiry.
type APIKeyEntry struct {
	ID        string     `json:"id"`
	SHA256    string     `json:"sha256"`
	Tenant    string     `json:"tenant"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// APIKeyFile is the JSON document of RELAY_API_KEYS_FILE:
//
//	{"keys": [{"id": "acme-2026-01", "sha256": "<64 hex>", "tenant": "acme",
//	           "expires_at": "2027-01-01T00:00:00Z"}]}
type APIKeyFile struct {
	Keys []APIKeyEntry `json:"keys"`
}

// maxKeysFile bounds the API keys file.
const maxKeysFile = 1 << 20

// LoadAPIKeys reads and checks an API keys file: unique ids and digests,
// 64 hex digits, tenants of a-z, 0-9, '.', '_' and '-'. The file holds
// digests only, but it decides who may move money: it must not be
// writable by group or others.
func LoadAPIKeys(path string) ([]APIKeyEntry, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("api keys file: %w: %w", err, ErrConfig)
	}
	if st.Mode().Perm()&0o022 != 0 {
		return nil, fmt.Errorf("api keys file %s is writable by group or others (%v): %w", path, st.Mode().Perm(), ErrConfig)
	}
	if st.Size() > maxKeysFile {
		return nil, fmt.Errorf("api keys file %s larger than %d bytes: %w", path, maxKeysFile, ErrConfig)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("api keys file: %w: %w", err, ErrConfig)
	}
	var f APIKeyFile
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("api keys file %s: %w: %w", path, err, ErrConfig)
	}
	ids, digests := map[string]bool{}, map[string]bool{}
	for i, k := range f.Keys {
		k.SHA256 = strings.ToLower(k.SHA256)
		f.Keys[i] = k
		switch {
		case k.ID == "" || len(k.ID) > 64 || strings.ContainsFunc(k.ID, func(r rune) bool { return r <= ' ' || r > '~' }):
			return nil, fmt.Errorf("api keys file %s: key %d: id must be 1..64 printable ASCII bytes: %w", path, i, ErrConfig)
		case ids[k.ID]:
			return nil, fmt.Errorf("api keys file %s: id %q twice: %w", path, k.ID, ErrConfig)
		case digests[k.SHA256]:
			return nil, fmt.Errorf("api keys file %s: key %q: digest listed twice: %w", path, k.ID, ErrConfig)
		case !validTenant(k.Tenant):
			return nil, fmt.Errorf("api keys file %s: key %q: tenant must be 1..64 of a-z, 0-9, '.', '_', '-': %w", path, k.ID, ErrConfig)
		}
		if b, err := hex.DecodeString(k.SHA256); err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("api keys file %s: key %q: sha256 is not 64 hex digits: %w", path, k.ID, ErrConfig)
		}
		ids[k.ID], digests[k.SHA256] = true, true
	}
	return f.Keys, nil
}

func validTenant(t string) bool {
	if t == "" || len(t) > 64 {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '.' && c != '_' && c != '-' {
			return false
		}
	}
	return true
}
