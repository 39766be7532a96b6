package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/desfire-relay/relay/internal/testserver"
	"github.com/desfire-relay/relay/server"
	"github.com/desfire-relay/relay/server/config"
	"github.com/desfire-relay/relay/transaction/keys"
)

func TestDevDefaultsNeedNothing(t *testing.T) {
	cfg := config.Default()
	cfg.DataDir = filepath.Join(t.TempDir(), "data")
	a, err := build(context.Background(), cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	for _, f := range []string{"dev-keys.json", "dev-api-key"} {
		st, err := os.Stat(filepath.Join(cfg.DataDir, f))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, err, st)
		}
	}
	// A restart reuses the generated keys and API key.
	b, err := build(context.Background(), cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	b.close()
}

func TestProductionRefusesDevKeys(t *testing.T) {
	dir := t.TempDir()
	f, _ := keys.DevFile(nil, 0x014499)
	path := filepath.Join(dir, "keys.json")
	if err := keys.WriteFile(path, f); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Mode, cfg.DataDir, cfg.KeyFile = config.ModeProduction, dir, path
	_, err := build(context.Background(), cfg, zap.NewNop())
	if !errors.Is(err, keys.ErrDevKeys) {
		t.Fatalf("production with dev keys: %v", err)
	}
	os.Chmod(path, 0o644)
	if _, err := build(context.Background(), cfg, zap.NewNop()); !errors.Is(err, keys.ErrPermissions) {
		t.Fatalf("world-readable key file: %v", err)
	}
}

// TestDevAPIKeyOnlyInFile: the generated development API key goes to a
// 0600 file only; the log names the file and never holds the key.
func TestDevAPIKeyOnlyInFile(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	cfg := config.Default()
	cfg.DataDir = filepath.Join(t.TempDir(), "data")
	a, err := build(context.Background(), cfg, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	path := filepath.Join(cfg.DataDir, devAPIKeyFile)
	key, err := os.ReadFile(path)
	if err != nil || len(key) < 20 {
		t.Fatalf("dev key file: %q %v", key, err)
	}
	named := false
	for _, e := range logs.All() {
		line := e.Message + fmt.Sprint(e.ContextMap())
		if strings.Contains(line, string(key)) {
			t.Fatalf("the log holds the dev API key: %s", line)
		}
		if strings.Contains(e.Message, "DEVELOPMENT API KEY") && e.ContextMap()["file"] == path {
			named = true
		}
	}
	if !named {
		t.Fatalf("no log line names %s", path)
	}
}

// TestProductionRefusesDevAPIKey: a production server configured with the
// data directory's development API key does not start.
func TestProductionRefusesDevAPIKey(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, devAPIKeyFile), []byte("dev_0123456789abcdef"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Mode, cfg.DataDir = config.ModeProduction, dir
	other := config.HashAPIKey("a-real-key")
	if _, err := apiKeys(cfg, []string{other}); err != nil {
		t.Fatalf("real key refused: %v", err)
	}
	_, err := apiKeys(cfg, []string{other, config.HashAPIKey("dev_0123456789abcdef")})
	if !errors.Is(err, config.ErrConfig) {
		t.Fatalf("production accepted the dev API key: %v", err)
	}
	cfg.Mode = config.ModeDev
	if _, err := apiKeys(cfg, []string{config.HashAPIKey("dev_0123456789abcdef")}); err != nil {
		t.Fatalf("dev mode refused its own key: %v", err)
	}
}

// TestKeysReloadOnSIGHUP: rewriting the API keys file and sending SIGHUP
// rotates the keys of a running server: the new key works, the removed
// one is refused, without a restart.
func TestKeysReloadOnSIGHUP(t *testing.T) {
	// Our own subscription first: a SIGHUP never reaches the default
	// action (exit) whatever the timing.
	mine := make(chan os.Signal, 8)
	signal.Notify(mine, syscall.SIGHUP)
	defer signal.Stop(mine)

	dir := t.TempDir()
	keysFile := filepath.Join(dir, "api-keys.json")
	write := func(id, key string) {
		body := fmt.Sprintf(`{"keys":[{"id":%q,"sha256":%q,"tenant":"acme"}]}`, id, config.HashAPIKey(key))
		if err := os.WriteFile(keysFile, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("old", "old-key")
	cfg := config.Default()
	cfg.DataDir, cfg.APIKeysFile = filepath.Join(dir, "data"), keysFile
	a, err := build(context.Background(), cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	hs := testserver.Serve(t, a.srv.Handler())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); a.reloadOnHUP(ctx, cfg, zap.NewNop()) }()
	defer func() { cancel(); <-done }()

	status := func(key string) int {
		req, _ := http.NewRequest(http.MethodGet, hs.URL+"/v1/topups", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := status("old-key"); got != http.StatusOK {
		t.Fatalf("old key before rotation: %d", got)
	}
	write("new", "new-key")
	for i := 0; status("new-key") != http.StatusOK; i++ {
		if i == 200 {
			t.Fatal("new key still refused after SIGHUP")
		}
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := status("old-key"); got != http.StatusUnauthorized {
		t.Fatalf("removed key after rotation: %d, want 401", got)
	}
}

// TestPublicServerTLS: relayd's public listener, serving TLS itself the
// way run does (ServeTLS with a certificate file), refuses a client that
// offers only CBC suites and sends HSTS.
func TestPublicServerTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	pool := writeTestCert(t, certFile, keyFile)
	cfg := config.Default()
	cfg.DataDir, cfg.TLSCert, cfg.TLSKey = filepath.Join(dir, "data"), certFile, keyFile
	a, err := build(context.Background(), cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	srv := publicServer(cfg, a.srv.Handler(), zap.NewNop())
	srv.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeTLS(ln, certFile, keyFile)
	defer srv.Close()
	dial := func(c *tls.Config) error {
		c.RootCAs, c.ServerName = pool, "127.0.0.1"
		conn, err := tls.Dial("tcp", ln.Addr().String(), c)
		if err != nil {
			return err
		}
		return conn.Close()
	}
	if err := dial(&tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA}}); err == nil {
		t.Fatal("relayd accepted a client offering only CBC suites")
	}
	if err := dial(&tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}}); err != nil {
		t.Fatalf("TLS 1.2 with AES-GCM: %v", err)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}}}
	resp, err := client.Get("https://" + ln.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Strict-Transport-Security") == "" {
		t.Fatal("no HSTS over TLS")
	}
	if resp, err := client.Get("https://" + ln.Addr().String() + "/metrics"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("public /metrics: %v %v", err, resp)
	}
}

