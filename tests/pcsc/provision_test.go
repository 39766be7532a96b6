//go:build pcsc

package pcsc

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/desfire-relay/relay/desfire/ntag424/simtag"
	"github.com/desfire-relay/relay/desfire/simcard"
	"github.com/desfire-relay/relay/internal/testbackend"
	"github.com/desfire-relay/relay/internal/testcard"
	"github.com/desfire-relay/relay/internal/testserver"
	"github.com/desfire-relay/relay/internal/vpcdtest"
	"github.com/desfire-relay/relay/mobile-bridge/bridge"
	"github.com/desfire-relay/relay/mobile-bridge/pcsc"
	"github.com/desfire-relay/relay/mobile-bridge/vpcd"
	"github.com/desfire-relay/relay/transaction/profile"
)

// presentCard connects any virtual card to vpcd until the test ends.
func presentCard(t *testing.T, ctx context.Context, addr string, vc vpcd.Card) {
	t.Helper()
	c, err := vpcd.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Serve(ctx, vc) }()
	t.Cleanup(func() { c.Close(); <-done })
}

// TestProvisionNTAG424OverPCSC: a factory-state simulated NTAG 424 DNA on
// the virtual reader is personalised by the PC/SC bridge through pcscd,
// then read as a phone reads it (through pcscd too); the SUN verifies.
func TestProvisionNTAG424OverPCSC(t *testing.T) {
	addr, reader := vpcdtest.Stack(t, pcsc.ListReaders)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	h := testserver.New(t, testbackend.Backends()[0], profile.AN12113(), testserver.Options{Provision: true})
	tag, err := simtag.New(simtag.Options{UID: []byte{0x04, 0x42, 0x44, 0x4E, 0x41, 0x32, 0x34}})
	if err != nil {
		t.Fatal(err)
	}
	presentCard(t, ctx, addr, vpcd.Card{Transport: bridge.SimTag{Tag: tag}, UID: tag.AnticollisionUID(), ATS: bridge.NTAG424ATS})
	r, err := pcsc.Open(ctx, pcsc.Options{Reader: reader, Wait: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	code, s := h.API("POST", "/v1/sessions", "", map[string]any{"kind": "provision_ntag424", "template": "https://sun.example.com/t?p={picc}&m={mac}", "lock": true})
	if code != http.StatusCreated {
		t.Fatalf("session: %d %v", code, s)
	}
	sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
	defer scancel()
	rep, err := bridge.Run(sctx, bridge.Options{URL: h.WSURL(), Token: s["bridge_token"].(string), Name: "pcsc-e2e", Version: "1", Platform: "pcsc", Batch: true}, r, r.Info())
	if err != nil || !rep.Result.OK {
		t.Fatalf("provision over PC/SC: %v %+v", err, rep)
	}
	t.Logf("provisioned over PC/SC in %d exchanges, %d APDUs", rep.Exchanges, rep.Commands)
	// The phone's read, through the same reader.
	url, _, err := testcard.ReadSUN(ctx, r, h.Keys, tag.UID())
	if err != nil {
		t.Fatalf("phone read over PC/SC: %v", err)
	}
	t.Logf("phone read over PC/SC: %s", url)
}

// TestIssueOverPCSC: a blank simulated DESFire card on the virtual reader
// is issued by the PC/SC bridge through pcscd, then topped up.
func TestIssueOverPCSC(t *testing.T) {
	addr, reader := vpcdtest.Stack(t, pcsc.ListReaders)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := profile.AN12113()
	h := testserver.New(t, testbackend.Backends()[0], p, testserver.Options{Provision: true})
	card, err := simcard.New(simcard.Options{UID: []byte{0x04, 0x15, 0x5E, 0xD0, 0x11, 0x22, 0x33}})
	if err != nil {
		t.Fatal(err)
	}
	presentCard(t, ctx, addr, vpcd.Card{Transport: bridge.Sim{Card: card}, UID: card.UID()})
	r, err := pcsc.Open(ctx, pcsc.Options{Reader: reader, Wait: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	run := func(token string) *bridge.Report {
		t.Helper()
		sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
		defer scancel()
		rep, err := bridge.Run(sctx, bridge.Options{URL: h.WSURL(), Token: token, Name: "pcsc-e2e", Version: "1", Platform: "pcsc", Batch: true}, r, r.Info())
		if err != nil || !rep.Result.OK {
			t.Fatalf("session over PC/SC: %v %+v", err, rep)
		}
		return rep
	}
	code, s := h.API("POST", "/v1/sessions", "", map[string]any{"kind": "issue", "profile": p.Name, "initial": 100})
	if code != http.StatusCreated {
		t.Fatalf("issue session: %d %v", code, s)
	}
	rep := run(s["bridge_token"].(string))
	t.Logf("issued over PC/SC in %d exchanges, %d APDUs", rep.Exchanges, rep.Commands)
	_, token := h.TopUp("pcsc-issue-topup", 250, "")
	if rep := run(token); rep.Result.Status != "applied" || *rep.Result.Balance != 350 {
		t.Fatalf("top-up after issue: %+v", rep.Result)
	}
}
