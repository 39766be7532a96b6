package main

import (
	"bytes"
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/desfire-relay/relay/desfire/personalize"
	"github.com/desfire-relay/relay/internal/testbackend"
	"github.com/desfire-relay/relay/internal/testserver"
)

// syncBuffer is a bytes.Buffer safe for the agent goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestAgentSim runs `bridge -agent -sim` against the real server: the
// registered desk reader comes online and answers a balance session the
// operator addresses to it, with no bridge token.
func TestAgentSim(t *testing.T) {
	h := testserver.New(t, testbackend.Backends()[0], testserver.Profile(t, "an12113-ev2"), testserver.Options{})
	keyFile := filepath.Join(t.TempDir(), "keys.json")
	if err := personalize.WriteKeyFile(keyFile, h.KeyFile); err != nil {
		t.Fatal(err)
	}
	code, reader := h.API("POST", "/v1/readers", "", map[string]any{"id": "desk-cli"})
	if code != http.StatusCreated {
		t.Fatalf("register: %d %v", code, reader)
	}
	url := "ws" + strings.TrimPrefix(h.HTTP.URL, "http") + "/v1/agent"
	f := agentFlags{credential: reader["agent_credential"].(string), url: url, sim: true, keyFile: keyFile,
		profile: "an12113-ev2", uid: "04AA0000001234", initial: 123, batch: true}
	if rc := runAgentFlags(context.Background(), agentFlags{url: url, sim: true}, &syncBuffer{}); rc != 2 {
		t.Fatalf("-agent without a credential: exit %d, want 2", rc)
	}
	if rc := runAgentFlags(context.Background(), agentFlags{credential: "dra_x", url: url, sim: true, pcsc: true}, &syncBuffer{}); rc != 2 {
		t.Fatalf("-agent with two backends: exit %d, want 2", rc)
	}
	ctx, cancel := context.WithCancel(context.Background())
	out := &syncBuffer{}
	rc := make(chan int, 1)
	go func() { rc <- runAgentFlags(ctx, f, out) }()
	defer func() {
		cancel()
		if got := <-rc; got != 0 {
			t.Errorf("agent exit %d", got)
		}
	}()
	var sess map[string]any
	for range 500 {
		if code, sess = h.API("POST", "/v1/sessions", "", map[string]any{"kind": "balance", "reader_id": "desk-cli"}); code == http.StatusCreated {
			break
		}
		time.Sleep(20 * time.Millisecond) // until the agent is online (409 reader_offline before)
	}
	if code != http.StatusCreated {
		t.Fatalf("balance session on the reader: %d %v", code, sess)
	}
	for range 500 {
		if strings.Contains(out.String(), "session "+sess["session_id"].(string)) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if want := "ok=true kind=balance balance=1.23 EUR"; !strings.Contains(out.String(), want) {
		t.Fatalf("agent printed %q, want %q", out.String(), want)
	}
}
