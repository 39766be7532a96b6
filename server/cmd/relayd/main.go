// Command relayd is the DESFire top-up relay server. With no configuration
// it runs on the embedded default: SQLite ledger and generated development
// keys in ./data, in-process card locks, a development API key printed
// once. Production mode (RELAY_MODE=production) needs Redis, PostgreSQL,
// a key file, API key hashes and TLS; see docs/CONFIG.md.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/desfire-relay/relay/server"
	"github.com/desfire-relay/relay/server/config"
	"github.com/desfire-relay/relay/transaction"
	"github.com/desfire-relay/relay/transaction/keys"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/ledger/postgres"
	"github.com/desfire-relay/relay/transaction/ledger/sqlite"
	"github.com/desfire-relay/relay/transaction/lock"
	"github.com/desfire-relay/relay/transaction/profile"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "relayd:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	cfg, err := config.Load(args, os.LookupEnv)
	if err != nil {
		return err
	}
	log, err := newLogger(cfg.LogLevel)
	if err != nil {
		return err
	}
	defer log.Sync()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	app, err := build(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer app.close()

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	httpSrv := &http.Server{Handler: app.srv.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, ErrorLog: zap.NewStdLog(log)}
	serveErr := make(chan error, 1)
	go func() {
		if cfg.TLSCert != "" {
			serveErr <- httpSrv.ServeTLS(ln, cfg.TLSCert, cfg.TLSKey)
		} else {
			serveErr <- httpSrv.Serve(ln)
		}
	}()
	log.Info("relayd listening", zap.String("addr", ln.Addr().String()), zap.String("mode", cfg.Mode),
		zap.Bool("tls", cfg.TLSCert != ""), zap.String("profile", cfg.Profile))

	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); app.housekeeping(ctx, log) }()

	select {
	case err := <-serveErr:
		stop()
		wg.Wait()
		if !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve: %w", err)
		}
		return nil
	case <-ctx.Done():
	}
	log.Info("shutting down", zap.Duration("deadline", cfg.ShutdownTimeout.D()))
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout.D())
	defer cancel()
	var derr error
	var dwg sync.WaitGroup
	dwg.Add(1)
	go func() { defer dwg.Done(); derr = app.srv.Drain(sctx) }()
	_ = httpSrv.Shutdown(sctx) // stops accepting; hijacked bridge sockets are Drain's
	dwg.Wait()
	wg.Wait()
	if derr != nil {
		log.Warn("shutdown", zap.Error(derr))
	}
	log.Info("stopped")
	return nil
}

func newLogger(level string) (*zap.Logger, error) {
	zc := zap.NewProductionConfig()
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, err
	}
	zc.Level = zap.NewAtomicLevelAt(lvl)
	zc.Sampling = nil
	return zc.Build()
}

type app struct {
	srv    *server.Server
	svc    *transaction.Service
	ledger ledger.Ledger
	closer []func()
}

func (a *app) close() {
	for i := len(a.closer) - 1; i >= 0; i-- {
		a.closer[i]()
	}
}

// housekeeping expires stale pending top-ups once a minute.
func (a *app) housekeeping(ctx context.Context, log *zap.Logger) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if n, err := a.ledger.ExpirePending(ctx, time.Now()); err != nil {
				log.Warn("expire pending top-ups", zap.Error(err))
			} else if n > 0 {
				log.Info("expired pending top-ups", zap.Int("count", n))
			}
		}
	}
}

