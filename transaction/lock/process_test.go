package lock

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/desfire-relay/relay/internal/testenv"
)

// Environment of a helper process: the test binary re-executed by
// TestRedisTwoProcesses, which plays one relay process.
const (
	helperEnv       = "LOCK_TEST_HELPER" // set to the helper's id
	helperURLEnv    = "LOCK_TEST_REDIS_URL"
	helperPrefixEnv = "LOCK_TEST_PREFIX"
	helperFileEnv   = "LOCK_TEST_FILE"
	helperRounds    = 15
)

func TestMain(m *testing.M) {
	if id := os.Getenv(helperEnv); id != "" {
		if err := helperMain(id); err != nil {
			fmt.Fprintln(os.Stderr, "helper", id+":", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// helperMain takes the shared lock helperRounds times, appending
// "enter ID FENCE" and "exit ID FENCE" lines to the shared file while it
// holds it.
func helperMain(id string) error {
	c, err := NewRedisClient(os.Getenv(helperURLEnv))
	if err != nil {
		return err
	}
	defer c.Close()
	f, err := os.OpenFile(os.Getenv(helperFileEnv), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	lk := NewRedis(c, RedisConfig{Prefix: os.Getenv(helperPrefixEnv)})
	ctx := context.Background()
	for r := range helperRounds {
		l, err := lk.Acquire(ctx, "card", Options{TTL: 5 * time.Second, Wait: time.Minute})
		if err != nil {
			return fmt.Errorf("round %d: %w", r, err)
		}
		if _, err := fmt.Fprintf(f, "enter %s %d\n", id, l.Fence()); err != nil {
			return err
		}
		time.Sleep(2 * time.Millisecond)
		if err := l.Check(ctx); err != nil {
			return fmt.Errorf("round %d: check: %w", r, err)
		}
		if _, err := fmt.Fprintf(f, "exit %s %d\n", id, l.Fence()); err != nil {
			return err
		}
		if err := l.Release(ctx); err != nil {
			return fmt.Errorf("round %d: release: %w", r, err)
		}
		time.Sleep(3 * time.Millisecond) // give the other process a chance
	}
	return nil
}

// TestRedisTwoProcesses races two OS processes for one card lock: the log
// they share must show one holder at a time and increasing fences.
func TestRedisTwoProcesses(t *testing.T) {
	admin := newTestClient(t)
	prefix := testPrefix(t, admin)
	logPath := filepath.Join(t.TempDir(), "holders.log")
	if err := os.WriteFile(logPath, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{"A", "B"}
	cmds := make([]*exec.Cmd, len(ids))
	outs := make([]*strings.Builder, len(ids))
	for i, id := range ids {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(),
			helperEnv+"="+id,
			helperURLEnv+"="+testenv.RedisURL(t),
			helperPrefixEnv+"="+prefix,
			helperFileEnv+"="+logPath,
		)
		outs[i] = &strings.Builder{}
		cmd.Stdout, cmd.Stderr = outs[i], outs[i]
		cmds[i] = cmd
	}
	for i, cmd := range cmds {
		if err := cmd.Start(); err != nil {
			t.Fatalf("start helper %s: %v", ids[i], err)
		}
	}
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("helper %s: %v\n%s", ids[i], err, outs[i])
		}
	}

	f, err := os.Open(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		holder    string // "" when free
		heldFence int64
		lastFence int64
		entries   = map[string]int{}
		lines     int
		handovers int
		prev      string
	)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines++
		var op, id string
		var fence int64
		if _, err := fmt.Sscanf(sc.Text(), "%s %s %d", &op, &id, &fence); err != nil {
			t.Fatalf("line %d %q: %v", lines, sc.Text(), err)
		}
		switch op {
		case "enter":
			if holder != "" {
				t.Fatalf("line %d: %s entered while %s held the lock", lines, id, holder)
			}
			if fence <= lastFence {
				t.Fatalf("line %d: fence %d after %d", lines, fence, lastFence)
			}
			if prev != "" && prev != id {
				handovers++
			}
			holder, heldFence, lastFence, prev = id, fence, fence, id
			entries[id]++
		case "exit":
			if holder != id || fence != heldFence {
				t.Fatalf("line %d: %s (fence %d) exited while %q held fence %d", lines, id, fence, holder, heldFence)
			}
			holder = ""
		default:
			t.Fatalf("line %d: unknown %q", lines, op)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if entries[id] != helperRounds {
			t.Errorf("helper %s held the lock %d times, want %d", id, entries[id], helperRounds)
		}
	}
	t.Logf("%d lock holdings by 2 processes, %d handovers between them, fences up to %d", lines/2, handovers, lastFence)
}
