package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/desfire-relay/relay/server/config"
)

// TestAPIKeyCreate: the subcommand prints a key whose SHA-256 is the
// entry it prints and adds to the keys file, which relayd then accepts.
func TestAPIKeyCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.json")
	var out bytes.Buffer
	if err := runAPIKey([]string{"create", "-id", "acme-1", "-tenant", "acme", "-file", path}, &out); err != nil {
		t.Fatal(err)
	}
	fields := map[string]string{}
	for _, line := range strings.Split(out.String(), "\n") {
		if k, v, ok := strings.Cut(line, ": "); ok {
			fields[k] = v
		}
	}
	key := fields["key"]
	if len(key) < 40 || fields["sha256"] != config.HashAPIKey(key) {
		t.Fatalf("output:\n%s", out.String())
	}
	entries, err := config.LoadAPIKeys(path)
	if err != nil || len(entries) != 1 || entries[0].SHA256 != config.HashAPIKey(key) || entries[0].Tenant != "acme" || entries[0].ID != "acme-1" {
		t.Fatalf("keys file: %+v %v", entries, err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("keys file mode %v", st.Mode().Perm())
	}
	// A second key is appended, with its expiry.
	out.Reset()
	if err := runAPIKey([]string{"create", "-id", "acme-2", "-tenant", "acme", "-expires", "2030-01-01T00:00:00Z", "-file", path}, &out); err != nil {
		t.Fatal(err)
	}
	entries, err = config.LoadAPIKeys(path)
	if err != nil || len(entries) != 2 || entries[1].ExpiresAt == nil || !entries[1].ExpiresAt.Equal(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("after the second key: %+v %v", entries, err)
	}
	before, _ := os.ReadFile(path)
	for _, args := range [][]string{
		{"create", "-id", "acme-1", "-tenant", "acme", "-file", path}, // id taken
		{"create", "-id", "", "-tenant", "acme"},
		{"create", "-id", "x y", "-tenant", "acme"},
		{"create", "-id", "z", "-tenant", "ACME"},
		{"create", "-id", "z", "-expires", "next year"},
		{"create", "-id", "z", "extra"},
		{"delete", "-id", "z"},
		{},
	} {
		out.Reset()
		if err := runAPIKey(args, &out); err == nil || strings.Contains(out.String(), "key: ") {
			t.Errorf("%v: err=%v, printed %q", args, err, out.String())
		}
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatal("a refused create changed the keys file")
	}
}
