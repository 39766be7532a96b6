package main

import (
	"strings"
	"testing"
)

func TestSummarize(t *testing.T) {
	tests := []struct {
		name                    string
		in                      string
		passed, failed, skipped int
		failedPackages          int
		wantOut, notOut         []string
	}{
		{
			name: "pass and skip",
			in: `{"Action":"run","Package":"p","Test":"TestA"}
{"Action":"output","Package":"p","Test":"TestA","Output":"=== RUN   TestA\n"}
{"Action":"output","Package":"p","Test":"TestA","Output":"    a_test.go:3: noise\n"}
{"Action":"pass","Package":"p","Test":"TestA"}
{"Action":"output","Package":"p","Test":"TestB","Output":"    b_test.go:9: REDIS_URL is not set\n"}
{"Action":"output","Package":"p","Test":"TestB","Output":"--- SKIP: TestB (0.00s)\n"}
{"Action":"skip","Package":"p","Test":"TestB"}
{"Action":"output","Package":"p","Output":"PASS\n"}
{"Action":"output","Package":"p","Output":"ok  \tp\t0.1s\n"}
{"Action":"pass","Package":"p"}
`,
			passed: 1, skipped: 1,
			wantOut: []string{"ok  \tp\t0.1s", "skipped: p TestB: b_test.go:9: REDIS_URL is not set", "tests: 1 passed, 0 failed, 1 skipped"},
			notOut:  []string{"noise", "PASS\n"},
		},
		{
			name: "failure shows output",
			in: `{"Action":"output","Package":"q","Test":"TestF","Output":"    f_test.go:1: boom\n"}
{"Action":"fail","Package":"q","Test":"TestF"}
{"Action":"output","Package":"q","Output":"FAIL\tq\t0.2s\n"}
{"Action":"fail","Package":"q"}
`,
			failed: 1, failedPackages: 1,
			wantOut: []string{"f_test.go:1: boom", "FAIL\tq", "tests: 0 passed, 1 failed, 0 skipped"},
		},
		{
			name: "build failure",
			in: `{"ImportPath":"r [r.test]","Action":"build-output","Output":"r/x.go:1:1: syntax error\n"}
{"ImportPath":"r [r.test]","Action":"build-fail"}
not json at all
`,
			failedPackages: 1,
			wantOut:        []string{"syntax error", "not json at all"},
		},
		{
			name:    "unfinished test is shown",
			in:      `{"Action":"output","Package":"s","Test":"TestHang","Output":"panic: test timed out\n"}` + "\n",
			wantOut: []string{"panic: test timed out"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out strings.Builder
			r, err := summarize(strings.NewReader(tc.in), &out)
			if err != nil {
				t.Fatal(err)
			}
			if r.passed != tc.passed || r.failed != tc.failed || r.skipped != tc.skipped || r.failedPackages != tc.failedPackages {
				t.Errorf("counts = %+v, want passed=%d failed=%d skipped=%d failedPackages=%d",
					r, tc.passed, tc.failed, tc.skipped, tc.failedPackages)
			}
			for _, w := range tc.wantOut {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
			for _, n := range tc.notOut {
				if strings.Contains(out.String(), n) {
					t.Errorf("output has %q:\n%s", n, out.String())
				}
			}
		})
	}
}
