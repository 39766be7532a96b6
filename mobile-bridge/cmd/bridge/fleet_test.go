package main

import (
	"fmt"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/desfire-relay/relay/desfire/personalize"
	"github.com/desfire-relay/relay/internal/testbackend"
	"github.com/desfire-relay/relay/internal/testserver"
)

// TestFleet runs many simulated bridges at once against the real server:
// every card is credited exactly once, then every card's balance is read.
func TestFleet(t *testing.T) {
	h := testserver.New(t, testbackend.Backends()[0], testserver.Profile(t, "an12113-ev2"), testserver.Options{})
	keyFile := filepath.Join(t.TempDir(), "keys.json")
	if err := personalize.WriteKeyFile(keyFile, h.KeyFile); err != nil {
		t.Fatal(err)
	}
	const n = 12
	common := []string{"-sim", "-n", fmt.Sprint(n), "-api-url", h.HTTP.URL, "-api-key", testserver.APIKey,
		"-url", h.WSURL(), "-keys", keyFile, "-uid", "04AA000000FF00", "-initial", "40"}
	if rc := run(append(common, "-amount", "125")); rc != 0 {
		t.Fatalf("top-up fleet exit %d", rc)
	}
	for i := range n {
		uid := fmt.Sprintf("04AA000000FF%02X", i)
		code, out := h.API("GET", "/v1/cards/"+uid+"/topups", "", nil)
		if code != http.StatusOK {
			t.Fatalf("card %s history: HTTP %d %v", uid, code, out)
		}
		list, _ := out["topups"].([]any)
		if len(list) != 1 {
			t.Fatalf("card %s has %d top-ups, want 1: %v", uid, len(list), out)
		}
		if st := list[0].(map[string]any)["status"]; st != "applied" {
			t.Fatalf("card %s top-up %v", uid, st)
		}
	}
	if rc := run(append(common, "-amount", "0")); rc != 0 {
		t.Fatalf("balance fleet exit %d", rc)
	}
	if rc := run([]string{"-sim", "-n", "2"}); rc != 2 {
		t.Fatalf("fleet without -api-key: exit %d, want 2", rc)
	}
	bad := append(append([]string{}, common...), "-amount", "100")
	bad[7] = "wrong-key" // -api-key's value
	if rc := run(bad); rc != 3 {
		t.Fatalf("fleet with a wrong API key: exit %d, want 3", rc)
	}
}
