// Command relayd is the DESFire top-up relay server. With no configuration
// it runs on the embedded default: SQLite ledger and generated development
// keys in ./data, in-process card locks, a development API key written to
// data/dev-api-key (0600). Production mode (RELAY_MODE=production) needs Redis, PostgreSQL,
// a key file, API key hashes and TLS; see docs/CONFIG.md.
package main

import (
	"bytes"
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
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/desfire-relay/relay/server"
	"github.com/desfire-relay/relay/server/config"
	"github.com/desfire-relay/relay/server/webhook"
	"github.com/desfire-relay/relay/transaction"
	"github.com/desfire-relay/relay/transaction/keys"
	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/ledger/postgres"
	"github.com/desfire-relay/relay/transaction/ledger/sqlite"
	"github.com/desfire-relay/relay/transaction/lock"
	"github.com/desfire-relay/relay/transaction/profile"
	"github.com/desfire-relay/relay/transaction/sun"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "relayd:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) > 0 && args[0] == "apikey" {
		return runAPIKey(args[1:], os.Stdout)
	}
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
	httpSrv := publicServer(cfg, app.srv.Handler(), log)
	serveErr := make(chan error, 2)
	go func() {
		if cfg.TLSCert != "" {
			serveErr <- httpSrv.ServeTLS(ln, cfg.TLSCert, cfg.TLSKey)
		} else {
			serveErr <- httpSrv.Serve(ln)
		}
	}()
	log.Info("relayd listening", zap.String("addr", ln.Addr().String()), zap.String("mode", cfg.Mode),
		zap.Bool("tls", cfg.TLSCert != ""), zap.String("profile", cfg.Profile))
	var adminSrv *http.Server
	if cfg.AdminAddr != "" {
		aln, err := net.Listen("tcp", cfg.AdminAddr)
		if err != nil {
			return fmt.Errorf("admin listen: %w", err)
		}
		adminSrv = &http.Server{Handler: app.srv.AdminHandler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
			IdleTimeout: 2 * time.Minute, ErrorLog: zap.NewStdLog(log)}
		go func() { serveErr <- adminSrv.Serve(aln) }()
		log.Info("admin listener (metrics, openapi, pprof) on a private address", zap.String("addr", aln.Addr().String()), zap.Bool("pprof", cfg.Pprof))
	}

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); app.housekeeping(ctx, log) }()
	go func() { defer wg.Done(); app.reloadOnHUP(ctx, cfg, log) }()
	if app.hooks != nil {
		wg.Add(1)
		go func() { defer wg.Done(); app.hooks.Run(ctx) }()
	}

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
	if adminSrv != nil {
		_ = adminSrv.Shutdown(sctx)
	}
	dwg.Wait()
	wg.Wait()
	if derr != nil {
		log.Warn("shutdown", zap.Error(derr))
	}
	log.Info("stopped")
	return nil
}

