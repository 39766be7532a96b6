package faults

import (
	"context"
	crand "crypto/rand"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/desfire-relay/relay/internal/testbackend"
	"github.com/desfire-relay/relay/internal/testenv"
	"github.com/desfire-relay/relay/internal/testserver"
	"github.com/desfire-relay/relay/mobile-bridge/bridge"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/ledger/postgres"
	"github.com/desfire-relay/relay/transaction/lock"
	"github.com/desfire-relay/relay/transaction/profile"
)

var (
	fullFlag  = flag.Bool("faults.full", false, "run the full fault matrix (same as FAULTS=full)")
	seedFlag  = flag.Uint64("faults.seed", 0, "seed of the random fault points (0: FAULTS_SEED or the clock)")
	killsFlag = flag.Int("faults.kills", 0, "number of relayd SIGKILLs (0: 3, or 50 in full mode)")
)

// summaryLine is printed by TestMain after the tests, outside any test, so
// that it reaches `go test -v` output and the CI log (scripts/testsummary
// keeps package-level output) even when the matrix passes.
var summaryLine string

func TestMain(m *testing.M) {
	code := m.Run()
	if buildBin != "" {
		os.RemoveAll(filepath.Dir(buildBin))
	}
	if summaryLine != "" {
		fmt.Println(summaryLine)
	}
	os.Exit(code)
}

func fullMode() bool { return *fullFlag || os.Getenv("FAULTS") == "full" }

func seed() uint64 {
	if *seedFlag != 0 {
		return *seedFlag
	}
	if s, err := strconv.ParseUint(os.Getenv("FAULTS_SEED"), 10, 64); err == nil && s != 0 {
		return s
	}
	return uint64(time.Now().UnixNano())
}

// setup is one card profile with batching on or off.
type setup struct {
	p     profile.Profile
	batch bool
}

func (c setup) String() string { return fmt.Sprintf("%s/batch=%v", c.p.Name, c.batch) }

func allConfigs() []setup {
	var out []setup
	for _, p := range []profile.Profile{profile.AN12113(), profile.AN12113EV1()} {
		for _, b := range []bool{true, false} {
			out = append(out, setup{p, b})
		}
	}
	return out
}

// TestFaultMatrix runs every fault family and prints the one-line
// summary; any double credit, lost top-up or unresolved in_doubt fails it.
func TestFaultMatrix(t *testing.T) {
	full := fullMode()
	sd := seed()
	mode := "reduced"
	if full {
		mode = "full"
	}
	t.Logf("faults: mode=%s seed=%d (repeat with -faults.seed=%d)", mode, sd, sd)
	m := &matrix{}
	if _, err := crand.Read(m.salt[:]); err != nil {
		t.Fatal(err)
	}
	rng := func(family uint64) *rand.Rand { return rand.New(rand.NewPCG(sd, family)) }

	t.Run("tear", func(t *testing.T) { m.tearFamily(t, full) })
	t.Run("websocket", func(t *testing.T) { m.websocketFamily(t, full) })
	t.Run("sigkill", func(t *testing.T) { m.sigkillFamily(t, full, rng(3)) })
	t.Run("restart", func(t *testing.T) { m.restartFamilies(t, full, rng(4)) })
	t.Run("async-applied", func(t *testing.T) { m.asyncAppliedFamily(t, full) })

	line := m.summary()
	summaryLine = line
	t.Log(line)
	if m.double+m.lost+m.unresolved > 0 {
		t.Errorf("%s: the last three must be 0 (seed %d)", line, sd)
	}
	if m.unsettled > 0 {
		t.Errorf("%d scenario(s) ended with a top-up that never got applied or a ledger history that disagrees (seed %d)", m.unsettled, sd)
	}
	if m.scenarios == 0 {
		t.Error("no scenario ran")
	}
}

// inProcess starts the real server in-process over backend b for profile
// p and describes it as an endpoint.
func inProcess(t *testing.T, b testbackend.Backend, p profile.Profile, o testserver.Options) *endpoint {
	t.Helper()
	h := testserver.New(t, b, p, o)
	return &endpoint{base: h.HTTP.URL, apiKey: testserver.APIKey, kp: h.Keys, profile: h.Profile}
}

