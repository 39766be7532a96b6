package server_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/desfire-relay/relay/internal/testbackend"
	"github.com/desfire-relay/relay/internal/testserver"
	"github.com/desfire-relay/relay/server"
	"github.com/desfire-relay/relay/transaction/profile"
)

// browser drives one headless Chromium tab for a console test.
type browser struct {
	t   *testing.T
	ctx context.Context
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.NoSandbox,
		chromedp.WindowSize(1366, 768), // a laptop screen
		chromedp.Flag("headless", "new"),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(func() { cancelTimeout(); cancel(); cancelAlloc() })
	return &browser{t: t, ctx: ctx}
}

func (b *browser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, steps...); err != nil {
		b.t.Fatalf("chromium: %s: %v", what, err)
	}
}

// text reads the text of the first element matching a CSS selector.
func (b *browser) text(sel string) string {
	b.t.Helper()
	s, err := chromedp.Run(b.ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("chromium: read %s: %v", sel, err)
	}
	return strings.TrimSpace(s)
}

// shot saves a full-page screenshot as a test artefact and prints where.
func (b *browser) shot(name string) {
	b.t.Helper()
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("chromium: screenshot %s: %v", name, err)
	}
	if len(png) < 1000 {
		b.t.Fatalf("screenshot %s of %d bytes", name, len(png))
	}
	path, err := filepath.Abs(filepath.Join(artefactDir(b.t), "console-"+name+".png"))
	if err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot: %s (%d bytes)", path, len(png))
}

