package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// domainPackages hold the top-up and balance flow: they speak in domain
// types (transaction.Result, Reason, Record). The contract's JSON shapes
// live in server (what goes out) and transaction/ledger (what is stored).
var domainPackages = []string{"transaction", "transaction/cardscript"}

// jsonTag finds a struct field's json tag.
var jsonTag = regexp.MustCompile("`[^`]*json:\"")

// wireViolations reports a domain package that imports encoding/json or
// declares a JSON-tagged field; files maps a file name to its source.
func wireViolations(pkg string, imports []string, files map[string]string) []string {
	var bad []string
	for _, imp := range imports {
		if imp == "encoding/json" {
			bad = append(bad, pkg+" imports encoding/json")
		}
	}
	for name, src := range files {
		if jsonTag.MatchString(src) {
			bad = append(bad, pkg+"/"+name+" declares a JSON-tagged field")
		}
	}
	return bad
}

// TestDomainSpeaksNoWire keeps wire and storage shapes out of the domain
// packages (see wireViolations).
func TestDomainSpeaksNoWire(t *testing.T) {
	for _, pkg := range domainPackages {
		out, err := exec.Command("go", "list", "-f", "{{join .Imports \"\\n\"}}", "../"+pkg).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", pkg, err)
		}
		names, err := filepath.Glob(filepath.Join("..", pkg, "*.go"))
		if err != nil || len(names) == 0 {
			t.Fatalf("%s: no Go files (%v)", pkg, err)
		}
		files := map[string]string{}
		for _, n := range names {
			if strings.HasSuffix(n, "_test.go") {
				continue
			}
			b, err := os.ReadFile(n)
			if err != nil {
				t.Fatal(err)
			}
			files[filepath.Base(n)] = string(b)
		}
		for _, v := range wireViolations(pkg, strings.Fields(string(out)), files) {
			t.Error(v)
		}
	}
}

// TestWireRuleCatchesViolations: the checker sees an import and a tag.
func TestWireRuleCatchesViolations(t *testing.T) {
	if v := wireViolations("transaction", []string{"context", "errors"}, map[string]string{"a.go": "type R struct{ A int }"}); len(v) != 0 {
		t.Fatalf("clean package: %v", v)
	}
	if v := wireViolations("transaction", []string{"encoding/json"}, nil); len(v) != 1 {
		t.Fatalf("json import: %v", v)
	}
	if v := wireViolations("transaction", nil, map[string]string{"a.go": "type R struct{ A int `json:\"a\"` }"}); len(v) != 1 {
		t.Fatalf("json tag: %v", v)
	}
}
