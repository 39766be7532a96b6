package faults

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/desfire-relay/relay/server/config"
	"github.com/desfire-relay/relay/transaction/keys"
	"github.com/desfire-relay/relay/transaction/profile"
)

const relaydAPIKey = "faults-api-key"

var (
	buildOnce sync.Once
	buildBin  string
	buildErr  error
)

// relaydBinary builds server/cmd/relayd once per test binary, as
// tests/multinode does.
func relaydBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "relay-faults-bin-")
		if err != nil {
			buildErr = err
			return
		}
		buildBin = filepath.Join(dir, "relayd")
		if out, err := exec.Command("go", "build", "-o", buildBin, "../../server/cmd/relayd").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("build relayd: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildBin
}

// relayd is a relayd child process on a fixed address, a PostgreSQL
// ledger and Redis locks, that the test may SIGKILL and start again.
type relayd struct {
	t        *testing.T
	bin      string
	addr     string
	dir      string
	keyFile  string
	dbURL    string
	redisURL string
	kp       keys.Provider
	prof     string
	cmd      *exec.Cmd
	stderr   *os.File
	starts   int
	// extra flags for every start.
	extra []string
}

func newRelayd(t *testing.T, dbURL, redisURL string) *relayd {
	t.Helper()
	r := &relayd{t: t, bin: relaydBinary(t), addr: fmt.Sprintf("127.0.0.1:%d", freePort(t)), dir: t.TempDir(), dbURL: dbURL, redisURL: redisURL}
	var aids []uint32
	for _, p := range profile.DefaultSet() {
		aids = append(aids, p.AID)
	}
	f, err := keys.DevFile(nil, aids...)
	if err != nil {
		t.Fatal(err)
	}
	f.Dev = false // a "production-like" key file the test also issues cards with
	r.keyFile = filepath.Join(r.dir, "keys.json")
	if err := keys.WriteFile(r.keyFile, f); err != nil {
		t.Fatal(err)
	}
	if r.kp, err = keys.New(f); err != nil {
		t.Fatal(err)
	}
	if r.stderr, err = os.Create(filepath.Join(r.dir, "relayd.log")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.kill()
		r.stderr.Close()
	})
	return r
}

// endpoint describes the running process for the scenarios.
func (r *relayd) endpoint() *endpoint {
	p, err := profile.DefaultSet().Get(r.prof)
	if err != nil {
		r.t.Fatal(err)
	}
	return &endpoint{base: "http://" + r.addr, apiKey: relaydAPIKey, kp: r.kp, profile: p}
}

// start runs relayd with profile prof and waits until /readyz answers.
// The environment's REDIS_URL / DATABASE_URL / RELAY_* are not passed on:
// the flags alone say what the process uses.
func (r *relayd) start(prof string) error {
	r.prof = prof
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "REDIS_URL=") || strings.HasPrefix(kv, "DATABASE_URL=") || strings.HasPrefix(kv, "RELAY_") {
			continue
		}
		env = append(env, kv)
	}
	r.cmd = exec.Command(r.bin, "-addr", r.addr, "-data-dir", filepath.Join(r.dir, "data"), "-key-file", r.keyFile,
		"-database-url", r.dbURL, "-redis-url", r.redisURL, "-api-key-hashes", config.HashAPIKey(relaydAPIKey),
		"-profile", prof, "-lock-ttl", "1s", "-exchange-timeout", "5s", "-session-timeout", "20s", "-log-level", "warn")
	r.cmd.Args = append(r.cmd.Args, r.extra...)
	r.cmd.Env = env
	r.cmd.Stderr = r.stderr
	if err := r.cmd.Start(); err != nil {
		return fmt.Errorf("start relayd: %w", err)
	}
	r.starts++
	deadline := time.Now().Add(20 * time.Second)
	c := &http.Client{Timeout: time.Second}
	for time.Now().Before(deadline) {
		if resp, err := c.Get("http://" + r.addr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("relayd on %s not ready; log %s", r.addr, r.stderr.Name())
}

// kill ends the process with SIGKILL: no drain, no deferred cleanup, open
// sockets reset by the kernel.
func (r *relayd) kill() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	_ = r.cmd.Process.Signal(syscall.SIGKILL)
	_ = r.cmd.Wait()
	r.cmd = nil
}
