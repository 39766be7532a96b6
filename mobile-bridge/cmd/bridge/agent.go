package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/desfire-relay/relay/desfire"
	"github.com/desfire-relay/relay/mobile-bridge/bridge"
)

// agentRun is -agent: the bridge becomes a registered reader's agent and
// runs every session the server addresses to the reader until ctx ends.
// The card comes from cards for each session.
func agentRun(ctx context.Context, o bridge.AgentOptions, cards bridge.CardSource, out io.Writer) int {
	o.OnPrompt = func(text string, _ *float64) { fmt.Fprintf(os.Stderr, "» %s\n", text) }
	o.OnSession = func(rep *bridge.Report, err error) {
		if rep != nil {
			r := rep.Result
			fmt.Fprintf(out, "session %s: ok=%v kind=%s balance=%s exchanges=%d\n", r.SessionID, r.OK, r.Kind, fmtBalance(r.Balance, r.Currency), rep.Exchanges)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bridge: session:", err)
		}
	}
	fmt.Fprintf(os.Stderr, "bridge: agent connecting to %s\n", o.URL)
	err := bridge.RunAgent(ctx, o, cards)
	if ctx.Err() != nil {
		return 0
	}
	fmt.Fprintln(os.Stderr, "bridge:", err)
	return 1
}

// pcscCards waits for a card on the PC/SC reader for each session; the
// previous session's reader handle is released first.
func pcscCards(reader string, wait time.Duration) bridge.CardSource {
	var prev cardBackend
	return func(ctx context.Context) (desfire.Transport, bridge.CardInfo, error) {
		if prev.close != nil {
			_ = prev.close()
			prev = cardBackend{}
		}
		b, err := openPCSC(ctx, reader, wait)
		if err != nil {
			return nil, bridge.CardInfo{}, err
		}
		prev = b
		return b.card, b.info, nil
	}
}

type agentFlags struct {
	credential                         string // $RELAY_AGENT_CREDENTIAL
	url, reader, keyFile, profile, uid string
	sim, pcsc, batch                   bool
	wait                               time.Duration
	initial                            int32
}

// runAgentFlags checks -agent's flags and runs the agent until ctx ends
// (SIGINT), printing one line per session to out.
func runAgentFlags(ctx context.Context, f agentFlags, out io.Writer) int {
	if f.credential == "" || f.sim == f.pcsc {
		fmt.Fprintln(os.Stderr, "bridge: -agent needs $RELAY_AGENT_CREDENTIAL and one card backend (-sim or -pcsc)")
		return 2
	}
	o := bridge.AgentOptions{URL: f.url, Credential: f.credential, Name: "relay-bridge-agent", Version: "1", Batch: f.batch}
	if f.pcsc {
		o.Platform = "pcsc"
		return agentRun(ctx, o, pcscCards(f.reader, f.wait), out)
	}
	uid, err := hex.DecodeString(f.uid)
	if err != nil || len(uid) != 7 {
		fmt.Fprintln(os.Stderr, "bridge: -uid must be 7 bytes of hex")
		return 2
	}
	card, err := bridge.IssueSim(ctx, f.keyFile, f.profile, uid, f.initial)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bridge:", err)
		return 1
	}
	o.Platform = "sim"
	return agentRun(ctx, o, bridge.SimCards(card), out)
}