func build(ctx context.Context, cfg config.Config, log *zap.Logger) (*app, error) {
	a := &app{}
	if cfg.Mode == config.ModeDev || cfg.DatabaseURL == "" || cfg.KeyFile == "" {
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return nil, fmt.Errorf("data dir: %w", err)
		}
	}
	profiles := profile.DefaultSet()
	if cfg.ProfilesFile != "" {
		p, err := profile.Load(cfg.ProfilesFile)
		if err != nil {
			return nil, err
		}
		profiles = p
	}
	prof, err := profiles.Get(cfg.Profile)
	if err != nil {
		return nil, err
	}

	kp, err := loadKeys(cfg, profiles, log)
	if err != nil {
		return nil, err
	}
	if cfg.Mode == config.ModeProduction && kp.Dev() {
		return nil, fmt.Errorf("%s: %w", cfg.KeyFile, keys.ErrDevKeys)
	}

	lcfg := ledger.Config{PendingTTL: cfg.TopUpTTL.D()}
	if cfg.DatabaseURL != "" {
		a.ledger, err = postgres.Open(ctx, cfg.DatabaseURL, lcfg)
	} else {
		a.ledger, err = sqlite.Open(ctx, filepath.Join(cfg.DataDir, "ledger.db"), lcfg)
	}
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	a.closer = append(a.closer, func() { a.ledger.Close() })

	var locker lock.Locker
	var ready []func(context.Context) error
	if cfg.RedisURL != "" {
		rc, err := lock.NewRedisClient(cfg.RedisURL)
		if err != nil {
			return nil, fmt.Errorf("redis: %w", err)
		}
		a.closer = append(a.closer, func() { rc.Close() })
		locker = lock.NewRedis(rc, lock.RedisConfig{})
		ready = append(ready, func(ctx context.Context) error { return rc.Ping(ctx).Err() })
	} else {
		locker = lock.NewMemory()
	}

	hashes := cfg.APIKeyHashes
	if len(hashes) == 0 {
		h, err := devAPIKey(cfg.DataDir, log)
		if err != nil {
			return nil, err
		}
		hashes = []string{h}
	}

	metrics := server.NewMetrics()
	a.svc, err = transaction.New(transaction.Config{
		Ledger: a.ledger, Locker: locker, Keys: kp, Profiles: profiles, Profile: prof.Name,
		TokenTTL: cfg.TokenTTL.D(), LockTTL: cfg.LockTTL.D(), Log: log, Metrics: metrics,
	})
	if err != nil {
		return nil, err
	}
	a.srv = server.New(server.Options{
		Service: a.svc, APIKeyHashes: hashes, ExchangeTimeout: cfg.ExchangeTimeout.D(),
		SessionTimeout: cfg.SessionTimeout.D(), MaxSessions: cfg.MaxSessions, Ready: ready, Log: log, Metrics: metrics,
		Provision: provisionOptions(a.ledger, kp, locker, profiles, cfg.LockTTL.D(), cfg.TokenTTL.D()),
	})
	return a, nil
}

// loadKeys reads the key file, or in dev mode without one generates
// development keys into the data directory (mode 0600) on first start.
func loadKeys(cfg config.Config, profiles profile.Set, log *zap.Logger) (*keys.Static, error) {
	path := cfg.KeyFile
	if path == "" {
		if cfg.Mode == config.ModeProduction {
			return nil, errors.New("production mode needs a key file")
		}
		path = filepath.Join(cfg.DataDir, "dev-keys.json")
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			var aids []uint32
			for _, p := range profiles {
				aids = append(aids, p.AID)
			}
			f, err := keys.DevFile(nil, aids...)
			if err != nil {
				return nil, err
			}
			if err := keys.WriteFile(path, f); err != nil {
				return nil, err
			}
			log.Warn("GENERATED DEVELOPMENT KEYS — for testing only, refused in production mode", zap.String("file", path))
		}
	}
	kp, err := keys.LoadFile(path)
	if err != nil {
		return nil, err
	}
	if kp.Dev() {
		log.Warn("USING DEVELOPMENT KEYS — not for real cards", zap.String("file", path))
	}
	return kp, nil
}

// devAPIKey returns the hash of the development API key, generating it on
// first start: the key is printed once and kept in data/dev-api-key (0600)
// for the walkthrough.
func devAPIKey(dir string, log *zap.Logger) (string, error) {
	path := filepath.Join(dir, "dev-api-key")
	if b, err := os.ReadFile(path); err == nil {
		key := string(b)
		log.Warn("using the development API key", zap.String("file", path))
		return config.HashAPIKey(key), nil
	}
	raw := make([]byte, 24)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	key := "dev_" + hex.EncodeToString(raw)
	if err := os.WriteFile(path, []byte(key), 0o600); err != nil {
		return "", fmt.Errorf("write dev API key: %w", err)
	}
	fmt.Fprintf(os.Stderr, "\n  DEVELOPMENT API KEY (printed once, also in %s):\n\n    %s\n\n", path, key)
	return config.HashAPIKey(key), nil
}
