// Command load drives many simulated bridges against one relay server over
// loopback WebSocket and prints the figures docs/BENCHMARKS.md publishes:
// top-ups per second, tap-to-result latency percentiles, exchanges per
// top-up, CPU seconds per 1,000 top-ups, the server's own time per
// exchange and, with -idle, RSS per open session.
//
// By default the server runs in a child process (this binary with -serve),
// so server CPU and RSS are measured apart from the load generator's; the
// CPU of named service processes (PostgreSQL, Redis) is reported too.
// -split=false runs both in one process, as the first figures were taken.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/desfire-relay/relay/desfire/personalize"
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

// ledgerStats counts the server's database work; the child serves it at
// /loadstats for the parent's headline.
var ledgerStats = &ledger.Stats{}

type options struct {
	backend, profile string
	workers          int
	dur, oneWay      time.Duration
	batch            bool
	idle             int
	split            bool
	services         []string
	cpuProfile       string
	memProfile       string
	rate             float64
}

func main() {
	var o options
	flag.StringVar(&o.backend, "backend", "embedded", "embedded (SQLite, in-process locks) or shared (REDIS_URL, DATABASE_URL)")
	flag.StringVar(&o.profile, "profile", "an12113-ev2", "card profile (an12113-ev2 or an12113-ev1)")
	flag.IntVar(&o.workers, "c", 32, "concurrent bridges (one card each)")
	flag.DurationVar(&o.dur, "d", 10*time.Second, "how long to run")
	flag.DurationVar(&o.oneWay, "latency", 0, "injected one-way latency per bridge message")
	flag.BoolVar(&o.batch, "batch", true, "bridges announce the batch feature")
	flag.Float64Var(&o.rate, "rate", 0, "paced load: start this many top-ups per second in total, spread over the workers (0: each worker runs back to back)")
	flag.IntVar(&o.idle, "idle", 0, "instead of top-ups: open this many idle sessions and report RSS per session")
	flag.BoolVar(&o.split, "split", true, "run the server in a child process and measure it apart from the generator")
	services := flag.String("services", "postgres,redis-server", "process names whose CPU is reported as services_cpu")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the server to this file")
	flag.StringVar(&o.memProfile, "memprofile", "", "write an allocation profile of the server (-split) to this file")
	serve := flag.Bool("serve", false, "internal: run only the server (child of -split), print its URL, stop when stdin closes")
	keyFile := flag.String("keys", "", "internal: key file for -serve")
	flag.Parse()
	if *services != "" {
		o.services = strings.Split(*services, ",")
	}
	var err error
	if *serve {
		err = serveChild(o, *keyFile)
	} else {
		err = run(o)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

// newServer builds the relay over the chosen backend with the key file's
// keys; close releases the backend.
func newServer(ctx context.Context, o options, kp keys.Provider) (*server.Server, func(), error) {
	p, err := profile.DefaultSet().Get(o.profile)
	if err != nil {
		return nil, nil, err
	}
	var l ledger.Ledger
	var lk lock.Locker
	cleanup := func() {}
	switch o.backend {
	case "embedded":
		dir, err := os.MkdirTemp("", "load")
		if err != nil {
			return nil, nil, err
		}
		if l, err = sqlite.Open(ctx, filepath.Join(dir, "ledger.db"), ledger.Config{Stats: ledgerStats}); err != nil {
			os.RemoveAll(dir)
			return nil, nil, err
		}
		cleanup = func() { os.RemoveAll(dir) }
		lk = lock.NewMemory()
	case "shared":
		if l, err = postgres.Open(ctx, os.Getenv("DATABASE_URL"), ledger.Config{Stats: ledgerStats}); err != nil {
			return nil, nil, err
		}
		rc, err := lock.NewRedisClient(os.Getenv("REDIS_URL"))
		if err != nil {
			return nil, nil, err
		}
		lk = lock.NewRedis(rc, lock.RedisConfig{Prefix: fmt.Sprintf("load:%d:", time.Now().UnixNano())})
	default:
		return nil, nil, fmt.Errorf("backend %q", o.backend)
	}
	m := server.NewMetrics()
	svc, err := transaction.New(transaction.Config{Ledger: l, Locker: lk, Keys: kp, Profile: p.Name, Metrics: m})
	if err != nil {
		l.Close()
		cleanup()
		return nil, nil, err
	}
	srv := server.New(server.Options{Service: svc, APIKeyHashes: []string{config.HashAPIKey(apiKey)}, MaxSessions: 100000,
		Limits:          server.Limits{AddrRate: -1, KeyRate: -1, AuthFailRate: -1, BridgesPerAddr: 1 << 20},
		ExchangeTimeout: 10 * time.Second, SessionTimeout: 10 * time.Minute, Metrics: m})
	return srv, func() { l.Close(); cleanup() }, nil
}

// serveChild is the -serve mode: the server alone, on a loopback port.
func serveChild(o options, keyFile string) error {
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if o.memProfile != "" {
		defer func() {
			if f, err := os.Create(o.memProfile); err == nil {
				_ = pprof.Lookup("allocs").WriteTo(f, 0)
				f.Close()
			}
		}()
	}
	kp, err := keys.LoadFile(keyFile)
	if err != nil {
		return err
	}
	srv, closeBackend, err := newServer(context.Background(), o, kp)
	if err != nil {
		return err
	}
	defer closeBackend()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: withMetrics(srv)}
	go hs.Serve(ln)
	fmt.Printf("LISTEN http://%s\n", ln.Addr())
	io.Copy(io.Discard, os.Stdin) // the parent closes stdin to stop us
	hs.Close()
	return nil
}

// target is the server under load: its URL and, when it is a child
// process, its pid for CPU and RSS.
type target struct {
	base string
	pid  int
	stop func()
}

func startTarget(ctx context.Context, o options, keyFile string, kp keys.Provider) (*target, error) {
	if !o.split {
		if o.cpuProfile != "" {
			f, err := os.Create(o.cpuProfile)
			if err != nil {
				return nil, err
			}
			pprof.StartCPUProfile(f)
		}
		srv, closeBackend, err := newServer(ctx, o, kp)
		if err != nil {
			return nil, err
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		hs := &http.Server{Handler: withMetrics(srv)}
		go hs.Serve(ln)
		return &target{base: "http://" + ln.Addr().String(), pid: os.Getpid(), stop: func() {
			hs.Close()
			closeBackend()
			pprof.StopCPUProfile()
		}}, nil
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{"-serve", "-keys", keyFile, "-backend", o.backend, "-profile", o.profile}
	if o.cpuProfile != "" {
		args = append(args, "-cpuprofile", o.cpuProfile)
	}
	if o.memProfile != "" {
		args = append(args, "-memprofile", o.memProfile)
	}
	cmd := exec.Command(self, args...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "LISTEN ") {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("server child did not start: %q %v", line, err)
	}
	return &target{base: strings.TrimSpace(strings.TrimPrefix(line, "LISTEN ")), pid: cmd.Process.Pid, stop: func() {
		stdin.Close()
		cmd.Wait()
	}}, nil
}

func run(o options) error {
	ctx := context.Background()
	p, err := profile.DefaultSet().Get(o.profile)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "load-keys")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	f, err := keys.DevFile(nil, p.AID)
	if err != nil {
		return err
	}
	keyFile := filepath.Join(dir, "keys.json")
	if err := keys.WriteFile(keyFile, f); err != nil {
		return err
	}
	kp, err := keys.New(f)
	if err != nil {
		return err
	}
	tg, err := startTarget(ctx, o, keyFile, kp)
	if err != nil {
		return err
	}
	defer tg.stop()
	wsURL := "ws" + strings.TrimPrefix(tg.base, "http") + "/v1/bridge"
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024}}
	mode := "split (server in a child process)"
	if !o.split {
		mode = "one process (server and generator together)"
	}
	fmt.Printf("backend=%s profile=%s batch=%v latency=%s workers=%d go=%s cpus=%d mode=%s\n",
		o.backend, p.Name, o.batch, o.oneWay, o.workers, runtime.Version(), runtime.NumCPU(), mode)
	if o.backend == "shared" {
		fmt.Printf("postgresql: %s\n", pgDurability(ctx))
	}
	if o.idle > 0 {
		return idleSessions(ctx, client, tg, wsURL, o.idle, o.split)
	}

	cards := make([]*simcard.Card, o.workers)
	for i := range cards {
		uid := []byte{0x04, byte(i >> 16), byte(i >> 8), byte(i), 0x10, 0x20, 0x30}
		c, err := personalize.IssueSimulated(ctx, p.Layout(), issue.CardKeys(p, kp, uid), uid, 0)
		if err != nil {
			return err
		}
		cards[i] = c
	}
	var (
		mu        sync.Mutex
		lat       []time.Duration
		exchanges int64
		okN, errN atomic.Int64
		seq       atomic.Int64
	)
	gap0, err := scrapeGap(client, tg.base)
	if err != nil {
		return err
	}
	db0, err := scrapeStats(client, tg.base)
	if err != nil {
		return err
	}
	wal0 := walSyncs(ctx, o)
	var sp serviceProcs
	if o.backend == "shared" {
		sp = findServices(ctx)
	}
	genCPU0, srvCPU0, svcCPU0 := selfCPU(), procCPU(tg.pid), namedCPU(o.services)
	pgCPU0, rdCPU0 := sp.cpu()
	start := time.Now()
	deadline := start.Add(o.dur)
	starts, late := pace(o.rate, start, deadline)
	var wg sync.WaitGroup
	for w := 0; w < o.workers; w++ {
		wg.Add(1)
		go func(card *simcard.Card) {
			defer wg.Done()
			for time.Now().Before(deadline) {
				if starts != nil {
					if _, ok := <-starts; !ok {
						return
					}
				}
				tok, err := createTopUp(client, tg.base, fmt.Sprintf("%d-%d", start.UnixNano(), seq.Add(1)))
				if err != nil {
					errN.Add(1)
					continue
				}
				card.Tap()
				t0 := time.Now()
				rep, err := bridge.Run(ctx, bridge.Options{URL: wsURL, Token: tok, Batch: o.batch, OneWay: o.oneWay, HTTPClient: client},
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
	genCPU, srvCPU, svcCPU := selfCPU()-genCPU0, procCPU(tg.pid)-srvCPU0, namedCPU(o.services)-svcCPU0
	pgCPU, rdCPU := sp.cpu()
	pgCPU, rdCPU = pgCPU-pgCPU0, rdCPU-rdCPU0
	gap1, err := scrapeGap(client, tg.base)
	if err != nil {
		return err
	}
	db1, err := scrapeStats(client, tg.base)
	if err != nil {
		return err
	}
	wal1 := walSyncs(ctx, o)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(q float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[int(q*float64(len(lat)-1))].Round(10 * time.Microsecond)
	}
	n := float64(max(okN.Load(), 1))
	per1000 := func(d time.Duration) float64 { return d.Seconds() * 1000 / n }
	fmt.Printf("topups=%d errors=%d duration=%s rate=%.1f/s p50=%s p95=%s p99=%s exchanges/topup=%.2f\n",
		okN.Load(), errN.Load(), elapsed.Round(time.Millisecond), float64(okN.Load())/elapsed.Seconds(),
		pct(0.50), pct(0.95), pct(0.99), float64(exchanges)/n)
	if o.rate > 0 {
		fmt.Printf("paced: configured_rate=%.1f/s achieved_rate=%.1f/s late_starts=%d (a start slot found every worker busy)\n",
			o.rate, float64(okN.Load()+errN.Load())/elapsed.Seconds(), late.Load())
	}
	if o.split {
		fmt.Printf("cpu_s_per_1000: server=%.2f generator=%.2f services(%s)=%.2f\n",
			per1000(srvCPU), per1000(genCPU), strings.Join(o.services, ","), per1000(svcCPU))
	} else {
		fmt.Printf("cpu_s_per_1000: server+generator=%.2f services(%s)=%.2f\n",
			per1000(genCPU), strings.Join(o.services, ","), per1000(svcCPU))
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / n }
	if o.split {
		if sp.pg > 0 && sp.redis > 0 {
			// Only this run's PostgreSQL and Redis, not every process of
			// that name on the machine.
			svc := pgCPU + rdCPU
			fmt.Printf("cpu_ms_per_topup: server=%.2f services=%.2f (postgres=%.2f redis=%.2f) server+services=%.2f generator=%.2f\n",
				ms(srvCPU), ms(svc), ms(pgCPU), ms(rdCPU), ms(srvCPU+svc), ms(genCPU))
		} else if o.backend == "embedded" {
			fmt.Printf("cpu_ms_per_topup: server=%.2f (ledger included) generator=%.2f\n", ms(srvCPU), ms(genCPU))
		} else {
			fmt.Printf("cpu_ms_per_topup: server=%.2f services=%.2f (every process named %s) server+services=%.2f generator=%.2f\n",
				ms(srvCPU), ms(svcCPU), strings.Join(o.services, ","), ms(srvCPU+svcCPU), ms(genCPU))
		}
	}
	// Every session is one top-up; the counts include the create.
	d := db1.StatsSnapshot.Sub(db0.StatsSnapshot)
	per := func(v int64) float64 { return float64(v) / float64(max(okN.Load()+errN.Load(), 1)) }
	line := fmt.Sprintf("db_per_topup: statements=%.2f round_trips=%.2f commits=%.2f durable_commits=%.2f",
		per(d.Statements), per(d.RoundTrips), per(d.Commits), per(d.Commits-d.Relaxed))
	if o.backend == "shared" && wal0 >= 0 && wal1 >= 0 {
		line += fmt.Sprintf(" pg_wal_syncs=%.2f", per(wal1-wal0))
	}
	if o.backend == "embedded" {
		line += " (SQLite WAL, synchronous=FULL: one fsync per durable commit, plus checkpoints)"
	}
	fmt.Println(line)
	if o.split {
		fmt.Printf("server_allocs_per_topup=%.0f\n", per(int64(db1.Mallocs-db0.Mallocs)))
	}
	g := gap1.minus(gap0)
	fmt.Printf("server_gap (server time between exchanges): n=%d mean=%s p50<=%s p99<=%s\n",
		g.count, g.mean(), g.quantile(0.50), g.quantile(0.99))
	return nil
}

// pace hands out top-up start slots at rate per second from start until
// deadline (open loop: the schedule does not wait for answers). A slot no
// worker is free to take within one interval is counted in late and
// dropped, so the offered rate is the configured one until the workers are
// saturated. With rate 0 it returns a nil channel: no pacing.
func pace(rate float64, start, deadline time.Time) (<-chan struct{}, *atomic.Int64) {
	late := new(atomic.Int64)
	if rate <= 0 {
		return nil, late
	}
	interval := time.Duration(float64(time.Second) / rate)
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		for next := start; next.Before(deadline); next = next.Add(interval) {
			time.Sleep(time.Until(next))
			select {
			case ch <- struct{}{}:
			case <-time.After(interval):
				late.Add(1)
			}
		}
	}()
	return ch, late
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
// and reports the growth of the server's RSS per session (and the
// generator's, when they are apart).
func idleSessions(ctx context.Context, c *http.Client, tg *target, wsURL string, n int, split bool) error {
	var toks []string
	for i := 0; i < n; i++ {
		req, _ := http.NewRequest("POST", tg.base+"/v1/sessions", strings.NewReader(`{"kind":"balance"}`))
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
	srv0, gen0 := procRSS(tg.pid), procRSS(os.Getpid())
	conns := make([]*websocket.Conn, 0, n)
	defer func() {
		for _, ws := range conns {
			ws.CloseNow()
		}
	}()
	for _, tok := range toks {
		ws, _, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{Subprotocols: []string{protocol.Subprotocol},
			HTTPHeader: http.Header{"Authorization": {"Bearer " + tok}}, HTTPClient: c})
		if err != nil {
			return fmt.Errorf("session %d: %w", len(conns), err)
		}
		ws.Write(ctx, websocket.MessageText, []byte(`{"type":"hello","bridge":{"name":"load"},"features":["batch"]}`))
		conns = append(conns, ws)
	}
	// Every session must be open on the server, waiting for its card.
	for deadline := time.Now().Add(time.Minute); ; {
		if a, err := scrapeGauge(c, tg.base, "relay_sessions_active"); err == nil && int(a) >= n {
			break
		}
		if time.Now().After(deadline) {
			return errors.New("the server did not report every session active within a minute")
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(time.Second)
	runtime.GC()
	srv1, gen1 := procRSS(tg.pid), procRSS(os.Getpid())
	if split {
		fmt.Printf("idle sessions=%d server_rss_before=%dMiB server_rss_after=%dMiB server_rss_per_session=%.1fKiB generator_rss_per_session=%.1fKiB\n",
			n, srv0>>20, srv1>>20, float64(srv1-srv0)/1024/float64(n), float64(gen1-gen0)/1024/float64(n))
	} else {
		fmt.Printf("idle sessions=%d rss_before=%dMiB rss_after=%dMiB rss_per_session=%.1fKiB (server and generator in one process)\n",
			n, srv0>>20, srv1>>20, float64(srv1-srv0)/1024/float64(n))
	}
	return nil
}

// selfCPU is this process's user+system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// clkTck is USER_HZ, the unit of /proc/<pid>/stat times (100 on Linux).
const clkTck = 100

// procCPU is a process's user+system CPU time from /proc (0 if unreadable).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses and may
	// contain spaces: state is field 3, utime 14, stime 15.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / clkTck
}

// namedCPU sums procCPU over every process whose command name is in names.
func namedCPU(names []string) time.Duration {
	if len(names) == 0 {
		return 0
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	var sum time.Duration
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil {
			continue
		}
		c := strings.TrimSpace(string(comm))
		for _, n := range names {
			if c == n {
				sum += procCPU(pid)
			}
		}
	}
	return sum
}

// procRSS is a process's resident set size in bytes.
func procRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/statm", pid))
	if err != nil {
		return 0
	}
	var size, res int64
	fmt.Sscan(string(b), &size, &res)
	return res * int64(os.Getpagesize())
}

func scrape(c *http.Client, base string) (map[string]*dto.MetricFamily, error) {
	resp, err := c.Get(base + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(resp.Body)
}

func scrapeGauge(c *http.Client, base, name string) (float64, error) {
	fams, err := scrape(c, base)
	if err != nil {
		return 0, err
	}
	f := fams[name]
	if f == nil || len(f.Metric) == 0 {
		return 0, fmt.Errorf("no %s", name)
	}
	return f.Metric[0].GetGauge().GetValue(), nil
}

// hist is a snapshot of a cumulative Prometheus histogram.
type hist struct {
	count  uint64
	sum    float64
	bounds []float64
	cum    []uint64
}

func scrapeGap(c *http.Client, base string) (hist, error) {
	fams, err := scrape(c, base)
	if err != nil {
		return hist{}, fmt.Errorf("scrape metrics: %w", err)
	}
	f := fams["relay_server_gap_seconds"]
	if f == nil || len(f.Metric) == 0 {
		return hist{}, errors.New("server exports no relay_server_gap_seconds")
	}
	h := f.Metric[0].GetHistogram()
	out := hist{count: h.GetSampleCount(), sum: h.GetSampleSum()}
	for _, b := range h.GetBucket() {
		out.bounds = append(out.bounds, b.GetUpperBound())
		out.cum = append(out.cum, b.GetCumulativeCount())
	}
	return out, nil
}

// minus is the histogram of the observations between two snapshots.
func (h hist) minus(o hist) hist {
	d := hist{count: h.count - o.count, sum: h.sum - o.sum, bounds: h.bounds, cum: make([]uint64, len(h.cum))}
	for i := range h.cum {
		d.cum[i] = h.cum[i]
		if i < len(o.cum) {
			d.cum[i] -= o.cum[i]
		}
	}
	return d
}

func (h hist) mean() time.Duration {
	if h.count == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.count) * float64(time.Second)).Round(time.Microsecond)
}

// quantile is the upper bound of the bucket holding quantile q: the true
// value is at most this.
func (h hist) quantile(q float64) string {
	if h.count == 0 {
		return "-"
	}
	want := uint64(math.Ceil(q * float64(h.count)))
	for i, c := range h.cum {
		if c >= want {
			if math.IsInf(h.bounds[i], 1) {
				return "+Inf"
			}
			return time.Duration(h.bounds[i] * float64(time.Second)).Round(time.Microsecond).String()
		}
	}
	return "+Inf"
}

// loadStats is what the server under load counts: its ledger's database
// work and its heap allocations.
type loadStats struct {
	ledger.StatsSnapshot
	Mallocs uint64
}

// scrapeStats reads the server's counters.
func scrapeStats(c *http.Client, base string) (loadStats, error) {
	var st loadStats
	resp, err := c.Get(base + "/loadstats")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// walSyncs is PostgreSQL's count of WAL fsyncs (pg_stat_wal, 14+), or -1.
func walSyncs(ctx context.Context, o options) int64 {
	if o.backend != "shared" {
		return -1
	}
	c, err := pgx.Connect(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		return -1
	}
	defer c.Close(ctx)
	var n int64
	if err := c.QueryRow(ctx, "SELECT wal_sync FROM pg_stat_wal").Scan(&n); err != nil {
		return -1
	}
	return n
}

// pgDurability reports the server's fsync and synchronous_commit.
func pgDurability(ctx context.Context) string {
	c, err := pgx.Connect(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		return "unknown"
	}
	defer c.Close(ctx)
	var fsync, sc string
	if c.QueryRow(ctx, "SHOW fsync").Scan(&fsync) != nil || c.QueryRow(ctx, "SHOW synchronous_commit").Scan(&sc) != nil {
		return "unknown"
	}
	return "fsync=" + fsync + " synchronous_commit=" + sc
}

// withMetrics serves the public handler and, at /metrics, the admin one:
// the load tool scrapes the server it drives on one address.
func withMetrics(srv *server.Server) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", srv.AdminHandler())
	mux.HandleFunc("/loadstats", func(w http.ResponseWriter, _ *http.Request) {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		_ = json.NewEncoder(w).Encode(loadStats{StatsSnapshot: ledgerStats.Snapshot(), Mallocs: ms.Mallocs})
	})
	mux.Handle("/", srv.Handler())
	return mux
}
