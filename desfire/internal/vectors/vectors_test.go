package vectors

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"testing"
)

// listDir returns the regular files of dir, sorted by name.
func listDir(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("read %s: %v", dir, err)
	}
	var names []string
	for _, e := range ents {
		if e.Type().IsRegular() {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names
}

// TestInRepoCopyCitesSources checks that the in-repository copy holds
// every published vectors file, each vector with a non-empty source.
func TestInRepoCopyCitesSources(t *testing.T) {
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "testdata", "vectors")
	jsons := 0
	for _, name := range listDir(t, dir) {
		if filepath.Ext(name) != ".json" {
			continue
		}
		jsons++
		raw, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		var f struct {
			Vectors []struct {
				ID     string `json:"id"`
				Source string `json:"source"`
			} `json:"vectors"`
		}
		if err := json.Unmarshal(raw, &f); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(f.Vectors) == 0 {
			t.Errorf("%s holds no vectors", name)
		}
		for i, v := range f.Vectors {
			if v.Source == "" {
				t.Errorf("%s vector %d (%s) has no source", name, i, v.ID)
			}
		}
	}
	if jsons == 0 {
		t.Fatalf("%s holds no vectors files", dir)
	}
}

// TestInRepoCopyMatchesShared fails when the in-repository copy and
// ../shared/vectors (beside the module root) differ while the latter is
// present: same file names, same bytes.
func TestInRepoCopyMatchesShared(t *testing.T) {
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	shared := filepath.Join(root, "..", "shared", "vectors")
	if _, err := os.Stat(shared); errors.Is(err, fs.ErrNotExist) {
		t.Logf("%s absent (a plain clone): the in-repository copy stands alone", shared)
		return
	} else if err != nil {
		t.Fatal(err)
	}
	if err := compareDirs(filepath.Join(root, "testdata", "vectors"), shared); err != nil {
		t.Fatalf("%v (copy ../shared/vectors into testdata/vectors)", err)
	}
}

// TestCompareDirsFindsDifferences checks the comparison on synthetic
// directories: a changed byte, a missing and an extra file.
func TestCompareDirsFindsDifferences(t *testing.T) {
	write := func(dir, name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	a, b := t.TempDir(), t.TempDir()
	write(a, "x.json", `{"vectors":[]}`)
	write(b, "x.json", `{"vectors":[]}`)
	if err := compareDirs(a, b); err != nil {
		t.Fatalf("equal directories: %v", err)
	}
	write(b, "x.json", `{"vectors":[1]}`)
	if err := compareDirs(a, b); err == nil {
		t.Error("changed file not reported")
	}
	write(b, "x.json", `{"vectors":[]}`)
	write(b, "y.json", `{}`)
	if err := compareDirs(a, b); err == nil {
		t.Error("file missing from the copy not reported")
	}
	write(a, "y.json", `{}`)
	write(a, "z.json", `{}`)
	if err := compareDirs(a, b); err == nil {
		t.Error("extra file in the copy not reported")
	}
}
