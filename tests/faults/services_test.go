package faults

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/desfire-relay/relay/internal/testenv"
)

// Private Redis and PostgreSQL servers that the restart families may stop
// and start at will. They are never the suite's shared servers from
// REDIS_URL / DATABASE_URL, which other packages use at the same time.

// needService skips the test locally, or fails it under CI, when a server
// binary is missing.
func needService(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if testenv.InCI() {
		t.Fatalf("%s (under CI=true this fault family must run)", msg)
	}
	t.Skipf("%s: skipping this fault family (install redis-server and postgresql, see scripts/services.sh)", msg)
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// privateRedis is a redis-server child process without persistence: a
// restart loses every key, as a failover to an empty replica would.
type privateRedis struct {
	t    *testing.T
	bin  string
	dir  string
	port int
	cmd  *exec.Cmd
}

func startPrivateRedis(t *testing.T) *privateRedis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		needService(t, "redis-server not found")
	}
	r := &privateRedis{t: t, bin: bin, dir: t.TempDir(), port: freePort(t)}
	if err := r.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.stop)
	return r
}

// URL is the redis:// address of the server.
func (r *privateRedis) URL() string { return fmt.Sprintf("redis://127.0.0.1:%d/0", r.port) }

func (r *privateRedis) start() error {
	r.cmd = exec.Command(r.bin, "--bind", "127.0.0.1", "--port", strconv.Itoa(r.port), "--save", "",
		"--appendonly", "no", "--dir", r.dir, "--logfile", filepath.Join(r.dir, "redis.log"), "--daemonize", "no")
	if err := r.cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if redisPing(r.port) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("redis-server on port %d did not answer PING", r.port)
}

func (r *privateRedis) stop() {
	if r.cmd != nil && r.cmd.Process != nil {
		_ = r.cmd.Process.Kill()
		_ = r.cmd.Wait()
		r.cmd = nil
	}
}

// restart kills Redis (SIGKILL: no shutdown save, keys are gone) and
// starts it again on the same port.
func (r *privateRedis) restart() error {
	r.stop()
	return r.start()
}

func redisPing(port int) bool {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "+PONG")
}

// privatePostgres is a PostgreSQL cluster of its own (initdb in a
// temporary directory), run as the 'postgres' user when the tests run as
// root, since postgres refuses to run as root (as scripts/services.sh
// does).
type privatePostgres struct {
	t    *testing.T
	bin  string
	dir  string // owned by the postgres user; data in dir/data
	port int
	asPG bool
}

// pgBinDir finds initdb, pg_ctl and postgres like scripts/services.sh:
// $PG_BINDIR, the newest /usr/lib/postgresql/*/bin, or PATH.
func pgBinDir() (string, bool) {
	ok := func(d string) bool {
		for _, b := range []string{"initdb", "pg_ctl", "postgres"} {
			if _, err := os.Stat(filepath.Join(d, b)); err != nil {
				return false
			}
		}
		return true
	}
	if d := os.Getenv("PG_BINDIR"); d != "" {
		return d, ok(d)
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return pgMajor(dirs[i]) < pgMajor(dirs[j]) })
	for i := len(dirs) - 1; i >= 0; i-- {
		if ok(dirs[i]) {
			return dirs[i], true
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil && ok(filepath.Dir(p)) {
		return filepath.Dir(p), true
	}
	return "", false
}

func pgMajor(dir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return n
}

func startPrivatePostgres(t *testing.T) *privatePostgres {
	t.Helper()
	bin, ok := pgBinDir()
	if !ok {
		needService(t, "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found")
	}
	p := &privatePostgres{t: t, bin: bin, port: freePort(t), asPG: os.Geteuid() == 0}
	// Under /tmp, world-traversable, so the postgres user can reach it.
	dir, err := os.MkdirTemp("/tmp", "relay-faults-pg-")
	if err != nil {
		t.Fatal(err)
	}
	p.dir = dir
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if p.asPG {
		u, err := user.Lookup("postgres")
		if err != nil {
			needService(t, "running as root and there is no 'postgres' user to run PostgreSQL as")
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	data := filepath.Join(dir, "data")
	if out, err := p.run("initdb", "-D", data, "-U", "relay", "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	// synchronous_commit stays on: a commit is acknowledged only once
	// its WAL has been written, so "-m immediate" (a crash of the server
	// process) loses no acknowledged transaction. With it off, such a
	// crash silently rolls back the last transitions and the ledger
	// forgets an in_doubt top-up (see docs/RELIABILITY.md). fsync may be
	// off: the operating system, which keeps written pages, never crashes
	// here.
	conf := fmt.Sprintf("listen_addresses = '127.0.0.1'\nport = %d\nunix_socket_directories = '%s'\nfsync = off\nsynchronous_commit = on\nmax_connections = 100\n", p.port, dir)
	f, err := os.OpenFile(filepath.Join(data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteString(conf)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := p.ctl("start"); err != nil {
		t.Fatalf("pg_ctl start: %v\n%s\n%s", err, out, p.logTail())
	}
	t.Cleanup(func() { _, _ = p.ctl("stop", "-m", "immediate") })
	if err := p.waitReady(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	return p
}

// URL is the postgres:// address of the cluster's default database.
func (p *privatePostgres) URL() string {
	return fmt.Sprintf("postgres://relay@127.0.0.1:%d/postgres?sslmode=disable", p.port)
}

// run runs one of the cluster's binaries as the user owning the data.
func (p *privatePostgres) run(name string, args ...string) ([]byte, error) {
	bin := filepath.Join(p.bin, name)
	var cmd *exec.Cmd
	if p.asPG {
		cmd = exec.Command("runuser", append([]string{"-u", "postgres", "--", bin}, args...)...)
	} else {
		cmd = exec.Command(bin, args...)
	}
	cmd.Dir = p.dir
	return cmd.CombinedOutput()
}

func (p *privatePostgres) ctl(action string, extra ...string) ([]byte, error) {
	args := append([]string{"-D", filepath.Join(p.dir, "data"), "-l", filepath.Join(p.dir, "postgres.log"), "-w", "-t", "60"}, extra...)
	return p.run("pg_ctl", append(args, action)...)
}

// restart stops the cluster (mode "fast": connections are terminated
// and a clean shutdown follows; "immediate": a crash, recovery replays
// the WAL on start) and starts it again on the same port.
func (p *privatePostgres) restart(mode string) error {
	if out, err := p.ctl("restart", "-m", mode); err != nil {
		return fmt.Errorf("pg_ctl restart -m %s: %v\n%s\n%s", mode, err, out, p.logTail())
	}
	return p.waitReady(30 * time.Second)
}

func (p *privatePostgres) waitReady(d time.Duration) error {
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		var c *pgx.Conn
		if c, err = pgx.Connect(ctx, p.URL()); err == nil {
			err = c.Ping(ctx)
			c.Close(ctx)
		}
		cancel()
		if err == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("private PostgreSQL on port %d not ready: %w", p.port, err)
}

func (p *privatePostgres) logTail() string {
	b, _ := os.ReadFile(filepath.Join(p.dir, "postgres.log"))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}
