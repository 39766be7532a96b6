package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

// serviceProcs are the PostgreSQL postmaster and the Redis server this
// run talks to (found through DATABASE_URL and REDIS_URL), so their CPU
// is measured apart from any other PostgreSQL or Redis on the machine.
// 0: not found (not local, or not allowed to ask).
type serviceProcs struct{ pg, redis int }

func findServices(ctx context.Context) serviceProcs {
	var p serviceProcs
	if c, err := pgx.Connect(ctx, os.Getenv("DATABASE_URL")); err == nil {
		var dir string
		if c.QueryRow(ctx, "SHOW data_directory").Scan(&dir) == nil {
			if b, err := os.ReadFile(filepath.Join(dir, "postmaster.pid")); err == nil {
				p.pg, _ = strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
			}
		}
		c.Close(ctx)
	}
	if opt, err := redis.ParseURL(os.Getenv("REDIS_URL")); err == nil {
		c := redis.NewClient(opt)
		if info, err := c.Info(ctx, "server").Result(); err == nil {
			for _, line := range strings.Split(info, "\n") {
				if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
					p.redis, _ = strconv.Atoi(v)
				}
			}
		}
		c.Close()
	}
	if !alive(p.pg) {
		p.pg = 0
	}
	if !alive(p.redis) {
		p.redis = 0
	}
	return p
}

func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	_, err := os.Stat(fmt.Sprintf("/proc/%d/stat", pid))
	return err == nil
}

// cpu returns the CPU time so far of PostgreSQL (the postmaster, its
// reaped children and its live ones: backends, WAL writer, checkpointer)
// and of Redis.
func (p serviceProcs) cpu() (pg, rd time.Duration) {
	if p.pg > 0 {
		pg = treeCPU(p.pg)
	}
	if p.redis > 0 {
		rd = treeCPU(p.redis)
	}
	return pg, rd
}

// treeCPU is a process's own CPU, that of its waited-for children and
// that of its live children.
func treeCPU(root int) time.Duration {
	own, _ := statCPU(root, true)
	sum := own
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return sum
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == root {
			continue
		}
		if c, ppid := statCPU(pid, false); ppid == root {
			sum += c
		}
	}
	return sum
}

// statCPU reads utime+stime (and cutime+cstime with children) and the
// parent pid from /proc/<pid>/stat.
func statCPU(pid int, children bool) (time.Duration, int) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0
	}
	// After the command: state, ppid, ..., utime (12th), stime, cutime, cstime.
	f := strings.Fields(s[i+1:])
	if len(f) < 15 {
		return 0, 0
	}
	ppid, _ := strconv.Atoi(f[1])
	var ticks int64
	n := 13
	if children {
		n = 15
	}
	for _, v := range f[11:n] {
		t, _ := strconv.ParseInt(v, 10, 64)
		ticks += t
	}
	return time.Duration(ticks) * time.Second / clkTck, ppid
}
