package sdm

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/desfire-relay/relay/desfire/internal/vectors"
)

// TestBackendKDF checks the sdm-backend key derivation against
// sdm.json's sdm_backend_kdf_checks and the keys of its kdf vectors.
func TestBackendKDF(t *testing.T) {
	dir, err := vectors.Dir()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "sdm.json"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Vectors []struct {
			ID, Source, UID string
			Master          string `json:"master_key"`
			Meta            string `json:"sdm_meta_read_key"`
			File            string `json:"sdm_file_read_key"`
		}
		Checks struct {
			Source string
			Cases  []struct {
				Master string  `json:"master_key"`
				Undiv1 string  `json:"undiversified_1"`
				RawTag [][]any `json:"tag"`
			}
		} `json:"sdm_backend_kdf_checks"`
	}
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	h := func(s string) []byte { return vectors.Hex(t, s) }
	checked := 0
	t.Logf("source: %s", f.Checks.Source)
	for _, c := range f.Checks.Cases {
		k, err := BackendMetaReadKey(h(c.Master))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(k, h(c.Undiv1)) {
			t.Errorf("undiversified key of %s = %X, want %s", c.Master, k, c.Undiv1)
		}
		for _, tag := range c.RawTag {
			uid, _ := tag[0].(string)
			no, _ := tag[1].(float64)
			want, _ := tag[2].(string)
			k, err := BackendTagKey(h(c.Master), h(uid), byte(no))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(k, h(want)) {
				t.Errorf("tag key %d of %s under %s = %X, want %s", int(no), uid, c.Master, k, want)
			}
			checked++
		}
	}
	for _, v := range f.Vectors {
		if v.Master == "" {
			continue
		}
		meta, err := BackendMetaReadKey(h(v.Master))
		if err != nil {
			t.Fatal(err)
		}
		file, err := BackendTagKey(h(v.Master), h(v.UID), 2)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(meta, h(v.Meta)) || !bytes.Equal(file, h(v.File)) {
			t.Errorf("%s: meta %X file %X, want %s %s (%s)", v.ID, meta, file, v.Meta, v.File, v.Source)
		}
		checked++
	}
	if checked < 6 {
		t.Fatalf("only %d derivations checked", checked)
	}
	if k, err := BackendTagKey(make([]byte, 16), h("04DE5F1EACC040"), 2); err != nil || !bytes.Equal(k, make([]byte, 16)) {
		t.Errorf("zero master: %X %v", k, err)
	}
	if _, err := BackendTagKey(h("00"), []byte{1}, 2); err == nil {
		t.Error("short UID accepted")
	}
}