// publicServer is the public listener's http.Server: bounded header
// reads, the server's TLS policy (TLS 1.2 AEAD suites or TLS 1.3 only).
func publicServer(cfg config.Config, h http.Handler, log *zap.Logger) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		MaxHeaderBytes: 16 << 10, ErrorLog: zap.NewStdLog(log), TLSConfig: server.TLSConfig(cfg.TLS13Only)}
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
	hashes []string // the default tenant's key digests (config or dev key)
	svc    *transaction.Service
	ledger ledger.Ledger
	// hooks delivers the outbox to webhook endpoints (nil: none).
	hooks  *webhook.Dispatcher
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

	var hooks []webhook.Endpoint
	if cfg.WebhooksFile != "" {
		if hooks, err = webhook.Load(cfg.WebhooksFile); err != nil {
			return nil, err
		}
	}
	lcfg := ledger.Config{PendingTTL: cfg.TopUpTTL.D(), Outbox: len(hooks) > 0}
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
	if len(hashes) == 0 && cfg.APIKeysFile == "" {
		h, err := devAPIKey(cfg.DataDir, log)
		if err != nil {
			return nil, err
		}
		hashes = []string{h}
	}
	apiKeys, err := apiKeys(cfg, hashes)
	if err != nil {
		return nil, err
	}

	readerID, err := cfg.DefaultReaderID()
	if err != nil {
		return nil, err
	}
	metrics := server.NewMetrics()
	a.svc, err = transaction.New(transaction.Config{
		Ledger: a.ledger, Locker: locker, Keys: kp, Profiles: profiles, Profile: prof.Name, Fleet: cfg.Fleet, DefaultReaderID: readerID,
		TokenTTL: cfg.TokenTTL.D(), TopUpTTL: cfg.TopUpTTL.D(), LockTTL: cfg.LockTTL.D(), Log: log, Metrics: metrics,
	})
	if err != nil {
		return nil, err
	}
	sunOpts, err := sunOptions(cfg, kp, a.ledger)
	if err != nil {
		a.close()
		return nil, err
	}
	consoleKey, err := readConsoleKey(cfg.ConsoleKeyFile)
	if err != nil {
		a.close()
		return nil, err
	}
	var outbox ledger.Outbox
	if len(hooks) > 0 {
		outbox, _ = a.ledger.(ledger.Outbox)
		a.hooks, err = webhook.New(webhook.Config{Endpoints: hooks, Outbox: outbox, TopUp: a.ledger.GetTopUp,
			Log: log.Named("webhook"), Registerer: metrics.Registerer()})
		if err != nil {
			a.close()
			return nil, err
		}
		log.Info("webhooks on", zap.Int("endpoints", len(hooks)))
	}
	a.srv = server.New(server.Options{
		Service: a.svc, Outbox: outbox, APIKeys: apiKeys, ExchangeTimeout: cfg.ExchangeTimeout.D(),
		SessionTimeout: cfg.SessionTimeout.D(), MaxSessions: cfg.MaxSessions, Ready: ready, Log: log, Metrics: metrics,
		SUN: sunOpts, ConsoleKey: consoleKey,
		Limits: server.Limits{BodyTimeout: cfg.BodyTimeout.D(), AddrRate: cfg.AddrRate, AddrBurst: burst(cfg.AddrRate),
			KeyRate: cfg.KeyRate, KeyBurst: burst(cfg.KeyRate), BridgesPerAddr: cfg.BridgesPerAddr},
		AllowTokenInQuery: cfg.AllowTokenInQuery, HSTS: cfg.TLSCert != "" || cfg.TLSProxy, Pprof: cfg.Pprof,
		Provision: provisionOptions(a.ledger, kp, locker, profiles, cfg.LockTTL.D(), cfg.TokenTTL.D()),
	})
	a.hashes = hashes
	return a, nil
}

// sunOptions loads the SUN templates, if configured, over the ledger's
// SUN store and the card key provider.
func sunOptions(cfg config.Config, kp keys.Provider, l ledger.Ledger) (server.SUNOptions, error) {
	st, ok := l.(ledger.SUNStore)
	if !ok {
		return server.SUNOptions{}, fmt.Errorf("ledger %T keeps no SUN state", l)
	}
	o := server.SUNOptions{Store: st, RegionHeader: cfg.SUNRegionHeader, ClientIPHeader: cfg.SUNClientIPHeader,
		TravelByNetwork: cfg.SUNTravelByNetwork}
	if cfg.SUNTemplatesFile == "" {
		return o, nil
	}
	ts, err := sun.LoadTemplates(cfg.SUNTemplatesFile)
	if err != nil {
		return server.SUNOptions{}, err
	}
	if o.Verifier, err = sun.NewVerifier(sun.Config{Templates: ts, Keys: kp, Store: st}); err != nil {
		return server.SUNOptions{}, err
	}
	return o, nil
}

// burst allows twice the rate per second in one go.
func burst(rate float64) int {
	if rate <= 0 {
		return 1
	}
	return int(2*rate) + 1
}

// readConsoleKey reads the console cookie secret (empty path: none, the
// server draws a random one). A short secret is refused, not padded.
func readConsoleKey(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("console key: %w", err)
	}
	b = bytes.TrimSpace(b)
	if len(b) < 32 {
		return nil, fmt.Errorf("console key %s: %d bytes, at least 32 needed", path, len(b))
	}
	return b, nil
}

