// Command testsummary turns the event stream of `go test -json` back into
// the familiar short output of `go test` (package result lines, and the
// full output of failed tests) and ends it with one line counting the
// tests that passed, failed and were skipped, naming the skipped ones, so
// a CI log shows at a glance whether tests that need Redis or PostgreSQL
// really ran. scripts/test.sh uses it.
//
// It exits non-zero when any test or package failed, or when the stream
// held no test at all.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// event is one record of `go test -json` (cmd/test2json).
type event struct {
	Action     string
	Package    string
	Test       string
	Output     string
	ImportPath string
}

// result is what summarize found in a stream.
type result struct {
	passed, failed, skipped int
	failedPackages          int
	skippedTests            []string
}

func main() {
	r, err := summarize(os.Stdin, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testsummary:", err)
		os.Exit(2)
	}
	if r.failed > 0 || r.failedPackages > 0 || r.passed+r.failed+r.skipped == 0 {
		os.Exit(1)
	}
}

// summarize copies the short form of the stream in to out and returns the
// counts.
func summarize(in io.Reader, out io.Writer) (result, error) {
	var r result
	pending := map[string][]string{} // package/test -> buffered output
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var ev event
		if err := json.Unmarshal(line, &ev); err != nil || ev.Action == "" {
			// Not an event (for example a build error printed as text).
			fmt.Fprintln(out, string(line))
			continue
		}
		key := ev.Package + "\x00" + ev.Test
		switch {
		case ev.Action == "build-output":
			fmt.Fprint(out, ev.Output)
		case ev.Action == "build-fail":
			r.failedPackages++
		case ev.Test == "":
			// Package-level lines: "ok pkg 1.2s", "FAIL pkg", "? pkg [no test files]".
			switch ev.Action {
			case "output":
				if o := strings.TrimSpace(ev.Output); o != "PASS" && o != "" {
					fmt.Fprint(out, ev.Output)
				}
			case "fail":
				r.failedPackages++
			}
		case ev.Action == "output":
			pending[key] = append(pending[key], ev.Output)
		case ev.Action == "pass":
			r.passed++
			delete(pending, key)
		case ev.Action == "skip":
			r.skipped++
			r.skippedTests = append(r.skippedTests, ev.Package+" "+ev.Test+skipReason(pending[key]))
			delete(pending, key)
		case ev.Action == "fail":
			r.failed++
			fmt.Fprint(out, strings.Join(pending[key], ""))
			delete(pending, key)
		}
	}
	if err := sc.Err(); err != nil {
		return r, fmt.Errorf("read go test -json stream: %w", err)
	}
	// Tests that never ended (a panic or timeout killed the binary).
	keys := make([]string, 0, len(pending))
	for k := range pending {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprint(out, strings.Join(pending[k], ""))
	}
	sort.Strings(r.skippedTests)
	for _, s := range r.skippedTests {
		fmt.Fprintln(out, "skipped:", s)
	}
	fmt.Fprintf(out, "tests: %d passed, %d failed, %d skipped\n", r.passed, r.failed, r.skipped)
	return r, nil
}

// skipReason returns ": <last message>" from a skipped test's output, the
// message given to t.Skip, or "".
func skipReason(lines []string) string {
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if l == "" || strings.HasPrefix(l, "--- SKIP") || strings.HasPrefix(l, "=== ") {
			continue
		}
		return ": " + l
	}
	return ""
}
