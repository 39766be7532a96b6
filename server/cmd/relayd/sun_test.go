package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/zap"

	"github.com/desfire-relay/relay/server/config"
)

// TestSUNTemplatesFile starts relayd's handler tree with a templates file:
// the public endpoint answers from the configured template (no key for
// this tag in the dev key file: unknown_tag), and a malformed file stops
// the start.
func TestSUNTemplatesFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sun.json")
	tpl := `{"templates":[{"name":"plain","uid_param":"uid","ctr_param":"ctr","mac_param":"cmac","file_read_key":{"aid":"ABCDEF","key_no":2}}]}`
	if err := os.WriteFile(path, []byte(tpl), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.SUNTemplatesFile = path
	a, err := build(context.Background(), cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	rec := httptest.NewRecorder()
	a.srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/sun/plain?uid=041E3C8A2D6B80&ctr=000006&cmac=4B00064004B0B3D3", nil))
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || rec.Code != 200 || body["status"] != "unknown_tag" {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	if err := os.WriteFile(path, []byte(`{"templates":[{"name":"x"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := build(context.Background(), cfg, zap.NewNop()); err == nil {
		b.close()
		t.Fatal("malformed templates file accepted")
	}
}