// TestConsoleInChromium drives the support console in a real headless
// Chromium the way a support agent uses it: log in with an API key (a
// wrong key first), find a card (a malformed UID first), read its balance
// and log through a desk reader in agent mode (the reference bridge's
// agent with a simulated card), resolve an in_doubt top-up (without a
// reason first), reverse a top-up on the desk reader, and block the card.
func TestConsoleInChromium(t *testing.T) {
	h := testserver.New(t, testbackend.Backends()[0], profile.AN12113(), testserver.Options{})
	deskUID := []byte{0x04, 0xDE, 0x5C, 0x00, 0x11, 0x22, 0x33}
	desk := h.Card(deskUID, 1000)
	// An earlier top-up of the desk card, so its log has a record.
	earlier, tok := h.TopUp("console-earlier", 250, "")
	if rep, err := h.Bridge(tok, desk, true); err != nil || !rep.Result.OK {
		t.Fatalf("earlier top-up: %v %+v", err, rep)
	}
	cred := registerReader(t, h, "desk-1")
	reports := deskAgent(t, agentURL(h.HTTP.URL), cred, desk)
	waitFor(t, "the desk reader online", online(h, "desk-1"))

	// A top-up left in_doubt: the card committed, its answer was lost.
	torn := h.Card([]byte{0x04, 0x7E, 0x50, 0x11, 0x22, 0x33, 0x44}, 100)
	inDoubt, tok := h.TopUp("console-torn", 300, "")
	torn.SetTearAfterCommit(true)
	if rep, err := h.Bridge(tok, torn, true); err == nil && rep.Result.OK {
		t.Fatalf("torn session ended ok: %+v", rep.Result)
	}
	if s := h.Status(inDoubt); s != "in_doubt" {
		t.Fatalf("torn top-up is %s", s)
	}

	b := newBrowser(t)
	base := h.HTTP.URL + "/console/"

	// Log in: the console sends an anonymous visitor to the login page.
	b.do("open console", chromedp.Navigate(base), chromedp.WaitVisible(chromedp.ID("api_key")))
	b.shot("1-login")
	b.do("wrong key", chromedp.SendKeys(chromedp.ID("api_key"), "not-a-key"), chromedp.Click(chromedp.ID("login")),
		chromedp.WaitVisible(chromedp.ID("api_key-error")))
	if got := b.text("#api_key-error"); got != "Unknown API key." {
		t.Fatalf("wrong key shows %q", got)
	}
	b.do("log in", chromedp.SendKeys(chromedp.ID("api_key"), testserver.APIKey), chromedp.Click(chromedp.ID("login")),
		chromedp.WaitVisible(chromedp.ID("queue")))
	if got := b.text(fmt.Sprintf(`tr[data-topup="%s"] .status`, inDoubt)); got != "in_doubt" {
		t.Fatalf("queue shows the in_doubt top-up as %q", got)
	}
	b.shot("2-queue")

	// Find a card: a malformed UID first.
	b.do("bad uid", chromedp.SendKeys(chromedp.ID("uid"), "04XYZ"), chromedp.Click(chromedp.ID("find")),
		chromedp.WaitVisible(chromedp.ID("uid-error")))
	if got := b.text("#uid-error"); !strings.Contains(got, "hex digits") {
		t.Fatalf("malformed UID shows %q", got)
	}
	b.do("find card", chromedp.SetValue(chromedp.ID("uid"), "04 DE 5C 00 11 22 33"), chromedp.Click(chromedp.ID("find")),
		chromedp.WaitVisible(chromedp.ID("card-uid")))
	if got := b.text("#card-uid"); got != "04DE5C00112233" {
		t.Fatalf("card page for %q", got)
	}

	// The balance through the desk reader: no reader chosen first.
	b.do("no reader", chromedp.Click(chromedp.ID("read-balance")), chromedp.WaitVisible(chromedp.ID("reader-error")))
	b.do("read balance", chromedp.SetValue(chromedp.ID("reader"), "desk-1"), chromedp.Click(chromedp.ID("read-balance")),
		chromedp.WaitVisible(chromedp.ID("balance")))
	if got := b.text("#balance"); got != "12.50 EUR" {
		t.Fatalf("balance shows %q", got)
	}
	if got := b.text("#session-card"); got != "04DE5C00112233" {
		t.Fatalf("balance of card %q", got)
	}
	if got := b.text("tr.record"); !strings.HasPrefix(got, "topup\t2.50 EUR") {
		t.Fatalf("card log shows %q", got)
	}
	if rep := <-reports; rep == nil || !rep.Result.OK || *rep.Result.Balance != 1250 || len(rep.Result.Records) != 1 {
		t.Fatalf("the desk reader's agent reports %+v", rep)
	}
	b.shot("3-balance")

	// Resolve the in_doubt top-up: without a reason first.
	b.do("open top-up", chromedp.Navigate(base+"topups/"+inDoubt), chromedp.WaitVisible(chromedp.ID("resolve-form")))
	b.do("resolve without reason", chromedp.Click(chromedp.ID("outcome-applied")), chromedp.Click(chromedp.ID("resolve")),
		chromedp.WaitVisible(chromedp.ID("reason-error")))
	if got := b.text("#reason-error"); !strings.Contains(got, "reason is required") {
		t.Fatalf("missing reason shows %q", got)
	}
	if s := h.Status(inDoubt); s != "in_doubt" {
		t.Fatalf("refused form changed the top-up to %s", s)
	}
	b.shot("4-resolve-refused")
	const why = "Card read at the desk shows the credit in its log"
	b.do("resolve", chromedp.SendKeys(chromedp.ID("resolve-reason"), why), chromedp.Click(chromedp.ID("resolve")),
		chromedp.WaitVisible(chromedp.ID("notice")))
	if got := b.text("#topup-status"); got != "applied" {
		t.Fatalf("resolved top-up shows %q", got)
	}
	if got := b.text(".resolution-reason"); got != why {
		t.Fatalf("resolution reason shows %q", got)
	}
	code, out := h.API("GET", "/v1/topups/"+inDoubt, "", nil)
	res, _ := out["resolution"].(map[string]any)
	hist, _ := res["history"].([]any)
	if code != http.StatusOK || out["status"] != "applied" || len(hist) != 1 || hist[0].(map[string]any)["reason"] != why ||
		!strings.HasPrefix(hist[0].(map[string]any)["actor"].(string), "key:") {
		t.Fatalf("ledger after the console's resolve: %d %v", code, out)
	}
	b.shot("5-resolved")

	// Reverse the desk card's earlier top-up and run the reversal on the
	// desk reader: the card gives the 2.50 EUR back, once.
	b.do("open earlier top-up", chromedp.Navigate(base+"topups/"+earlier), chromedp.WaitVisible(chromedp.ID("reverse")))
	b.do("reverse", chromedp.Click(chromedp.ID("reverse")), chromedp.WaitVisible(chromedp.ID("run-form")))
	if got := b.text("#topup-kind"); !strings.HasPrefix(got, "reversal of "+earlier) {
		t.Fatalf("reversal page shows kind %q", got)
	}
	b.do("run reversal", chromedp.SetValue(chromedp.ID("run-reader"), "desk-1"), chromedp.Click(chromedp.ID("run")),
		chromedp.WaitVisible(chromedp.ID("balance")))
	if got := b.text("#balance"); got != "10.00 EUR" {
		t.Fatalf("balance after the reversal shows %q", got)
	}
	if rep := <-reports; rep == nil || !rep.Result.OK || *rep.Result.Balance != 1000 {
		t.Fatalf("the desk reader's agent reports %+v", rep)
	}
	b.shot("6-reversed")
	b.do("open reversal", chromedp.Click(chromedp.ID("session-topup")), chromedp.WaitVisible(chromedp.ID("topup-status")))
	if got := b.text("#topup-status"); got != "applied" {
		t.Fatalf("reversal shows %q", got)
	}

	blockCardStep(t, h, b, base)
}

