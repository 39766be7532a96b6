package testenv

import (
	"testing"
)

// fakeTB records how lookup ended without ending the real test.
type fakeTB struct {
	testing.TB
	fatal, skipped bool
}

func (f *fakeTB) Helper()               {}
func (f *fakeTB) Fatalf(string, ...any) { f.fatal = true }
func (f *fakeTB) Skipf(string, ...any)  { f.skipped = true }

func TestLookup(t *testing.T) {
	tests := []struct {
		name        string
		ci, url     string
		want        string
		fatal, skip bool
	}{
		{name: "set", url: "redis://127.0.0.1:1/0", want: "redis://127.0.0.1:1/0"},
		{name: "set under CI", ci: "true", url: "redis://h/0", want: "redis://h/0"},
		{name: "missing locally skips", skip: true},
		{name: "missing with CI=false skips", ci: "false", skip: true},
		{name: "missing under CI fails", ci: "true", fatal: true},
		{name: "missing under CI=1 fails", ci: "1", fatal: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("CI", tc.ci)
			t.Setenv("REDIS_URL", tc.url)
			f := &fakeTB{}
			got := RedisURL(f)
			if got != tc.want || f.fatal != tc.fatal || f.skipped != tc.skip {
				t.Errorf("RedisURL = %q fatal=%v skipped=%v, want %q fatal=%v skipped=%v",
					got, f.fatal, f.skipped, tc.want, tc.fatal, tc.skip)
			}
		})
	}
}

func TestDatabaseURL(t *testing.T) {
	t.Setenv("DATABASE_URL", "postgres://u@127.0.0.1:1/db")
	if got := DatabaseURL(t); got != "postgres://u@127.0.0.1:1/db" {
		t.Errorf("DatabaseURL = %q", got)
	}
}