// apiKeys assembles the accepted keys: the digests of RELAY_API_KEY_HASHES
// (tenant default) and the API keys file. Production refuses the
// development API key of the data directory.
func apiKeys(cfg config.Config, hashes []string) ([]server.APIKey, error) {
	out := server.LegacyKeys(hashes)
	if cfg.APIKeysFile != "" {
		entries, err := config.LoadAPIKeys(cfg.APIKeysFile)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			k := server.APIKey{ID: e.ID, Tenant: e.Tenant}
			b, err := hex.DecodeString(e.SHA256)
			if err != nil || len(b) != len(k.Digest) {
				return nil, fmt.Errorf("api key %s: bad digest: %w", e.ID, config.ErrConfig)
			}
			copy(k.Digest[:], b)
			if e.ExpiresAt != nil {
				k.ExpiresAt = *e.ExpiresAt
			}
			out = append(out, k)
		}
	}
	if cfg.Mode == config.ModeProduction {
		if b, err := os.ReadFile(filepath.Join(cfg.DataDir, devAPIKeyFile)); err == nil {
			dev := config.HashAPIKey(strings.TrimSpace(string(b)))
			for _, k := range out {
				if hex.EncodeToString(k.Digest[:]) == dev {
					return nil, fmt.Errorf("api key %s is the development API key of %s: refused in production: %w", k.ID, cfg.DataDir, config.ErrConfig)
				}
			}
		}
	}
	return out, nil
}

// reloadOnHUP re-reads the API keys on SIGHUP: keys rotate without a
// restart. A file that fails to load keeps the keys in use.
func (a *app) reloadOnHUP(ctx context.Context, cfg config.Config, log *zap.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if err := a.reloadKeys(cfg); err != nil {
				log.Error("API keys not reloaded; the previous keys stay in use", zap.Error(err))
				continue
			}
			log.Info("API keys reloaded", zap.String("file", cfg.APIKeysFile))
		}
	}
}

// reloadKeys loads the API keys again and hands them to the server.
func (a *app) reloadKeys(cfg config.Config) error {
	keys, err := apiKeys(cfg, a.hashes)
	if err != nil {
		return err
	}
	return a.srv.SetKeys(keys)
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
		} else if err := migrateDevKeys(path, log); err != nil {
			return nil, err
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

// migrateDevKeys adds the NTAG 424 DNA master keys to a generated
// development key file written before provisioning existed (it has none
// of ntag424.k0..k4), so provision_ntag424 sessions work without deleting
// the file (which would lose the DESFire keys of cards issued with it).
// Files that are not development keys are never rewritten.
func migrateDevKeys(path string, log *zap.Logger) error {
	f, err := keys.ReadFile(path)
	if err != nil || !f.Dev {
		return err
	}
	n, err := keys.AddNTAG424DevKeys(&f, nil)
	if err != nil || n == 0 {
		return err
	}
	if err := keys.WriteFile(path, f); err != nil {
		return fmt.Errorf("add NTAG 424 DNA keys to %s: %w", path, err)
	}
	log.Warn("added NTAG 424 DNA development keys to the development key file", zap.String("file", path), zap.Int("keys", n))
	return nil
}

// devAPIKeyFile holds the development API key in the data directory.
const devAPIKeyFile = "dev-api-key"

// devAPIKey returns the hash of the development API key, generating it on
// first start into data/dev-api-key (0600). The key is never printed or
// logged (container logs are widely readable); the log says where it is.
func devAPIKey(dir string, log *zap.Logger) (string, error) {
	path := filepath.Join(dir, devAPIKeyFile)
	if b, err := os.ReadFile(path); err == nil {
		key := strings.TrimSpace(string(b))
		log.Warn("using the development API key (dev mode only)", zap.String("file", path))
		return config.HashAPIKey(key), nil
	}
	raw := make([]byte, 24)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	key := "dev_" + hex.EncodeToString(raw)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("write dev API key: %w", err)
	}
	if _, err := f.WriteString(key); err != nil {
		f.Close()
		return "", fmt.Errorf("write dev API key: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("write dev API key: %w", err)
	}
	log.Warn("GENERATED A DEVELOPMENT API KEY — read it from the file (mode 0600); refused in production", zap.String("file", path))
	return config.HashAPIKey(key), nil
}
