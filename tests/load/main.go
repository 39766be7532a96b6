// Command load drives many simulated bridges against one relay server over
// loopback WebSocket and prints the figures docs/BENCHMARKS.md publishes:
// top-ups per second, tap-to-result latency percentiles, exchanges per
// top-up, CPU seconds per 1,000 top-ups and, with -idle, RSS per open
// session. The server runs in this process (embedded default, or Redis +
// PostgreSQL from REDIS_URL / DATABASE_URL with -backend shared), so CPU
// and memory include the load generator: the figures are upper bounds.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"

	"github.com/desfire-relay/relay/desfire/simcard"
	"github.com/desfire-relay/relay/mobile-bridge/bridge"
	"github.com/desfire-relay/relay/protocol"
	"github.com/desfire-relay/relay/server"
	"github.com/desfire-relay/relay/server/config"
	"github.com/desfire-relay/relay/transaction"
	"github.com/desfire-relay/relay/transaction/issue"
	"github.com/desfire-relay/relay/transaction/keys"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/ledger/postgres"
	"github.com/desfire-relay/relay/transaction/ledger/sqlite"
	"github.com/desfire-relay/relay/transaction/lock"
	"github.com/desfire-relay/relay/transaction/profile"
)

const apiKey = "load-key"

func main() {
	backend := flag.String("backend", "embedded", "embedded (SQLite, in-process locks) or shared (REDIS_URL, DATABASE_URL)")
	profName := flag.String("profile", "an12113-ev2", "card profile (an12113-ev2 or an12113-ev1)")
	workers := flag.Int("c", 32, "concurrent bridges (one card each)")
	dur := flag.Duration("d", 10*time.Second, "how long to run")
	oneWay := flag.Duration("latency", 0, "injected one-way latency per bridge message")
	batch := flag.Bool("batch", true, "bridges announce the batch feature")
	idle := flag.Int("idle", 0, "instead of top-ups: open this many idle sessions and report RSS per session")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the run to this file")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "load:", err)
			os.Exit(1)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	if err := run(*backend, *profName, *workers, *dur, *oneWay, *batch, *idle); err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

func run(backend, profName string, workers int, dur, oneWay time.Duration, batch bool, idle int) error {
	ctx := context.Background()
	p, err := profile.DefaultSet().Get(profName)
	if err != nil {
		return err
	}
	var l ledger.Ledger
	var lk lock.Locker
	switch backend {
	case "embedded":
		dir, _ := os.MkdirTemp("", "load")
		defer os.RemoveAll(dir)
		if l, err = sqlite.Open(ctx, filepath.Join(dir, "ledger.db"), ledger.Config{}); err != nil {
			return err
		}
		lk = lock.NewMemory()
	case "shared":
		if l, err = postgres.Open(ctx, os.Getenv("DATABASE_URL"), ledger.Config{}); err != nil {
			return err
		}
		rc, err := lock.NewRedisClient(os.Getenv("REDIS_URL"))
		if err != nil {
			return err
		}
		lk = lock.NewRedis(rc, lock.RedisConfig{Prefix: fmt.Sprintf("load:%d:", time.Now().UnixNano())})
	default:
		return fmt.Errorf("backend %q", backend)
	}
	defer l.Close()
	f, err := keys.DevFile(nil, p.AID)
	if err != nil {
		return err
	}
	kp, _ := keys.New(f)
	svc, err := transaction.New(transaction.Config{Ledger: l, Locker: lk, Keys: kp, Profile: p.Name})
	if err != nil {
		return err
	}
	srv := server.New(server.Options{Service: svc, APIKeyHashes: []string{config.HashAPIKey(apiKey)}, MaxSessions: 100000,
		ExchangeTimeout: 10 * time.Second, SessionTimeout: 10 * time.Minute})
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	wsURL := "ws" + strings.TrimPrefix(hs.URL, "http") + "/v1/bridge"
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024}}

	if idle > 0 {
		return idleSessions(ctx, client, hs.URL, wsURL, idle)
	}

	cards := make([]*simcard.Card, workers)
	for i := range cards {
		uid := []byte{0x04, byte(i >> 16), byte(i >> 8), byte(i), 0x10, 0x20, 0x30}
		c, err := simcard.New(simcard.Options{UID: uid})
		if err != nil {
			return err
		}
		if err := issue.Issue(ctx, c, p, kp, uid, 0, nil); err != nil {
			return err
		}
		c.Tap()
		cards[i] = c
	}
	var (
		mu        sync.Mutex
		lat       []time.Duration
		exchanges int64
		okN, errN atomic.Int64
		seq       atomic.Int64
	)
	cpu0 := cpuTime()
	start := time.Now()
	deadline := start.Add(dur)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(card *simcard.Card) {
			defer wg.Done()
			for time.Now().Before(deadline) {
				tok, err := createTopUp(client, hs.URL, fmt.Sprintf("%d-%d", start.UnixNano(), seq.Add(1)))
				if err != nil {
					errN.Add(1)
					continue
				}
				card.Tap()
				t0 := time.Now()
				rep, err := bridge.Run(ctx, bridge.Options{URL: wsURL, Token: tok, Batch: batch, OneWay: oneWay, HTTPClient: client},
					bridge.Sim{Card: card}, bridge.CardInfo{UID: card.UID()})
				d := time.Since(t0)
				if err != nil || rep.Result.Status != "applied" {
					errN.Add(1)
					continue
				}
				okN.Add(1)
				atomic.AddInt64(&exchanges, int64(rep.Exchanges))
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}
		}(cards[w])
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu := cpuTime() - cpu0
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(q float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[int(q*float64(len(lat)-1))].Round(10 * time.Microsecond)
	}
	n := okN.Load()
	fmt.Printf("backend=%s profile=%s batch=%v latency=%s workers=%d duration=%s go=%s cpus=%d\n",
		backend, p.Name, batch, oneWay, workers, elapsed.Round(time.Millisecond), runtime.Version(), runtime.NumCPU())
	fmt.Printf("topups=%d errors=%d rate=%.1f/s p50=%s p95=%s p99=%s exchanges/topup=%.2f cpu_s_per_1000=%.2f\n",
		n, errN.Load(), float64(n)/elapsed.Seconds(), pct(0.50), pct(0.95), pct(0.99),
		float64(exchanges)/float64(max(n, 1)), cpu.Seconds()*1000/float64(max(n, 1)))
	return nil
}

