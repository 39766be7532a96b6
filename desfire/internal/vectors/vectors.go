// Package vectors loads the published test vectors kept in the module's
// testdata/vectors folder (a copy of the steering repository's
// shared/vectors, each vector citing its source), so every package's tests
// read the same files and a plain clone of the repository can run them.
package vectors

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Dir returns the vectors directory: $DESFIRE_VECTORS when set, otherwise
// testdata/vectors at the module root.
func Dir() (string, error) {
	if d := os.Getenv("DESFIRE_VECTORS"); d != "" {
		return d, nil
	}
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "testdata", "vectors"), nil
}

// ModuleRoot returns the nearest directory above the working directory
// that holds go.mod.
func ModuleRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("vectors: %w", err)
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
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

// compareDirs reports the first difference between the regular files of
// two directories: a name present in only one, or different contents.
func compareDirs(copyDir, origDir string) error {
	names := func(dir string) (map[string]bool, error) {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", dir, err)
		}
		m := map[string]bool{}
		for _, e := range ents {
			if e.Type().IsRegular() {
				m[e.Name()] = true
			}
		}
		return m, nil
	}
	have, err := names(copyDir)
	if err != nil {
		return err
	}
	want, err := names(origDir)
	if err != nil {
		return err
	}
	for n := range want {
		if !have[n] {
			return fmt.Errorf("%s is missing from %s", n, copyDir)
		}
	}
	for n := range have {
		if !want[n] {
			return fmt.Errorf("%s is in %s but not in %s", n, copyDir, origDir)
		}
		a, err := os.ReadFile(filepath.Join(copyDir, n))
		if err != nil {
			return fmt.Errorf("read copy: %w", err)
		}
		b, err := os.ReadFile(filepath.Join(origDir, n))
		if err != nil {
			return fmt.Errorf("read original: %w", err)
		}
		if !bytes.Equal(a, b) {
			return fmt.Errorf("%s differs between %s and %s", n, copyDir, origDir)
		}
	}
	return nil
}
