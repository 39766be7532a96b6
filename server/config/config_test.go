package config

import (
	"errors"
	"os"
	"path/filepath"
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
		"RELAY_MODE": "production", "REDIS_URL": "redis://x", "DATABASE_URL": "postgres://x",
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
