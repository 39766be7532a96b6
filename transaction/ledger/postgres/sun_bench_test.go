package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/desfire-relay/relay/internal/testenv"
	"github.com/desfire-relay/relay/transaction/keys"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/ledger/internal/sqlstore"
	"github.com/desfire-relay/relay/transaction/sun"
	"github.com/desfire-relay/relay/transaction/sun/suntest"
)

// statementCounter counts the statements the pool sends (queries, BEGIN
// and COMMIT alike), each one a round trip.
type statementCounter struct{ n atomic.Int64 }

func (c *statementCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.n.Add(1)
	return ctx
}

func (c *statementCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// durable turns fsync and synchronous_commit on for the benchmark (the
// test services run with both off) and restores the previous settings
// afterwards. It fails when they cannot be turned on.
func durable(b *testing.B, admin *pgx.Conn) {
	ctx := context.Background()
	for _, q := range []string{"ALTER SYSTEM SET fsync = on", "ALTER SYSTEM SET synchronous_commit = on", "SELECT pg_reload_conf()"} {
		if _, err := admin.Exec(ctx, q); err != nil {
			b.Fatalf("%s: %v (the benchmark needs a superuser to make PostgreSQL durable)", q, err)
		}
	}
	b.Cleanup(func() {
		for _, q := range []string{"ALTER SYSTEM RESET fsync", "ALTER SYSTEM RESET synchronous_commit", "SELECT pg_reload_conf()"} {
			admin.Exec(context.Background(), q)
		}
	})
}

// sunBench is a verifier over a durable PostgreSQL ledger whose pool
// counts statements.
type sunBench struct {
	v        *sun.Verifier
	tpl      sun.Template
	kp       keys.Provider
	metaKey  []byte
	stmts    *statementCounter
	settings [3]string
}

func newSUNBench(b *testing.B) *sunBench {
	ctx := context.Background()
	dsn := testenv.DatabaseURL(b)
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		b.Fatalf("connect: %v", err)
	}
	b.Cleanup(func() { admin.Close(context.Background()) })
	durable(b, admin)
	// The reload reaches the backends asynchronously: wait for it.
	var settings [3]string
	for try := 0; try < 100; try++ {
		for i, name := range []string{"fsync", "synchronous_commit", "server_version"} {
			if err := admin.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&settings[i]); err != nil {
				b.Fatal(err)
			}
		}
		if settings[0] == "on" && settings[1] == "on" {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if settings[0] != "on" || settings[1] != "on" {
		b.Fatalf("PostgreSQL not durable: fsync=%s synchronous_commit=%s", settings[0], settings[1])
	}
	var rb [6]byte
	rand.Read(rb[:])
	schema := "sunbench_" + hex.EncodeToString(rb[:])
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { admin.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE") })
	u, err := url.Parse(dsn)
	if err != nil {
		b.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	l, err := Open(ctx, u.String(), ledger.Config{}) // migrates
	if err != nil {
		b.Fatal(err)
	}
	l.Close()
	pcfg, err := pgxpool.ParseConfig(u.String())
	if err != nil {
		b.Fatal(err)
	}
	stmts := &statementCounter{}
	pcfg.ConnConfig.Tracer = stmts
	pcfg.MaxConns = 16
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	st := sqlstore.New(&db{pool: pool}, dialect, ledger.Config{})

	metaKey, master := "B0B1B2B3B4B5B6B7B8B9BABBBCBDBEBF", "00112233445566778899AABBCCDDEEFF"
	kp, err := keys.New(keys.File{SystemID: "bench", Keys: []keys.Entry{
		{AID: "D27600", KeyNo: 2, Key: metaKey},
		{AID: "D27600", KeyNo: 3, Key: master, Diversify: true},
	}})
	if err != nil {
		b.Fatal(err)
	}
	tpl := sun.Template{Name: "bench", PICCParam: "picc_data", FileParam: "enc", MACParam: "cmac", MACInputFrom: "enc",
		MetaReadKey: &sun.KeyRef{AID: "D27600", KeyNo: 2}, FileReadKey: sun.KeyRef{AID: "D27600", KeyNo: 3}, MaxCounterGap: 1000}
	v, err := sun.NewVerifier(sun.Config{Templates: []sun.Template{tpl}, Keys: kp, Store: st})
	if err != nil {
		b.Fatal(err)
	}
	if err := tpl.Validate(); err != nil {
		b.Fatal(err)
	}
	mk, _ := hex.DecodeString(metaKey)
	return &sunBench{v: v, tpl: tpl, kp: kp, metaKey: mk, stmts: stmts, settings: settings}
}

func (s *sunBench) tag(b *testing.B, uid []byte) *suntest.Tag {
	fk, err := s.kp.CardKey(context.Background(), keys.Ref{AID: 0xD27600, KeyNo: 3}, uid)
	if err != nil {
		b.Fatal(err)
	}
	return &suntest.Tag{UID: uid, MetaKey: s.metaKey, FileKey: fk, FileData: []byte("CCbenchmark-data")}
}

func (s *sunBench) report(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "verifications/s")
	b.ReportMetric(float64(s.stmts.n.Load())/float64(b.N), "statements/verification")
	b.Logf("PostgreSQL %s, fsync=%s, synchronous_commit=%s, GOMAXPROCS=%d, %d goroutines",
		s.settings[2], s.settings[0], s.settings[1], runtime.GOMAXPROCS(0), 8*runtime.GOMAXPROCS(0))
}

// BenchmarkSUNVerify measures SUN verifications per second against
// PostgreSQL with fsync and synchronous_commit on: MAC check, decryption
// and the atomic counter update, from 8 goroutines per GOMAXPROCS, each
// with its own simulated tags. It reports verifications/s and the
// statements each verification sends (one is the floor).
func BenchmarkSUNVerify(b *testing.B) {
	ctx := context.Background()
	s := newSUNBench(b)
	var worker atomic.Int64
	var bad atomic.Int64
	b.SetParallelism(8)
	b.ResetTimer()
	s.stmts.n.Store(0)
	b.RunParallel(func(pb *testing.PB) {
		// Each goroutine has its own tags, so its URLs arrive in counter
		// order and every one must be authentic.
		w := worker.Add(1)
		var tags []*suntest.Tag
		for i := 0; i < 8; i++ {
			tags = append(tags, s.tag(b, []byte{0x04, 0xB0, byte(w >> 8), byte(w), byte(i), 0x12, 0x80}))
		}
		for i := 0; pb.Next(); i++ {
			q, err := tags[i%len(tags)].Read(&s.tpl)
			if err != nil {
				b.Error(err)
				return
			}
			res, err := s.v.Verify(ctx, sun.Request{Template: "bench", RawQuery: q})
			if err != nil || res.Status != sun.Authentic {
				bad.Add(1)
			}
		}
	})
	b.StopTimer()
	if n := bad.Load(); n > 0 {
		b.Fatalf("%d of %d verifications not authentic", n, b.N)
	}
	s.report(b)
}

// BenchmarkSUNVerifyReplayed measures the answer to copied URLs: every
// request repeats one of 128 URLs already accepted, so each is replayed
// (the refused upsert, then the statement that counts the replay).
func BenchmarkSUNVerifyReplayed(b *testing.B) {
	ctx := context.Background()
	s := newSUNBench(b)
	urls := make([]string, 128)
	for i := range urls {
		g := s.tag(b, []byte{0x04, 0xC0, 0x00, byte(i), 0x00, 0x12, 0x80})
		q, err := g.Read(&s.tpl)
		if err != nil {
			b.Fatal(err)
		}
		if res, err := s.v.Verify(ctx, sun.Request{Template: "bench", RawQuery: q}); err != nil || res.Status != sun.Authentic {
			b.Fatalf("first verification: %+v %v", res, err)
		}
		urls[i] = q
	}
	var next, bad atomic.Int64
	b.SetParallelism(8)
	b.ResetTimer()
	s.stmts.n.Store(0)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			q := urls[next.Add(1)%int64(len(urls))]
			res, err := s.v.Verify(ctx, sun.Request{Template: "bench", RawQuery: q})
			if err != nil || res.Status != sun.Replayed {
				bad.Add(1)
			}
		}
	})
	b.StopTimer()
	if n := bad.Load(); n > 0 {
		b.Fatalf("%d of %d verifications not replayed", n, b.N)
	}
	s.report(b)
}
