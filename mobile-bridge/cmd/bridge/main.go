// Command bridge is the reference bridge: it connects to the relay with a
// bridge token and relays the server's APDUs to a card. With -sim the card
// is a simulated DESFire card, issued on the spot through the real
// issuance commands from a key file and card profile, so the whole flow
// runs without hardware. With -pcsc (build tag pcsc) the card is in a PC/SC
// reader (-list-readers, -reader, -wait). It prints the server's prompts
// and the result, and exits non-zero when the session did not succeed.
//
// With -agent the bridge is a registered reader's agent (agent mode,
// docs/PROTOCOL.md): it keeps one connection to /v1/agent, authenticated
// by the reader's agent credential ($RELAY_AGENT_CREDENTIAL, so it never
// shows in a process list), and runs every session the server addresses
// to the reader, with the card from -sim or -pcsc, until interrupted.
package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"time"

	"github.com/desfire-relay/relay/mobile-bridge/bridge"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("bridge", flag.ContinueOnError)
	url := fs.String("url", "ws://127.0.0.1:8080/v1/bridge", "relay bridge endpoint")
	token := fs.String("token", "", "bridge token (required)")
	sim := fs.Bool("sim", false, "use a simulated card")
	usePCSC := fs.Bool("pcsc", false, "use a PC/SC reader (build with -tags pcsc)")
	readerName := fs.String("reader", "", "PC/SC reader name substring (default: the first reader)")
	listReaders := fs.Bool("list-readers", false, "list the PC/SC readers and exit")
	wait := fs.Duration("wait", 30*time.Second, "how long to wait for a card on the PC/SC reader")
	keyFile := fs.String("keys", "data/dev-keys.json", "key file used to issue the simulated card")
	profName := fs.String("profile", "an12113-ev2", "card profile of the simulated card")
	uidHex := fs.String("uid", "04A1B2C3D4E5F6", "UID of the simulated card (7 bytes hex)")
	initial := fs.Int("initial", 0, "initial value of the simulated card")
	noBatch := fs.Bool("no-batch", false, "do not announce the batch feature")
	oneWay := fs.Duration("latency", 0, "injected one-way latency per message")
	jitter := fs.Duration("jitter", 0, "latency jitter (±)")
	dropAfter := fs.Int("drop-after", 0, "the simulated card leaves the field after N APDUs")
	query := fs.Bool("query-token", false, "send the token as ?token= instead of a header (only for a server started with allow-token-in-query: proxies log URLs)")
	timeout := fs.Duration("timeout", 2*time.Minute, "give up after this long")
	jsonOut := fs.Bool("json", false, "print the result as JSON")
	fleetN := fs.Int("n", 0, "run N simulated bridges at once, each with its own card and a token from the operator API (needs -api-key)")
	apiURL := fs.String("api-url", "http://127.0.0.1:8080", "operator API base URL, for -n")
	apiKey := fs.String("api-key", "", "operator API key, for -n")
	amount := fs.Int64("amount", 100, "top-up amount in cents for -n (0: balance lookups)")
	agent := fs.Bool("agent", false, "run as a registered reader's agent (credential in $RELAY_AGENT_CREDENTIAL; -url defaults to .../v1/agent)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	urlSet := false
	fs.Visit(func(f *flag.Flag) { urlSet = urlSet || f.Name == "url" })
	if *agent && !urlSet {
		*url = "ws://127.0.0.1:8080/v1/agent"
	}
	if *listReaders {
		if err := listPCSCReaders(os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "bridge:", err)
			return 1
		}
		return 0
	}
	if *fleetN > 0 {
		uid, err := hex.DecodeString(*uidHex)
		if err != nil || len(uid) != 7 || !*sim || *apiKey == "" {
			fmt.Fprintln(os.Stderr, "bridge: -n needs -sim, -api-key and a 7-byte -uid")
			return 2
		}
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		defer cancel()
		return fleet{n: *fleetN, apiURL: *apiURL, apiKey: *apiKey, amount: *amount, currency: "EUR", uid: uid,
			initial: int32(*initial), keyFile: *keyFile, profile: *profName,
			opts: bridge.Options{URL: *url, Name: "relay-bridge-fleet", Version: "1", Platform: "sim", Batch: !*noBatch, OneWay: *oneWay, Jitter: *jitter},
		}.run(ctx, os.Stdout)
	}
	if *agent {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
		defer stop()
		return runAgentFlags(ctx, agentFlags{credential: os.Getenv("RELAY_AGENT_CREDENTIAL"), url: *url, sim: *sim, pcsc: *usePCSC, reader: *readerName, wait: *wait,
			keyFile: *keyFile, profile: *profName, uid: *uidHex, initial: int32(*initial), batch: !*noBatch}, os.Stdout)
	}
	if *token == "" || *sim == *usePCSC {
		fmt.Fprintln(os.Stderr, "bridge: -token and one card backend (-sim or -pcsc) are required")
		return 2
	}
	uid, err := hex.DecodeString(*uidHex)
	if err != nil || len(uid) != 7 {
		fmt.Fprintln(os.Stderr, "bridge: -uid must be 7 bytes of hex")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	b := cardBackend{platform: "sim"}
	if *usePCSC {
		if b, err = openPCSC(ctx, *readerName, *wait); err != nil {
			fmt.Fprintln(os.Stderr, "bridge:", err)
			return 1
		}
		defer b.close()
	} else {
		card, err := bridge.IssueSim(ctx, *keyFile, *profName, uid, int32(*initial))
		if err != nil {
			fmt.Fprintln(os.Stderr, "bridge:", err)
			return 1
		}
		if *dropAfter > 0 {
			card.RemoveAfter(*dropAfter)
		}
		b.card, b.info = bridge.Sim{Card: card}, bridge.CardInfo{UID: card.UID()}
	}
	opts := bridge.Options{
		URL: *url, Token: *token, TokenInQuery: *query, Name: "relay-bridge", Version: "1", Platform: b.platform,
		Batch: !*noBatch, OneWay: *oneWay, Jitter: *jitter,
		OnPrompt: func(text string, p *float64) { fmt.Fprintf(os.Stderr, "» %s\n", text) },
		Retap:    b.retap,
	}
	start := time.Now()
	rep, err := bridge.Run(ctx, opts, b.card, b.info)
	if rep != nil {
		if *jsonOut {
			json.NewEncoder(os.Stdout).Encode(rep)
		} else {
			r := rep.Result
			fmt.Printf("result: ok=%v kind=%s status=%s balance=%s exchanges=%d commands=%d time=%s\n",
				r.OK, r.Kind, r.Status, fmtBalance(r.Balance, r.Currency), rep.Exchanges, rep.Commands, time.Since(start).Round(time.Millisecond))
			if r.Error != nil {
				fmt.Printf("error: %s: %s\n", r.Error.Code, r.Error.Message)
			}
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bridge:", err)
		if errors.Is(err, bridge.ErrSessionFailed) {
			return 3
		}
		return 1
	}
	return 0
}

func fmtBalance(b *int64, cur string) string {
	if b == nil {
		return "-"
	}
	return fmt.Sprintf("%d.%02d %s", *b/100, *b%100, cur)
}