// tearFamily: the card leaves the field after APDU k, for every k of a
// top-up, and right after a durable CommitTransaction whose answer never
// leaves the card.
func (m *matrix) tearFamily(t *testing.T, full bool) {
	cfgs := []setup{{profile.AN12113(), true}}
	backends := testbackend.Backends()[:1] // embedded
	if full {
		cfgs = allConfigs()
		backends = testbackend.Backends()
	}
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			for _, c := range cfgs {
				ep := inProcess(t, b, c.p, testserver.Options{})
				n := m.probeAPDUs(t, ep, c.batch)
				for k := 0; k <= n; k++ {
					m.scenario(t, fmt.Sprintf("%s/tear-after-%d", c, k), ep, c.batch, k%2 == 1, func(s *scene) {
						s.card.RemoveAfter(k)
						s.firstSession(bridge.Sim{Card: s.card})
					})
				}
				for _, viaBalance := range []bool{false, true} {
					m.scenario(t, fmt.Sprintf("%s/tear-after-commit/balance-tap=%v", c, viaBalance), ep, c.batch, viaBalance, func(s *scene) {
						s.card.SetTearAfterCommit(true)
						s.firstSession(bridge.Sim{Card: s.card})
					})
				}
			}
		})
	}
}

// websocketFamily: the bridge drops the WebSocket after each message of
// the session, in each direction, and after running a transceive on the
// card without answering it.
func (m *matrix) websocketFamily(t *testing.T, full bool) {
	cfgs := []setup{{profile.AN12113(), true}, {profile.AN12113EV1(), false}}
	if full {
		cfgs = allConfigs()
	}
	for ci, c := range cfgs {
		ep := inProcess(t, testbackend.Backends()[0], c.p, testserver.Options{})
		probe := m.newScene(t, ep, c.batch)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		tr, err := rawSession(ctx, ep.wsURL(), probe.token, bridge.Sim{Card: probe.card}, probe.uid, c.batch, cut{kind: cutNone})
		cancel()
		if err != nil || tr.result == nil || tr.result.Status != "applied" {
			t.Fatalf("%s: raw probe: %v %+v", c, err, tr.result)
		}
		var cuts []cut
		for i, typ := range tr.server {
			cuts = append(cuts, cut{cutRecv, i + 1})
			if typ == "transceive" {
				cuts = append(cuts, cut{cutExec, i + 1})
			}
		}
		for j := 1; j <= tr.sent; j++ {
			cuts = append(cuts, cut{cutSent, j})
		}
		if !full && ci > 0 {
			// Reduced: every point of the first configuration, the
			// transceive-related ones (exec, sent) of the second.
			var some []cut
			for _, x := range cuts {
				if x.kind != cutRecv {
					some = append(some, x)
				}
			}
			cuts = some
		}
		t.Logf("%s: server messages %v, bridge messages %d: %d cut points", c, tr.server, tr.sent, len(cuts))
		for i, x := range cuts {
			m.scenario(t, fmt.Sprintf("%s/close-%s", c, x), ep, c.batch, i%2 == 1, func(s *scene) {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				tr, err := rawSession(ctx, ep.wsURL(), s.token, bridge.Sim{Card: s.card}, s.uid, c.batch, x)
				switch {
				case tr.cut:
					s.logf("first session: closed at %s after server messages %v", x, tr.server)
				case tr.result != nil:
					s.logf("first session: cut point %s not reached, result %s", x, tr.result.Status)
				default:
					s.logf("first session: cut point %s not reached: %v", x, err)
				}
			})
		}
	}
}

