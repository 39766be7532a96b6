// Package config loads the relay server's configuration from defaults, an
// optional JSON file, environment variables and command-line flags (later
// sources override earlier ones), and checks that production mode has what
// production needs.
package config

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Modes.
const (
	ModeDev        = "dev"
	ModeProduction = "production"
)

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("config")

// Config is every setting of the server. The JSON names are those of the
// optional config file; Env gives the environment variable of each. Each
// default is stated once, in Default(); the flag help and docs/CONFIG.md
// (kept equal by TestConfigDocCurrent) print it beside the setting.
type Config struct {
	// Mode is "dev" (embedded defaults allowed) or "production".
	Mode string `json:"mode"`
	// Addr is the listen address.
	Addr string `json:"addr"`
	// DataDir holds the embedded SQLite ledger and generated dev keys.
	DataDir string `json:"data_dir"`
	// RedisURL selects Redis locks; empty means in-process locks.
	RedisURL string `json:"redis_url"`
	// DatabaseURL selects the PostgreSQL ledger; empty means SQLite.
	DatabaseURL string `json:"database_url"`
	// KeyFile is the card key file (mode 0600); empty in dev mode means
	// generated development keys in DataDir.
	KeyFile string `json:"key_file"`
	// ProfilesFile optionally adds card profiles to the built-in ones.
	ProfilesFile string `json:"profiles_file"`
	// Profile is the card profile used for new top-ups and balance lookups.
	Profile string `json:"profile"`
	// Fleet lists the profiles one server serves for a mixed card fleet
	// (EV1/EV2/EV3, several applications): each tap uses the profile that
	// serves the card, detected in the first exchange; the first is the
	// default guess. Empty (the default): Profile alone.
	Fleet []string `json:"fleet"`
	// ReaderID is the 16-byte Transaction MAC Reader ID, 32 hex digits,
	// that top-ups commit with CommitReaderID on cards requiring it when
	// the bridge has no reader ID of its own (phones). Empty: all zeros.
	ReaderID string `json:"reader_id"`
	// SUNTemplatesFile holds the SUN verification templates (empty: the
	// public GET /v1/sun/{template} endpoint answers sun_disabled).
	SUNTemplatesFile string `json:"sun_templates_file"`
	// SUNRegionHeader names a header a trusted proxy sets to the client's
	// region, for impossible-travel signals (empty: none).
	SUNRegionHeader string `json:"sun_region_header"`
	// SUNTravelByNetwork uses the client's network (IPv4 /16, IPv6 /32)
	// as the travel hint when no region header gives one.
	SUNTravelByNetwork bool `json:"sun_travel_by_network"`
	// SUNClientIPHeader names a header a trusted proxy sets to the client's
	// address, for the SUN per-address rate limit (empty: the peer).
	SUNClientIPHeader string `json:"sun_client_ip_header"`
	// APIKeyHashes are SHA-256 hex digests of the operator API keys.
	APIKeyHashes []string `json:"api_key_hashes"`
	// TLSCert and TLSKey serve HTTPS directly.
	TLSCert string `json:"tls_cert"`
	TLSKey  string `json:"tls_key"`
	// TLSProxy states that a TLS-terminating proxy is in front.
	TLSProxy bool `json:"tls_proxy"`
	// ExchangeTimeout bounds one round trip to the bridge.
	ExchangeTimeout Duration `json:"exchange_timeout"`
	// SessionTimeout bounds a whole bridge session (re-taps included).
	SessionTimeout Duration `json:"session_timeout"`
	// TokenTTL is how long a bridge token stays usable.
	TokenTTL Duration `json:"token_ttl"`
	// TopUpTTL is how long a pending top-up, or a failed one reopened,
	// stays payable before it expires.
	TopUpTTL Duration `json:"topup_ttl"`
	// ShutdownTimeout bounds draining open sessions on SIGTERM.
	ShutdownTimeout Duration `json:"shutdown_timeout"`
	// LockTTL is the card lock's lease, renewed while a session runs.
	LockTTL Duration `json:"lock_ttl"`
	// MaxSessions bounds concurrently open bridge sessions.
	MaxSessions int `json:"max_sessions"`
	// WebhooksFile lists the webhook endpoints (mode 0600: it holds their
	// signing secrets); set, it turns the ledger's outbox on.
	WebhooksFile string `json:"webhooks_file"`
	// APIKeysFile lists API keys with their tenants (see APIKeyFile);
	// relayd reads it again on SIGHUP.
	APIKeysFile string `json:"api_keys_file"`
	// AdminAddr is the private listener of metrics, the OpenAPI document
	// and pprof; empty (the default, so several processes can share a
	// host) turns it off. Never the public address.
	AdminAddr string `json:"admin_addr"`
	// ConsoleKeyFile holds the secret (at least 32 bytes) that signs the
	// support console's session cookies; the same file on every node lets
	// a console login work on all of them. Empty: a random key per process.
	ConsoleKeyFile string `json:"console_key_file"`
	// Pprof serves /debug/pprof/ on the admin listener.
	Pprof bool `json:"pprof"`
	// TLS13Only refuses TLS 1.2 (otherwise TLS 1.2 with AEAD suites only).
	TLS13Only bool `json:"tls13_only"`
	// InsecureBackend lets production use redis:// and a PostgreSQL
	// sslmode other than verify-full: the links are private.
	InsecureBackend bool `json:"insecure_backend"`
	// AllowTokenInQuery accepts bridge tokens as ?token= (logged by
	// proxies); off by default.
	AllowTokenInQuery bool `json:"allow_token_in_query"`
	// BodyTimeout bounds reading a request body.
	BodyTimeout Duration `json:"body_timeout"`
	// AddrRate and KeyRate are requests per second per client address
	// and per API key (bursts twice that); negative turns one off.
	AddrRate float64 `json:"addr_rate"`
	KeyRate  float64 `json:"key_rate"`
	// BridgesPerAddr bounds open bridge sockets per client address.
	BridgesPerAddr int `json:"bridges_per_addr"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `json:"log_level"`
}

// Duration is a time.Duration written as "5s" in JSON.
type Duration time.Duration

// UnmarshalJSON parses a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Default returns the embedded single-node defaults: SQLite in ./data,
// in-process locks, generated development keys.
func Default() Config {
	return Config{
		Mode:            ModeDev,
		Addr:            "127.0.0.1:8080",
		DataDir:         "data",
		Profile:         "an12113-ev2",
		ExchangeTimeout: Duration(5 * time.Second),
		SessionTimeout:  Duration(60 * time.Second),
		TokenTTL:        Duration(15 * time.Minute),
		TopUpTTL:        Duration(7 * 24 * time.Hour),
		ShutdownTimeout: Duration(30 * time.Second),
		LockTTL:         Duration(10 * time.Second),
		MaxSessions:     20000, // server.DefaultMaxSessions (relayd TestDefaultsAgree)
		LogLevel:        "info",
		BodyTimeout:     Duration(10 * time.Second),
		AddrRate:        50,
		KeyRate:         100,
		BridgesPerAddr:  64,
	}
}

// setting ties one field to its environment variable and flag.
type setting struct {
	env, flag, usage string
	set              func(*Config, string) error
	get              func(*Config) string
}

func str(p func(*Config) *string) (func(*Config, string) error, func(*Config) string) {
	return func(c *Config, v string) error { *p(c) = v; return nil }, func(c *Config) string { return *p(c) }
}

func dur(p func(*Config) *Duration) (func(*Config, string) error, func(*Config) string) {
	return func(c *Config, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil {
				return err
			}
			*p(c) = Duration(d)
			return nil
		}, func(c *Config) string {
			return p(c).D().String()
		}
}

func settings() []setting {
	mk := func(env, fl, usage string, s func(*Config, string) error, g func(*Config) string) setting {
		return setting{env: env, flag: fl, usage: usage, set: s, get: g}
	}
	var out []setting
	add := func(env, fl, usage string, pair func() (func(*Config, string) error, func(*Config) string)) {
		s, g := pair()
		out = append(out, mk(env, fl, usage, s, g))
	}
	add("RELAY_MODE", "mode", "dev or production", func() (func(*Config, string) error, func(*Config) string) {
		return str(func(c *Config) *string { return &c.Mode })
	})
	add("RELAY_ADDR", "addr", "listen address", func() (func(*Config, string) error, func(*Config) string) {
		return str(func(c *Config) *string { return &c.Addr })
	})
	add("RELAY_DATA_DIR", "data-dir", "directory for the embedded ledger and dev keys", func() (func(*Config, string) error, func(*Config) string) {
		return str(func(c *Config) *string { return &c.DataDir })
	})
	add("REDIS_URL", "redis-url", "Redis URL for cross-process card locks (empty: in-process)", func() (func(*Config, string) error, func(*Config) string) {
		return str(func(c *Config) *string { return &c.RedisURL })
	})
	add("DATABASE_URL", "database-url", "PostgreSQL URL for the ledger (empty: SQLite in data-dir)", func() (func(*Config, string) error, func(*Config) string) {
		return str(func(c *Config) *string { return &c.DatabaseURL })
	})
	add("RELAY_KEY_FILE", "key-file", "card key file, mode 0600 (empty in dev: generated)", func() (func(*Config, string) error, func(*Config) string) {
		return str(func(c *Config) *string { return &c.KeyFile })
	})
	add("RELAY_PROFILES_FILE", "profiles-file", "JSON file with extra card profiles", func() (func(*Config, string) error, func(*Config) string) {
		return str(func(c *Config) *string { return &c.ProfilesFile })
	})
	add("RELAY_PROFILE", "profile", "card profile for new sessions", func() (func(*Config, string) error, func(*Config) string) {
		return str(func(c *Config) *string { return &c.Profile })
	})
	add("RELAY_FLEET", "fleet", "comma-separated card profiles one server serves, detected per card; list EV2/EV3 profiles before EV1 ones (default: the profile option alone)", func() (func(*Config, string) error, func(*Config) string) {
		return func(c *Config, v string) error {
				c.Fleet = nil
				for _, n := range strings.Split(v, ",") {
					if n = strings.TrimSpace(n); n != "" {
						c.Fleet = append(c.Fleet, n)
					}
				}
				return nil
			}, func(c *Config) string {
				return strings.Join(c.Fleet, ",")
			}
	})
	add("RELAY_READER_ID", "reader-id", "Transaction MAC Reader ID (32 hex digits) committed on cards requiring CommitReaderID when the bridge has none of its own, e.g. phones (empty: zeros)", func() (func(*Config, string) error, func(*Config) string) {
		return str(func(c *Config) *string { return &c.ReaderID })
	})
	add("RELAY_SUN_TEMPLATES_FILE", "sun-templates-file", "JSON file with SUN verification templates (empty: SUN off)", func() (func(*Config, string) error, func(*Config) string) {
		return str(func(c *Config) *string { return &c.SUNTemplatesFile })
	})
	add("RELAY_SUN_REGION_HEADER", "sun-region-header", "header a trusted proxy sets to the client's region (SUN travel signals)", func() (func(*Config, string) error, func(*Config) string) {
		return str(func(c *Config) *string { return &c.SUNRegionHeader })
	})
	add("RELAY_SUN_CLIENT_IP_HEADER", "sun-client-ip-header", "header a trusted proxy sets to the client's address (SUN rate limit)", func() (func(*Config, string) error, func(*Config) string) {
		return str(func(c *Config) *string { return &c.SUNClientIPHeader })
	})
	add("RELAY_API_KEY_HASHES", "api-key-hashes", "comma-separated SHA-256 hex digests of operator API keys", func() (func(*Config, string) error, func(*Config) string) {
		return func(c *Config, v string) error {
				c.APIKeyHashes = nil
				for _, h := range strings.Split(v, ",") {
					if h = strings.TrimSpace(h); h != "" {
						c.APIKeyHashes = append(c.APIKeyHashes, strings.ToLower(h))
					}
				}
				return nil
			}, func(c *Config) string {
				return strings.Join(c.APIKeyHashes, ",")
			}
	})
	add("RELAY_TLS_CERT", "tls-cert", "TLS certificate file", func() (func(*Config, string) error, func(*Config) string) {
		return str(func(c *Config) *string { return &c.TLSCert })
	})
	add("RELAY_TLS_KEY", "tls-key", "TLS private key file", func() (func(*Config, string) error, func(*Config) string) {
		return str(func(c *Config) *string { return &c.TLSKey })
	})
	add("RELAY_TLS_PROXY", "tls-proxy", "true when a TLS-terminating proxy is in front", func() (func(*Config, string) error, func(*Config) string) {
		return func(c *Config, v string) error {
				b, err := strconv.ParseBool(v)
				c.TLSProxy = b
				return err
			}, func(c *Config) string {
				return strconv.FormatBool(c.TLSProxy)
			}
	})
	durs := []struct {
		env, fl, usage string
		p              func(*Config) *Duration
	}{
		{"RELAY_EXCHANGE_TIMEOUT", "exchange-timeout", "bound on each bridge exchange", func(c *Config) *Duration { return &c.ExchangeTimeout }},
		{"RELAY_SESSION_TIMEOUT", "session-timeout", "bound on a whole bridge session", func(c *Config) *Duration { return &c.SessionTimeout }},
		{"RELAY_TOKEN_TTL", "token-ttl", "lifetime of a bridge token", func(c *Config) *Duration { return &c.TokenTTL }},
		{"RELAY_TOPUP_TTL", "topup-ttl", "a pending top-up expires after this", func(c *Config) *Duration { return &c.TopUpTTL }},
		{"RELAY_SHUTDOWN_TIMEOUT", "shutdown-timeout", "time running sessions get on shutdown", func(c *Config) *Duration { return &c.ShutdownTimeout }},
		{"RELAY_LOCK_TTL", "lock-ttl", "card lock time-to-live (renewed while held)", func(c *Config) *Duration { return &c.LockTTL }},
		{"RELAY_BODY_TIMEOUT", "body-timeout", "bound on reading a request body", func(c *Config) *Duration { return &c.BodyTimeout }},
	}
	for _, d := range durs {
		s, g := dur(d.p)
		out = append(out, mk(d.env, d.fl, d.usage, s, g))
	}
	out = append(out, mk("RELAY_MAX_SESSIONS", "max-sessions", "bound on open bridge sessions",
		func(c *Config, v string) error {
			n, err := strconv.Atoi(v)
			c.MaxSessions = n
			return err
		}, func(c *Config) string { return strconv.Itoa(c.MaxSessions) }))
	boolean := func(env, fl, usage string, p func(*Config) *bool) {
		out = append(out, mk(env, fl, usage, func(c *Config, v string) error {
			b, err := strconv.ParseBool(v)
			*p(c) = b
			return err
		}, func(c *Config) string { return strconv.FormatBool(*p(c)) }))
	}
	text := func(env, fl, usage string, p func(*Config) *string) {
		s, g := str(p)
		out = append(out, mk(env, fl, usage, s, g))
	}
	float := func(env, fl, usage string, p func(*Config) *float64) {
		out = append(out, mk(env, fl, usage, func(c *Config, v string) error {
			f, err := strconv.ParseFloat(v, 64)
			*p(c) = f
			return err
		}, func(c *Config) string { return strconv.FormatFloat(*p(c), 'g', -1, 64) }))
	}
	text("RELAY_API_KEYS_FILE", "api-keys-file", "JSON file of API keys with tenants and expiry (re-read on SIGHUP)", func(c *Config) *string { return &c.APIKeysFile })
	text("RELAY_CONSOLE_KEY_FILE", "console-key-file", "file with the secret (32+ bytes) signing support console sessions; the same on every node (empty: random per process)", func(c *Config) *string { return &c.ConsoleKeyFile })
	text("RELAY_WEBHOOKS_FILE", "webhooks-file", "JSON file of webhook endpoints and their secrets, mode 0600 (empty: no webhooks)", func(c *Config) *string { return &c.WebhooksFile })
	text("RELAY_ADMIN_ADDR", "admin-addr", "private listener for /metrics, /openapi.yaml and pprof (empty: off)", func(c *Config) *string { return &c.AdminAddr })
	boolean("RELAY_SUN_TRAVEL_BY_NETWORK", "sun-travel-by-network", "without a region header value, use the client's network (IPv4 /16, IPv6 /32) as the SUN travel hint", func(c *Config) *bool { return &c.SUNTravelByNetwork })
	boolean("RELAY_PPROF", "pprof", "serve /debug/pprof/ on the admin listener", func(c *Config) *bool { return &c.Pprof })
	boolean("RELAY_TLS13_ONLY", "tls13-only", "refuse TLS 1.2 (default: TLS 1.2 with AEAD suites, or 1.3)", func(c *Config) *bool { return &c.TLS13Only })
	boolean("RELAY_INSECURE_BACKEND", "insecure-backend", "production accepts redis:// and sslmode other than verify-full (private links only)", func(c *Config) *bool { return &c.InsecureBackend })
	boolean("RELAY_ALLOW_TOKEN_IN_QUERY", "allow-token-in-query", "accept bridge tokens as ?token= (proxies log URLs)", func(c *Config) *bool { return &c.AllowTokenInQuery })
	float("RELAY_ADDR_RATE", "addr-rate", "requests per second per client address (negative: off)", func(c *Config) *float64 { return &c.AddrRate })
	float("RELAY_KEY_RATE", "key-rate", "operator requests per second per API key (negative: off)", func(c *Config) *float64 { return &c.KeyRate })
	out = append(out, mk("RELAY_BRIDGES_PER_ADDR", "bridges-per-addr", "bound on open bridge sockets per client address",
		func(c *Config, v string) error {
			n, err := strconv.Atoi(v)
			c.BridgesPerAddr = n
			return err
		}, func(c *Config) string { return strconv.Itoa(c.BridgesPerAddr) }))
	out = append(out, mk("RELAY_LOG_LEVEL", "log-level", "debug, info, warn or error",
		func(c *Config, v string) error { c.LogLevel = v; return nil },
		func(c *Config) string { return c.LogLevel }))
	return out
}

// Load builds the configuration from args (without the program name) and
// the environment lookup function (os.LookupEnv in production).
func Load(args []string, lookupEnv func(string) (string, bool)) (Config, error) {
	cfg := Default()
	fs := flag.NewFlagSet("relayd", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	configFile := fs.String("config", "", "optional JSON config file (env RELAY_CONFIG)")
	all := settings()
	flagVals := make([]*string, len(all))
	def := Default()
	for i, s := range all {
		flagVals[i] = fs.String(s.flag, "", fmt.Sprintf("%s (env %s, default %q)", s.usage, s.env, s.get(&def)))
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, fmt.Errorf("flags: %w: %w", err, ErrConfig)
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected arguments %q: %w", fs.Args(), ErrConfig)
	}
	path := *configFile
	if path == "" {
		path, _ = lookupEnv("RELAY_CONFIG")
	}
	if path != "" {
		raw, err := os.ReadFile(path)
		if err != nil {
			return Config{}, fmt.Errorf("config file: %w: %w", err, ErrConfig)
		}
		dec := json.NewDecoder(strings.NewReader(string(raw)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&cfg); err != nil {
			return Config{}, fmt.Errorf("config file %s: %w: %w", path, err, ErrConfig)
		}
	}
	for _, s := range all {
		if v, ok := lookupEnv(s.env); ok && v != "" {
			if err := s.set(&cfg, v); err != nil {
				return Config{}, fmt.Errorf("%s=%q: %w: %w", s.env, v, err, ErrConfig)
			}
		}
	}
	for i, s := range all {
		if v := *flagVals[i]; v != "" {
			if err := s.set(&cfg, v); err != nil {
				return Config{}, fmt.Errorf("-%s=%q: %w: %w", s.flag, v, err, ErrConfig)
			}
		}
	}
	return cfg, cfg.Validate()
}

// Validate checks the configuration; production mode needs Redis,
// PostgreSQL, a key file, API keys and TLS (its own, or a declared proxy).
// DefaultReaderID parses ReaderID (empty: all zeros).
func (c *Config) DefaultReaderID() ([16]byte, error) {
	var id [16]byte
	if c.ReaderID == "" {
		return id, nil
	}
	b, err := hex.DecodeString(c.ReaderID)
	if err != nil || len(b) != len(id) {
		return id, fmt.Errorf("reader-id must be %d hex digits: %w", 2*len(id), ErrConfig)
	}
	copy(id[:], b)
	return id, nil
}

func (c *Config) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf(format+": %w", append(a, ErrConfig)...)
	}
	if c.Mode != ModeDev && c.Mode != ModeProduction {
		return bad("mode %q is neither dev nor production", c.Mode)
	}
	for name, d := range map[string]Duration{"exchange-timeout": c.ExchangeTimeout, "session-timeout": c.SessionTimeout, "token-ttl": c.TokenTTL, "topup-ttl": c.TopUpTTL, "shutdown-timeout": c.ShutdownTimeout, "lock-ttl": c.LockTTL, "body-timeout": c.BodyTimeout} {
		if d <= 0 {
			return bad("%s must be positive", name)
		}
	}
	if _, err := c.DefaultReaderID(); err != nil {
		return err
	}
	if c.ExchangeTimeout > c.SessionTimeout {
		return bad("exchange-timeout above session-timeout")
	}
	if c.MaxSessions <= 0 {
		return bad("max-sessions must be positive")
	}
	if c.BridgesPerAddr <= 0 {
		return bad("bridges-per-addr must be positive")
	}
	if c.AddrRate == 0 || c.KeyRate == 0 {
		return bad("addr-rate and key-rate must be positive (or negative: off)")
	}
	if c.AdminAddr != "" && c.AdminAddr == c.Addr {
		return bad("admin-addr must differ from addr: metrics and pprof stay off the public listener")
	}
	for _, h := range c.APIKeyHashes {
		if b, err := hex.DecodeString(h); err != nil || len(b) != sha256.Size {
			return bad("api key hash %q is not 64 hex digits", h)
		}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return bad("tls-cert and tls-key go together")
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return bad("log-level %q", c.LogLevel)
	}
	if c.Mode == ModeProduction {
		switch {
		case c.RedisURL == "":
			return bad("production mode needs REDIS_URL")
		case c.DatabaseURL == "":
			return bad("production mode needs DATABASE_URL")
		case c.KeyFile == "":
			return bad("production mode needs a key file (RELAY_KEY_FILE)")
		case len(c.APIKeyHashes) == 0 && c.APIKeysFile == "":
			return bad("production mode needs API keys (RELAY_API_KEY_HASHES or RELAY_API_KEYS_FILE)")
		case c.TLSCert == "" && !c.TLSProxy:
			return bad("production mode needs TLS: tls-cert/tls-key, or tls-proxy=true behind a TLS-terminating proxy")
		}
		if !c.InsecureBackend {
			if !strings.HasPrefix(c.RedisURL, "rediss://") {
				return bad("production mode needs TLS to Redis (rediss://), or insecure-backend=true for a private link")
			}
			if mode := sslMode(c.DatabaseURL); mode != "verify-full" {
				return bad("production mode needs PostgreSQL sslmode=verify-full (got %q), or insecure-backend=true for a private link", mode)
			}
		}
	}
	return nil
}

// sslMode returns the sslmode of a PostgreSQL URL or key=value DSN
// ("" when unset, which libpq treats as prefer).
func sslMode(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		return u.Query().Get("sslmode")
	}
	for _, f := range strings.Fields(dsn) {
		if v, ok := strings.CutPrefix(f, "sslmode="); ok {
			return strings.Trim(v, "'")
		}
	}
	return ""
}

// HashAPIKey returns the hex SHA-256 digest stored for an API key.
func HashAPIKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// Usage lists every setting with its environment variable, flag and
// default, for docs/CONFIG.md and -help.
func Usage() string {
	var b strings.Builder
	def := Default()
	b.WriteString("| flag | environment | default | meaning |\n|---|---|---|---|\n")
	b.WriteString("| `-config` | `RELAY_CONFIG` | | optional JSON config file (keys as in the JSON names) |\n")
	for _, s := range settings() {
		fmt.Fprintf(&b, "| `-%s` | `%s` | `%s` | %s |\n", s.flag, s.env, s.get(&def), s.usage)
	}
	return b.String()
}
