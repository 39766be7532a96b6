package config

import (
	"os"
	"strings"
	"testing"
)

// TestConfigDocCurrent keeps docs/CONFIG.md's table equal to Usage().
func TestConfigDocCurrent(t *testing.T) {
	doc, err := os.ReadFile("../../docs/CONFIG.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), Usage()) {
		t.Fatalf("docs/CONFIG.md is out of date; its table must be:\n%s", Usage())
	}
}