// blockCardStep blocks the desk card from its console page. The hot list
// (PUT /v1/cards/{uid}/block) comes with another branch: until this
// server has the route, the console must say so and change nothing.
func blockCardStep(t *testing.T, h *testserver.Harness, b *browser, base string) {
	b.do("open card", chromedp.Navigate(base+"cards?uid=04DE5C00112233"), chromedp.WaitVisible(chromedp.ID("block-form")))
	b.do("block without reason", chromedp.Click(chromedp.ID("block")), chromedp.WaitVisible(chromedp.ID("reason-error")))
	b.do("block", chromedp.SendKeys(chromedp.ID("block-reason"), "Reported stolen by the customer"), chromedp.Click(chromedp.ID("block")),
		chromedp.WaitNotPresent(chromedp.ID("reason-error")), chromedp.WaitVisible(chromedp.ID("card-uid")))
	if !slices.Contains(server.Routes(), "PUT /v1/cards/{uid}/block") {
		if got := b.text("#error"); !strings.Contains(got, "not available on this server yet") {
			t.Fatalf("block without the hot list shows %q", got)
		}
		b.shot("7-block-unavailable")
		return
	}
	if got := b.text("#notice"); !strings.Contains(got, "blocked") {
		t.Fatalf("block shows %q", got)
	}
	if got := b.text("#block-status"); !strings.HasPrefix(got, "Blocked since") || !strings.Contains(got, "Reported stolen by the customer") {
		t.Fatalf("block status shows %q", got)
	}
	code, out := h.API("POST", "/v1/topups", "console-blocked", map[string]any{"amount": 100, "currency": "EUR", "card_uid": "04DE5C00112233"})
	if code != http.StatusConflict || errCode(out) != "card_blocked" {
		t.Fatalf("top-up for the blocked card: %d %v", code, out)
	}
	b.shot("7-blocked")
	b.do("unblock", chromedp.SendKeys(chromedp.ID("block-reason"), "Card found by the customer"), chromedp.Click(chromedp.ID("unblock")),
		chromedp.WaitVisible(chromedp.CSS(`#block-status[data-blocked="false"]`)))
	if got := b.text("#block-status"); got != "Not blocked." {
		t.Fatalf("after unblock the status shows %q", got)
	}
}
