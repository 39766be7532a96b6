package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/zap"

	"github.com/desfire-relay/relay/server/config"
	"github.com/desfire-relay/relay/transaction/keys"
)

func TestDevDefaultsNeedNothing(t *testing.T) {
	cfg := config.Default()
	cfg.DataDir = filepath.Join(t.TempDir(), "data")
	a, err := build(context.Background(), cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	for _, f := range []string{"dev-keys.json", "dev-api-key"} {
		st, err := os.Stat(filepath.Join(cfg.DataDir, f))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, err, st)
		}
	}
	// A restart reuses the generated keys and API key.
	b, err := build(context.Background(), cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	b.close()
}

func TestProductionRefusesDevKeys(t *testing.T) {
	dir := t.TempDir()
	f, _ := keys.DevFile(nil, 0x014499)
	path := filepath.Join(dir, "keys.json")
	if err := keys.WriteFile(path, f); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Mode, cfg.DataDir, cfg.KeyFile = config.ModeProduction, dir, path
	_, err := build(context.Background(), cfg, zap.NewNop())
	if !errors.Is(err, keys.ErrDevKeys) {
		t.Fatalf("production with dev keys: %v", err)
	}
	os.Chmod(path, 0o644)
	if _, err := build(context.Background(), cfg, zap.NewNop()); !errors.Is(err, keys.ErrPermissions) {
		t.Fatalf("world-readable key file: %v", err)
	}
}
