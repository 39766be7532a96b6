// Package multinode runs two relayd processes sharing one Redis and one
// PostgreSQL, and races bridges on both nodes for one card and one
// top-up.
package multinode

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/internal/testbackend"
	"github.com/desfire-relay/relay/internal/testcard"
	"github.com/desfire-relay/relay/internal/testenv"
	"github.com/desfire-relay/relay/internal/testserver"
	"github.com/desfire-relay/relay/mobile-bridge/bridge"
	"github.com/desfire-relay/relay/server/config"
	"github.com/desfire-relay/relay/transaction/cardscript"
	"github.com/desfire-relay/relay/transaction/keys"
	"github.com/desfire-relay/relay/transaction/profile"
)

const apiKey = "multinode-key"

var uid = []byte{0x04, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22}

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

type node struct {
	addr string
	cmd  *exec.Cmd
	// api checks every operator exchange against the OpenAPI document.
	api *http.Client
}

func startNode(t *testing.T, bin, dir, keyFile, dbURL string) *node {
	t.Helper()
	n := &node{addr: freePort(t), api: testserver.Client(t, testserver.Public)}
	n.cmd = exec.Command(bin, "-addr", n.addr, "-data-dir", dir, "-key-file", keyFile,
		"-database-url", dbURL, "-redis-url", testenv.RedisURL(t), "-api-key-hashes", config.HashAPIKey(apiKey), "-log-level", "warn")
	n.cmd.Stderr = os.Stderr
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.cmd.Process.Kill(); n.cmd.Wait() })
	for i := 0; i < 100; i++ {
		if r, err := http.Get("http://" + n.addr + "/readyz"); err == nil && r.StatusCode == 200 {
			return n
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("node %s did not become ready", n.addr)
	return nil
}

func (n *node) post(t *testing.T, path, idem string, body any) map[string]any {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", "http://"+n.addr+path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+apiKey)
	req.Header.Set("Content-Type", "application/json")
	if idem != "" {
		req.Header.Set("Idempotency-Key", idem)
	}
	resp, err := n.api.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	if resp.StatusCode >= 300 {
		t.Fatalf("POST %s: %d %v", path, resp.StatusCode, out)
	}
	return out
}

// serialCard is one physical card reachable from several bridges: it
// answers one APDU at a time.
type serialCard struct {
	mu sync.Mutex
	c  desfire.Transport
}

func (s *serialCard) Transmit(ctx context.Context, a []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.c.Transmit(ctx, a)
}

// twoNodes builds relayd and starts two nodes on one PostgreSQL schema
// and one Redis, with one shared key file; it returns them with the card
// profile and the keys.
func twoNodes(t *testing.T) (a, b *node, p profile.Profile, kp keys.Provider) {
	t.Helper()
	dbURL := testbackend.PostgresSchema(t)
	testenv.RedisURL(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "relayd")
	if out, err := exec.Command("go", "build", "-o", bin, "../../server/cmd/relayd").CombinedOutput(); err != nil {
		t.Fatalf("build relayd: %v\n%s", err, out)
	}
	p = profile.AN12113()
	f, _ := keys.DevFile(nil, p.AID)
	f.Dev = false // shared "production-like" key file for both nodes
	keyFile := filepath.Join(dir, "keys.json")
	if err := keys.WriteFile(keyFile, f); err != nil {
		t.Fatal(err)
	}
	a = startNode(t, bin, filepath.Join(dir, "a"), keyFile, dbURL)
	b = startNode(t, bin, filepath.Join(dir, "b"), keyFile, dbURL)
	kp, err := keys.New(f)
	if err != nil {
		t.Fatal(err)
	}
	return a, b, p, kp
}

func TestTwoNodesOneCredit(t *testing.T) {
	a, b, p, kp := twoNodes(t)
	card := testcard.Issue(t, p, kp, uid, 0)
	shared := &serialCard{c: bridge.Sim{Card: card}}

	// The operator retries the create on the other node: same top-up.
	tu := a.post(t, "/v1/topups", "order-1", map[string]any{"amount": 400, "currency": "EUR"})
	again := b.post(t, "/v1/topups", "order-1", map[string]any{"amount": 400, "currency": "EUR"})
	if again["id"] != tu["id"] {
		t.Fatalf("two top-ups for one idempotency key: %v %v", tu["id"], again["id"])
	}
	const perNode = 4
	type run struct {
		node *node
		tok  string
	}
	// A new token revokes the top-up's unused ones, so each bridge opens
	// its session (the server consumes the token at the upgrade) before the
	// next token is minted; every bridge then holds its hello at a gate that
	// opens once all are connected, so the sessions still race.
	gate := make(chan struct{})
	var wg sync.WaitGroup
	var runs []run
	results := make([]string, 2*perNode)
	for i := 0; i < perNode; i++ {
		for _, n := range []*node{a, b} {
			tk := n.post(t, "/v1/topups/"+tu["id"].(string)+"/bridge-tokens", "", nil)
			r := run{n, tk["bridge_token"].(string)}
			runs = append(runs, r)
			upgraded := make(chan struct{})
			client := gatedClient(upgraded, gate)
			wg.Add(1)
			go func(i int, r run) {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				rep, err := bridge.Run(ctx, bridge.Options{URL: "ws://" + r.node.addr + "/v1/bridge", Token: r.tok, Batch: true, HTTPClient: client}, shared, bridge.CardInfo{UID: uid})
				if rep != nil {
					results[i] = rep.Result.Status
					if rep.Result.Error != nil {
						results[i] += "/" + rep.Result.Error.Code
					}
				} else if err != nil {
					results[i] = "error: " + err.Error()
				}
			}(len(runs)-1, r)
			select {
			case <-upgraded:
			case <-time.After(10 * time.Second):
				t.Fatal("bridge did not connect")
			}
		}
	}
	close(gate)
	wg.Wait()
	card.Tap()
	bal, err := cardscript.Balance(context.Background(), card, cardscript.BalanceParams{Profile: p, UID: uid,
		Key: func(ctx context.Context, no, ver byte) ([]byte, error) {
			return kp.CardKey(ctx, keys.Ref{AID: p.AID, KeyNo: no, Version: ver}, uid)
		}})
	if err != nil {
		t.Fatal(err)
	}
	if bal.Value != 400 || len(bal.TopUps) != 1 {
		t.Fatalf("card holds %d with %d top-up records after %v", bal.Value, len(bal.TopUps), results)
	}
	t.Logf("%d bridges on 2 nodes: %v; card credited once (%d)", len(runs), results, bal.Value)
}

// gatedClient dials plain TCP connections whose first write (the upgrade
// request) goes out at once; the next write (the bridge's hello, sent once
// the server accepted the token) closes upgraded and waits for gate.
func gatedClient(upgraded, gate chan struct{}) *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &gatedConn{Conn: c, upgraded: upgraded, gate: gate}, nil
	}}}
}

type gatedConn struct {
	net.Conn
	upgraded, gate chan struct{}
	writes         int
}

func (c *gatedConn) Write(p []byte) (int, error) {
	c.writes++
	if c.writes == 2 {
		close(c.upgraded)
		<-c.gate
	}
	return c.Conn.Write(p)
}
