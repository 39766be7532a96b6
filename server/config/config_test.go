package config

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestDefaultsNeedNothing(t *testing.T) {
	c, err := Load(nil, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.Mode != ModeDev || c.RedisURL != "" || c.DatabaseURL != "" || c.ExchangeTimeout.D() != 5*time.Second || c.SessionTimeout.D() != time.Minute {
		t.Fatalf("defaults %+v", c)
	}
}

func TestPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.json")
	os.WriteFile(file, []byte(`{"addr":"file:1","exchange_timeout":"2s","log_level":"warn"}`), 0o600)
	c, err := Load([]string{"-config", file, "-addr", "flag:3"}, env(map[string]string{"RELAY_ADDR": "env:2", "RELAY_EXCHANGE_TIMEOUT": "3s"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != "flag:3" || c.ExchangeTimeout.D() != 3*time.Second || c.LogLevel != "warn" {
		t.Fatalf("got %+v", c)
	}
}

func TestProductionRequirements(t *testing.T) {
	full := map[string]string{
		"RELAY_MODE": "production", "REDIS_URL": "rediss://x", "DATABASE_URL": "postgres://x?sslmode=verify-full",
		"RELAY_KEY_FILE": "/k", "RELAY_API_KEY_HASHES": HashAPIKey("k"), "RELAY_TLS_PROXY": "true",
	}
	if _, err := Load(nil, env(full)); err != nil {
		t.Fatalf("complete production config refused: %v", err)
	}
	for _, drop := range []string{"REDIS_URL", "DATABASE_URL", "RELAY_KEY_FILE", "RELAY_API_KEY_HASHES", "RELAY_TLS_PROXY"} {
		t.Run("without "+drop, func(t *testing.T) {
			m := map[string]string{}
			for k, v := range full {
				if k != drop {
					m[k] = v
				}
			}
			_, err := Load(nil, env(m))
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("accepted production without %s", drop)
			}
		})
	}
}

// TestProductionBackendLinks: production needs TLS to Redis and a
// verified TLS link to PostgreSQL, unless insecure-backend says the links
// are private.
func TestProductionBackendLinks(t *testing.T) {
	base := map[string]string{
		"RELAY_MODE": "production", "RELAY_KEY_FILE": "/k", "RELAY_API_KEY_HASHES": HashAPIKey("k"), "RELAY_TLS_PROXY": "true",
	}
	cases := []struct {
		name, redis, db string
		insecure, ok    bool
	}{
		{"tls both", "rediss://r:6380/0", "postgres://u@db/relay?sslmode=verify-full", false, true},
		{"dsn form", "rediss://r", "host=db user=u sslmode=verify-full", false, true},
		{"plain redis", "redis://r:6379/0", "postgres://u@db/relay?sslmode=verify-full", false, false},
		{"sslmode disable", "rediss://r", "postgres://u@db/relay?sslmode=disable", false, false},
		{"sslmode require", "rediss://r", "postgres://u@db/relay?sslmode=require", false, false},
		{"sslmode unset", "rediss://r", "postgres://u@db/relay", false, false},
		{"private links declared", "redis://r", "postgres://u@db/relay?sslmode=disable", true, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := map[string]string{"REDIS_URL": c.redis, "DATABASE_URL": c.db, "RELAY_INSECURE_BACKEND": strconv.FormatBool(c.insecure)}
			for k, v := range base {
				m[k] = v
			}
			_, err := Load(nil, env(m))
			if (err == nil) != c.ok {
				t.Fatalf("err = %v, want ok=%v", err, c.ok)
			}
		})
	}
}

// TestAPIKeysFile: ids, digests and tenants are checked; a file others
// may write is refused.
func TestAPIKeysFile(t *testing.T) {
	dir := t.TempDir()
	h := HashAPIKey("k1")
	cases := []struct {
		name, body string
		mode       os.FileMode
		ok         bool
	}{
		{"good", `{"keys":[{"id":"a1","sha256":"` + h + `","tenant":"acme","expires_at":"2030-01-01T00:00:00Z"}]}`, 0o600, true},
		{"group writable", `{"keys":[]}`, 0o620, false},
		{"bad tenant", `{"keys":[{"id":"a1","sha256":"` + h + `","tenant":"Acme"}]}`, 0o600, false},
		{"bad digest", `{"keys":[{"id":"a1","sha256":"abc","tenant":"acme"}]}`, 0o600, false},
		{"same id twice", `{"keys":[{"id":"a","sha256":"` + h + `","tenant":"x"},{"id":"a","sha256":"` + HashAPIKey("k2") + `","tenant":"y"}]}`, 0o600, false},
		{"same digest twice", `{"keys":[{"id":"a","sha256":"` + h + `","tenant":"x"},{"id":"b","sha256":"` + h + `","tenant":"y"}]}`, 0o600, false},
		{"unknown field", `{"keys":[{"id":"a","sha256":"` + h + `","tenant":"x","key":"k1"}]}`, 0o600, false},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(dir, strconv.Itoa(i)+".json")
			if err := os.WriteFile(p, []byte(c.body), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, c.mode); err != nil {
				t.Fatal(err)
			}
			keys, err := LoadAPIKeys(p)
			if (err == nil) != c.ok {
				t.Fatalf("err = %v, want ok=%v", err, c.ok)
			}
			if c.ok && (len(keys) != 1 || keys[0].Tenant != "acme" || keys[0].ExpiresAt == nil) {
				t.Fatalf("keys = %+v", keys)
			}
		})
	}
}

func TestBadValues(t *testing.T) {
	cases := map[string][]string{
		"mode":          {"-mode", "staging"},
		"duration":      {"-session-timeout", "soon"},
		"negative":      {"-lock-ttl", "-1s"},
		"exchange>sess": {"-exchange-timeout", "2m"},
		"hash":          {"-api-key-hashes", "abc"},
		"tls half":      {"-tls-cert", "c.pem"},
		"log level":     {"-log-level", "loud"},
		"extra arg":     {"serve"},
		"unknown flag":  {"-nope", "1"},
	}
	for name, args := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := Load(args, env(nil)); !errors.Is(err, ErrConfig) {
				t.Fatalf("got %v", err)
			}
		})
	}
	file := filepath.Join(t.TempDir(), "c.json")
	os.WriteFile(file, []byte(`{"adr":"typo"}`), 0o600)
	if _, err := Load([]string{"-config", file}, env(nil)); !errors.Is(err, ErrConfig) {
		t.Fatalf("unknown file key accepted: %v", err)
	}
}

func TestUsageListsEverything(t *testing.T) {
	u := Usage()
	for _, s := range settings() {
		if !strings.Contains(u, s.env) || !strings.Contains(u, "-"+s.flag) {
			t.Errorf("usage misses %s", s.env)
		}
	}
}
