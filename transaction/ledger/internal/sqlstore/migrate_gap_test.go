package sqlstore

import (
	"testing"
	"testing/fstest"
)

// TestLoadMigrationsWithGaps: versions need not be contiguous (0005_sun
// may land before 0004 of another change); files load in version order
// and Migrate applies whatever is not recorded, in that order.
func TestLoadMigrationsWithGaps(t *testing.T) {
	ms, err := LoadMigrations(fstest.MapFS{
		"0005_sun.sql": {Data: []byte("e")}, "0001_init.sql": {Data: []byte("a")}, "0003_evidence.sql": {Data: []byte("c")},
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []int64
	for _, m := range ms {
		got = append(got, m.Version)
	}
	if len(got) != 3 || got[0] != 1 || got[1] != 3 || got[2] != 5 {
		t.Fatalf("versions %v, want [1 3 5]", got)
	}
}
