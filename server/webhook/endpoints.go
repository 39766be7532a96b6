// Package webhook delivers the ledger's outbox events (ledger.Outbox) to
// the operator's HTTP endpoints: each delivery signed with HMAC-SHA256
// over a timestamp and the body, retried with exponential backoff, at
// least once and deduplicable by the event id.
package webhook

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"slices"

	"github.com/desfire-relay/relay/transaction/ledger"
)

// ErrConfig is wrapped by every webhooks file error.
var ErrConfig = errors.New("webhook config")

// Endpoint is one registered receiver.
type Endpoint struct {
	// Name identifies the endpoint in the outbox and the metrics.
	Name string `json:"name"`
	// URL receives POSTs; https, or http to a loopback or private host
	// when the deployment says the link is private (AllowHTTP).
	URL string `json:"url"`
	// Tenant whose events the endpoint receives (default "default").
	Tenant string `json:"tenant"`
	// Events it subscribes to (default: every type).
	Events []string `json:"events"`
	// Secret signs the deliveries (at least 32 bytes).
	Secret string `json:"secret"`
	// AllowHTTP accepts an http:// URL.
	AllowHTTP bool `json:"allow_http"`
}

// File is the JSON document of RELAY_WEBHOOKS_FILE:
//
//	{"endpoints": [{"name": "billing", "url": "https://ops.example/relay",
//	                "tenant": "acme", "events": ["topup.applied"],
//	                "secret": "<at least 32 bytes>"}]}
type File struct {
	Endpoints []Endpoint `json:"endpoints"`
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// Load reads and checks a webhooks file. It holds the signing secrets, so
// it must be readable by its owner only (mode 0600 or stricter).
func Load(path string) ([]Endpoint, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("webhooks file: %w: %w", err, ErrConfig)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("webhooks file %s holds secrets and has mode %v (want 0600): %w", path, st.Mode().Perm(), ErrConfig)
	}
	if st.Size() > 1<<20 {
		return nil, fmt.Errorf("webhooks file %s larger than 1 MiB: %w", path, ErrConfig)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("webhooks file: %w: %w", err, ErrConfig)
	}
	var f File
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("webhooks file %s: %w: %w", path, err, ErrConfig)
	}
	return Check(f.Endpoints)
}

// Check validates endpoints and fills in defaults.
func Check(eps []Endpoint) ([]Endpoint, error) {
	names := map[string]bool{}
	out := make([]Endpoint, 0, len(eps))
	for i, e := range eps {
		if e.Tenant == "" {
			e.Tenant = ledger.DefaultTenant
		}
		if len(e.Events) == 0 {
			e.Events = slices.Clone(ledger.EventTypes)
		}
		u, err := url.Parse(e.URL)
		switch {
		case !nameRE.MatchString(e.Name):
			return nil, fmt.Errorf("endpoint %d: name must be 1..64 of a-z, 0-9, '.', '_', '-': %w", i, ErrConfig)
		case names[e.Name]:
			return nil, fmt.Errorf("endpoint %q listed twice: %w", e.Name, ErrConfig)
		case err != nil || u.Host == "" || u.User != nil:
			return nil, fmt.Errorf("endpoint %q: url must be absolute, without credentials: %w", e.Name, ErrConfig)
		case u.Scheme != "https" && !(u.Scheme == "http" && e.AllowHTTP):
			return nil, fmt.Errorf("endpoint %q: url must be https (or set allow_http for a private link): %w", e.Name, ErrConfig)
		case len(e.Secret) < 32:
			return nil, fmt.Errorf("endpoint %q: secret must be at least 32 bytes: %w", e.Name, ErrConfig)
		case ledger.ValidateTenant(e.Tenant) != nil:
			return nil, fmt.Errorf("endpoint %q: bad tenant: %w", e.Name, ErrConfig)
		}
		for _, t := range e.Events {
			if !slices.Contains(ledger.EventTypes, t) {
				return nil, fmt.Errorf("endpoint %q: unknown event %q (known: %v): %w", e.Name, t, ledger.EventTypes, ErrConfig)
			}
		}
		names[e.Name] = true
		out = append(out, e)
	}
	return out, nil
}

// Subscriptions returns the outbox subscriptions of the endpoints.
func Subscriptions(eps []Endpoint) []ledger.Subscription {
	out := make([]ledger.Subscription, len(eps))
	for i, e := range eps {
		out[i] = ledger.Subscription{Endpoint: e.Name, Tenant: e.Tenant, Types: e.Events}
	}
	return out
}