// writeTestCert writes a self-signed ECDSA certificate for 127.0.0.1.
func writeTestCert(t *testing.T, certFile, keyFile string) *x509.CertPool {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "relayd test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool
}

// TestDefaultsAgree: a default stated in the configuration and in the
// server it configures is one value.
func TestDefaultsAgree(t *testing.T) {
	if got := config.Default().MaxSessions; got != server.DefaultMaxSessions {
		t.Fatalf("max-sessions default %d in config, %d in server", got, server.DefaultMaxSessions)
	}
}

// TestOldDevKeysGetNTAG424Keys: a development key file generated before
// provisioning existed (no ntag424.k0..k4) gets them on start, keeping
// every key it had; a second start changes nothing.
func TestOldDevKeysGetNTAG424Keys(t *testing.T) {
	cfg := config.Default()
	cfg.DataDir = filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(cfg.DataDir, "dev-keys.json")
	f, err := keys.DevFile(nil, 0x014499)
	if err != nil {
		t.Fatal(err)
	}
	var old keys.File = f
	old.Keys = nil
	for _, e := range f.Keys {
		if !strings.HasPrefix(e.Name, "ntag424.") {
			old.Keys = append(old.Keys, e)
		}
	}
	if err := keys.WriteFile(path, old); err != nil {
		t.Fatal(err)
	}
	a, err := build(context.Background(), cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	a.close()
	got, err := keys.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Keys) != len(old.Keys)+keys.NTAG424Keys {
		t.Fatalf("%d keys after migration, want %d", len(got.Keys), len(old.Keys)+keys.NTAG424Keys)
	}
	for i, e := range old.Keys {
		if got.Keys[i] != e {
			t.Fatalf("key %d changed: %v", i, got.Keys[i].Name)
		}
	}
	a, err = build(context.Background(), cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	a.close()
	again, _ := keys.ReadFile(path)
	if len(again.Keys) != len(got.Keys) || again.Keys[len(again.Keys)-1] != got.Keys[len(got.Keys)-1] {
		t.Fatal("second start rewrote the keys")
	}
}
