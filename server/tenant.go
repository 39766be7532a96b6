package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/desfire-relay/relay/transaction/ledger"
)

// APIKey is one operator API key as the server stores it: never the key,
// only its SHA-256 digest, with the tenant it acts for.
type APIKey struct {
	// ID names the key in logs, the audit trail and resolutions.
	ID string
	// Digest is the SHA-256 of the key.
	Digest [sha256.Size]byte
	// Tenant owns everything the key creates and is all it can see.
	Tenant string
	// ExpiresAt, when set, is when the key stops working.
	ExpiresAt time.Time
}

// LegacyKeys turns bare SHA-256 hex digests into keys of the default
// tenant, named by the start of their digest (enough to tell keys apart,
// useless to an attacker). Malformed digests are skipped; config
// validation refuses them earlier.
func LegacyKeys(hashes []string) []APIKey {
	var out []APIKey
	for _, h := range hashes {
		b, err := hex.DecodeString(h)
		if err != nil || len(b) != sha256.Size {
			continue
		}
		k := APIKey{ID: "key:" + hex.EncodeToString(b[:6]), Tenant: ledger.DefaultTenant}
		copy(k.Digest[:], b)
		out = append(out, k)
	}
	return out
}

// keyring holds the accepted API keys; SetKeys replaces them at run time
// (key rotation without a restart).
type keyring struct {
	mu   sync.RWMutex // guards keys
	keys []APIKey
}

func (k *keyring) set(keys []APIKey) {
	cp := append([]APIKey(nil), keys...)
	k.mu.Lock()
	k.keys = cp
	k.mu.Unlock()
}

// lookup finds the key whose digest matches, comparing every stored
// digest in constant time. expired reports a known key past its expiry.
func (k *keyring) lookup(key string, now time.Time) (found APIKey, ok, expired bool) {
	sum := sha256.Sum256([]byte(key))
	k.mu.RLock()
	defer k.mu.RUnlock()
	for _, c := range k.keys {
		if subtle.ConstantTimeCompare(sum[:], c.Digest[:]) == 1 {
			found, ok = c, true
		}
	}
	if ok && !found.ExpiresAt.IsZero() && !now.Before(found.ExpiresAt) {
		return APIKey{}, false, true
	}
	return found, ok, false
}

// SetKeys replaces the accepted API keys; requests already authenticated
// finish with the key they had.
func (s *Server) SetKeys(keys []APIKey) error {
	for _, k := range keys {
		if k.ID == "" {
			return fmt.Errorf("api key without an id: %w", ledger.ErrInvalid)
		}
		if err := ledger.ValidateTenant(k.Tenant); err != nil {
			return fmt.Errorf("api key %s: %w", k.ID, err)
		}
	}
	s.keys.set(keys)
	return nil
}

// principal is who an authenticated operator request acts as.
type principal struct {
	KeyID  string
	Tenant string
}

type principalKey struct{}

// who returns the principal of an authenticated request.
func who(r *http.Request) principal {
	p, _ := r.Context().Value(principalKey{}).(principal)
	return p
}

func withPrincipal(ctx context.Context, p principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// byID finds a key that still works by its id (console sessions name
// their key by id).
func (k *keyring) byID(id string, now time.Time) (APIKey, bool) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	for _, c := range k.keys {
		if c.ID == id && (c.ExpiresAt.IsZero() || now.Before(c.ExpiresAt)) {
			return c, true
		}
	}
	return APIKey{}, false
}
