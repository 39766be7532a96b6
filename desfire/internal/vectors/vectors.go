// Package vectors loads the published test vectors kept in the steering
// repository's shared/vectors folder (beside this repository's root), so
// every package's tests read the same files and cite their sources.
package vectors

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Dir returns the vectors directory: $DESFIRE_VECTORS when set, otherwise
// ../shared/vectors relative to the module root.
func Dir() (string, error) {
	if d := os.Getenv("DESFIRE_VECTORS"); d != "" {
		return d, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "..", "shared", "vectors"), nil
		}
		if filepath.Dir(dir) == dir {
			return "", errors.New("vectors: go.mod not found above the working directory")
		}
	}
}

// File is the common shape of a vectors file: a description and a list of
// vectors, each kept raw so tests decode the fields they need.
type File struct {
	Description string            `json:"description"`
	Vectors     []json.RawMessage `json:"vectors"`
}

// Load reads the named vectors file and decodes each vector into a new T.
// It fails the test when the file is missing: the vectors are required.
func Load[T any](t testing.TB, name string) []T {
	t.Helper()
	dir, err := Dir()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatalf("published vectors are required: %v", err)
	}
	var f File
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	out := make([]T, 0, len(f.Vectors))
	for i, v := range f.Vectors {
		var x T
		if err := json.Unmarshal(v, &x); err != nil {
			t.Fatalf("%s vector %d: %v", name, i, err)
		}
		out = append(out, x)
	}
	if len(out) == 0 {
		t.Fatalf("%s holds no vectors", name)
	}
	return out
}

// Hex decodes a hex string (spaces allowed) or fails the test.
func Hex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}
