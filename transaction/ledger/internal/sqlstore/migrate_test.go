package sqlstore

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"testing/fstest"
)

func TestLoadMigrations(t *testing.T) {
	cases := []struct {
		name  string
		files fstest.MapFS
		want  []int64
		ok    bool
	}{
		{"ordered", fstest.MapFS{"0002_b.sql": {Data: []byte("b")}, "0001_a.sql": {Data: []byte("a")}, "README": {}}, []int64{1, 2}, true},
		{"empty", fstest.MapFS{}, nil, true},
		{"no number", fstest.MapFS{"init.sql": {}}, nil, false},
		{"zero", fstest.MapFS{"0000_x.sql": {}}, nil, false},
		{"duplicate", fstest.MapFS{"0001_a.sql": {}, "1_b.sql": {}}, nil, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ms, err := LoadMigrations(c.files)
			if (err == nil) != c.ok {
				t.Fatalf("err = %v, want ok=%v", err, c.ok)
			}
			if len(ms) != len(c.want) {
				t.Fatalf("got %d migrations, want %d", len(ms), len(c.want))
			}
			for i, m := range ms {
				if m.Version != c.want[i] {
					t.Errorf("migration %d has version %d, want %d", i, m.Version, c.want[i])
				}
			}
		})
	}
}

// TestDialectsAgree keeps the two backends' schemas identical apart from
// the binary column type, so the shared queries mean the same on both.
func TestDialectsAgree(t *testing.T) {
	comments := regexp.MustCompile(`(?m)^--.*\n`)
	read := func(dir string) []Migration {
		t.Helper()
		ms, err := LoadMigrations(os.DirFS(dir))
		if err != nil || len(ms) == 0 {
			t.Fatalf("%s: %d migrations, %v", dir, len(ms), err)
		}
		return ms
	}
	lite, pg := read("../../sqlite/migrations"), read("../../postgres/migrations")
	if len(lite) != len(pg) {
		t.Fatalf("sqlite has %d migrations, postgres %d", len(lite), len(pg))
	}
	for i := range lite {
		t.Run(lite[i].Name, func(t *testing.T) {
			a := comments.ReplaceAllString(lite[i].SQL, "")
			b := strings.ReplaceAll(comments.ReplaceAllString(pg[i].SQL, ""), "BYTEA", "BLOB")
			if lite[i].Version != pg[i].Version || lite[i].Name != pg[i].Name || a != b {
				t.Fatalf("sqlite and postgres migration %d differ beyond BLOB/BYTEA", lite[i].Version)
			}
		})
	}
}
