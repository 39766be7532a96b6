package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/desfire-relay/relay/server/config"
)

// apiKeyUsage is the admin subcommand's help.
const apiKeyUsage = `usage: relayd apikey create -id ID -tenant TENANT [-expires RFC3339] [-file KEYS.json]

Creates an operator API key: prints the key once (hand it to the
operator's backend; the relay never stores it) and the entry for the API
keys file (RELAY_API_KEYS_FILE), which holds only its SHA-256. With -file
the entry is added to that file (created 0600 when missing); send SIGHUP
to relayd to load it`

// runAPIKey runs "relayd apikey ...", writing to out.
func runAPIKey(args []string, out io.Writer) error {
	if len(args) == 0 || args[0] != "create" {
		return errors.New(apiKeyUsage)
	}
	fs := flag.NewFlagSet("relayd apikey create", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	id := fs.String("id", "", "key id, shown in logs and the audit trail (1..64 printable ASCII)")
	tenant := fs.String("tenant", "default", "tenant the key acts for")
	expires := fs.String("expires", "", "expiry, RFC 3339 (optional)")
	file := fs.String("file", "", "API keys file to add the entry to (optional)")
	if err := fs.Parse(args[1:]); err != nil {
		return fmt.Errorf("%w\n\n%s", err, apiKeyUsage)
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("unexpected argument %q\n\n%s", fs.Arg(0), apiKeyUsage)
	}
	key, err := newAPIKey()
	if err != nil {
		return err
	}
	e := config.APIKeyEntry{ID: *id, SHA256: config.HashAPIKey(key), Tenant: *tenant}
	if *expires != "" {
		at, err := time.Parse(time.RFC3339, *expires)
		if err != nil {
			return fmt.Errorf("-expires: an RFC 3339 time such as 2027-01-01T00:00:00Z: %w", err)
		}
		e.ExpiresAt = &at
	}
	if err := config.CheckAPIKeys([]config.APIKeyEntry{e}); err != nil {
		return err
	}
	entry, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode entry: %w", err)
	}
	if *file != "" {
		if err := addAPIKey(*file, e); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "key: %s\n", key)
	fmt.Fprintf(out, "sha256: %s\n", e.SHA256)
	fmt.Fprintf(out, "entry: %s\n", entry)
	if *file != "" {
		fmt.Fprintf(out, "added to %s; send SIGHUP to relayd to load it\n", *file)
	}
	fmt.Fprintln(out, "The key is shown once: hand it to the operator's backend now.")
	return nil
}

// newAPIKey returns 32 random bytes, base64url.
func newAPIKey() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("key randomness: %w", err)
	}
	return "rk_" + base64.RawURLEncoding.EncodeToString(b), nil
}

// addAPIKey adds e to the API keys file at path (created 0600 when
// missing), refusing a duplicate id or digest, and replaces the file in
// one rename so relayd never reads half of it.
func addAPIKey(path string, e config.APIKeyEntry) error {
	var f config.APIKeyFile
	entries, err := config.LoadAPIKeys(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return err
	default:
		f.Keys = entries
	}
	f.Keys = append(f.Keys, e)
	if err := config.CheckAPIKeys(f.Keys); err != nil {
		return err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(f); err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".apikeys-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // after the rename: nothing left
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(buf.Bytes()); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