// sigkillFamily: relayd (a real child process on the shared Redis and
// PostgreSQL) is killed with SIGKILL after a random number of APDUs seen
// at the card, restarted on the same address, and the top-up retried.
func (m *matrix) sigkillFamily(t *testing.T, full bool, rng *rand.Rand) {
	kills := *killsFlag
	if kills <= 0 {
		kills = 3
		if full {
			kills = 50
		}
	}
	dbURL := testbackend.PostgresSchema(t)
	redisURL := testenv.RedisURL(t)
	rd := newRelayd(t, dbURL, redisURL)
	probes := map[string]int{} // by setup
	cfgs := allConfigs()
	for i := 0; i < kills; i++ {
		c := cfgs[rng.IntN(len(cfgs))]
		if rd.prof != c.p.Name {
			rd.kill()
			if err := rd.start(c.p.Name); err != nil {
				t.Fatal(err)
			}
		}
		ep := rd.endpoint()
		n, ok := probes[c.String()]
		if !ok {
			n = m.probeAPDUs(t, ep, c.batch)
			probes[c.String()] = n
		}
		k := rng.IntN(n + 1)
		viaBalance := rng.IntN(2) == 0
		m.scenario(t, fmt.Sprintf("kill-%02d/%s/after-%d-apdus/balance-tap=%v", i+1, c, k, viaBalance), ep, c.batch, viaBalance, func(s *scene) {
			h := &hookCard{card: s.card, at: k, fire: func() error { rd.kill(); return nil }}
			s.firstSession(h)
			if !h.didFire() {
				s.logf("kill point not reached")
				return
			}
			if err := rd.start(c.p.Name); err != nil {
				s.t.Fatalf("restart relayd: %v", err)
			}
			s.logf("relayd SIGKILLed after %d APDUs at the card and restarted", k)
		})
	}
	t.Logf("relayd started %d times", rd.starts)
}

// restartFamilies: a private Redis (without persistence: all locks and
// fence counters are lost) and a private PostgreSQL are restarted while a
// top-up session waits between two APDUs, on an in-process server that
// uses them.
func (m *matrix) restartFamilies(t *testing.T, full bool, rng *rand.Rand) {
	rs := startPrivateRedis(t)
	pg := startPrivatePostgres(t)
	backend := testbackend.Backend{Name: "private redis+postgres", Shared: true, Open: func(tb testing.TB) (ledger.Ledger, lock.Locker) {
		l, err := postgres.Open(context.Background(), pg.URL(), ledger.Config{})
		if err != nil {
			tb.Fatalf("private PostgreSQL ledger: %v", err)
		}
		tb.Cleanup(func() { l.Close() })
		c, err := lock.NewRedisClient(rs.URL())
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { c.Close() })
		return l, lock.NewRedis(c, lock.RedisConfig{})
	}}
	opts := testserver.Options{ExchangeTimeout: 10 * time.Second, SessionTimeout: 40 * time.Second}
	cfgs := []setup{{profile.AN12113(), true}}
	if full {
		cfgs = allConfigs()
	}
	type family struct {
		name    string
		restart func(i int) (string, error)
	}
	families := []family{
		{"redis", func(int) (string, error) { return "Redis restarted (all keys lost)", rs.restart() }},
		{"postgres", func(i int) (string, error) {
			mode := []string{"fast", "immediate"}[i%2]
			return "PostgreSQL restarted -m " + mode, pg.restart(mode)
		}},
	}
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			for _, c := range cfgs {
				ep := inProcess(t, backend, c.p, opts)
				n := m.probeAPDUs(t, ep, c.batch)
				var ks []int
				for k := 0; k <= n; k++ {
					ks = append(ks, k)
				}
				if !full {
					// Reduced: two distinct points drawn with the seed.
					rng.Shuffle(len(ks), func(i, j int) { ks[i], ks[j] = ks[j], ks[i] })
					ks = ks[:2]
				}
				for i, k := range ks {
					m.scenario(t, fmt.Sprintf("%s/restart-after-%d-apdus", c, k), ep, c.batch, i%2 == 1, func(s *scene) {
						var what string
						h := &hookCard{card: s.card, at: k, fire: func() (err error) { what, err = f.restart(i); return err }}
						s.firstSession(h)
						if err := h.fireErr(); err != nil {
							s.t.Fatal(err)
						}
						if h.didFire() {
							s.logf("%s after %d APDUs at the card", what, k)
						}
					})
				}
			}
		})
	}
}
