package server_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"golang.org/x/time/rate"

	"github.com/desfire-relay/relay/internal/testbackend"
	"github.com/desfire-relay/relay/server"
)

// chromiumPath finds a Chromium or Chrome binary (scripts/test.sh
// installs chromium when it is missing).
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{os.Getenv("CHROMIUM"), "chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if name == "" {
			continue
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no chromium on PATH: install it (apt-get install chromium) or set CHROMIUM; scripts/test.sh does")
	return ""
}

// artefactDir is where screenshots are kept: $TEST_ARTEFACTS, or
// tmp/artefacts at the repository root (ignored by git).
func artefactDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("TEST_ARTEFACTS")
	if dir == "" {
		dir = filepath.Join("..", "tmp", "artefacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestSUNPageInChromium opens tag URLs in a real headless Chromium, the
// way a phone opens the link a tag wrote: the browser's own Accept header
// must select the HTML page, which must show the verdict and the tag, and
// a second visit of the same URL must say it was already used.
func TestSUNPageInChromium(t *testing.T) {
	h := newSUNHarness(t, testbackend.SQLiteLedger(t), server.SUNOptions{PerClient: rate.Inf, PerTag: rate.Inf})
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.NoSandbox,
		chromedp.WindowSize(390, 844), // a phone's viewport
		chromedp.Flag("headless", "new"),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	defer cancelTimeout()

	url := h.url + "/v1/sun/aes?" + h.read(t, "aes")
	page := func(t *testing.T) (status, headline string, shot []byte) {
		t.Helper()
		if err := chromedp.Do(ctx, chromedp.Navigate(url), chromedp.WaitVisible(chromedp.ID("verdict"))); err != nil {
			t.Fatalf("chromium: %v", err)
		}
		attr, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.ID("verdict"), "data-status"))
		if err != nil {
			t.Fatalf("chromium: %v", err)
		}
		if headline, err = chromedp.Run(ctx, chromedp.Text(chromedp.ID("verdict"))); err != nil {
			t.Fatalf("chromium: %v", err)
		}
		if shot, err = chromedp.Run(ctx, chromedp.FullScreenshot(100)); err != nil {
			t.Fatalf("chromium: %v", err)
		}
		return attr.Value, headline, shot
	}
	text := func(t *testing.T, id string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID(id)))
		if err != nil {
			t.Fatalf("chromium: %s: %v", id, err)
		}
		return v
	}

	status, headline, shot := page(t)
	uid, counter := text(t, "uid"), text(t, "counter")
	if status != "authentic" || headline != "Genuine tag" || uid != "04515253545580" || counter != "1" {
		t.Fatalf("page shows status %q headline %q uid %q counter %q", status, headline, uid, counter)
	}
	if len(shot) < 1000 {
		t.Fatalf("screenshot of %d bytes", len(shot))
	}
	path := filepath.Join(artefactDir(t), "sun-authentic.png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", path, len(shot))

	// The same URL again: replayed. (Quality 100 makes the screenshots PNG.)
	status, headline, shot = page(t)
	if status != "replayed" || !strings.Contains(headline, "already used") {
		t.Fatalf("second visit shows %q %q", status, headline)
	}
	if err := os.WriteFile(filepath.Join(artefactDir(t), "sun-replayed.png"), shot, 0o644); err != nil {
		t.Fatal(err)
	}
}