func createTopUp(c *http.Client, base, key string) (string, error) {
	req, _ := http.NewRequest("POST", base+"/v1/topups", bytes.NewReader([]byte(`{"amount":100,"currency":"EUR"}`)))
	req.Header.Set("Authorization", "Bearer "+apiKey)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out struct {
		Token string `json:"bridge_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.Token == "" {
		return "", fmt.Errorf("create: %d %v", resp.StatusCode, err)
	}
	return out.Token, nil
}

// idleSessions opens n bridge sessions that say hello and wait for a card,
// and reports the growth of the process RSS per session.
func idleSessions(ctx context.Context, c *http.Client, base, wsURL string, n int) error {
	var toks []string
	for i := 0; i < n; i++ {
		req, _ := http.NewRequest("POST", base+"/v1/sessions", strings.NewReader(`{"kind":"balance"}`))
		req.Header.Set("Authorization", "Bearer "+apiKey)
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		var out struct {
			Token string `json:"bridge_token"`
		}
		json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		toks = append(toks, out.Token)
	}
	runtime.GC()
	before := rss()
	conns := make([]*websocket.Conn, 0, n)
	for _, tok := range toks {
		ws, _, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{Subprotocols: []string{protocol.Subprotocol},
			HTTPHeader: http.Header{"Authorization": {"Bearer " + tok}}, HTTPClient: c})
		if err != nil {
			return fmt.Errorf("session %d: %w", len(conns), err)
		}
		ws.Write(ctx, websocket.MessageText, []byte(`{"type":"hello","bridge":{"name":"load"},"features":["batch"]}`))
		conns = append(conns, ws)
	}
	time.Sleep(2 * time.Second)
	runtime.GC()
	after := rss()
	fmt.Printf("idle sessions=%d rss_before=%dMiB rss_after=%dMiB rss_per_session=%.1fKiB (server and client in one process)\n",
		n, before>>20, after>>20, float64(after-before)/1024/float64(n))
	for _, ws := range conns {
		ws.CloseNow()
	}
	return nil
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func rss() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	var size, res int64
	fmt.Sscan(string(b), &size, &res)
	return res * int64(os.Getpagesize())
}
