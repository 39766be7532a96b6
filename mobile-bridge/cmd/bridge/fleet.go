package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/desfire-relay/relay/mobile-bridge/bridge"
)

// fleet runs many simulated bridges at once, each with its own simulated
// card, for demos and load: it asks the operator API for one top-up (or
// balance session) per bridge, so it needs an API key, which a real bridge
// never has.
type fleet struct {
	n        int
	apiURL   string // operator API base, e.g. http://127.0.0.1:8080
	apiKey   string
	amount   int64 // 0: balance lookups instead of top-ups
	currency string
	uid      []byte // first card's UID; card i adds i to the last bytes
	initial  int32
	keyFile  string
	profile  string
	opts     bridge.Options // URL, batch, latency...
}

// outcome is one bridge's session.
type outcome struct {
	ok        bool
	status    string
	exchanges int
	took      time.Duration
	err       error
}

func (f fleet) run(ctx context.Context, out io.Writer) int {
	res := make([]outcome, f.n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range f.n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i] = f.one(ctx, i)
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	var (
		okN, ex int
		lat     []time.Duration
		errs    = map[string]int{}
	)
	for _, r := range res {
		if r.ok {
			okN++
			ex += r.exchanges
			lat = append(lat, r.took)
			continue
		}
		msg := "unknown"
		if r.err != nil {
			msg = r.err.Error()
		}
		errs[msg]++
	}
	sort.Slice(lat, func(a, b int) bool { return lat[a] < lat[b] })
	pct := func(q float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[int(q*float64(len(lat)-1))].Round(time.Millisecond)
	}
	fmt.Fprintf(out, "fleet: bridges=%d ok=%d failed=%d wall=%s p50=%s p99=%s exchanges/session=%.2f\n",
		f.n, okN, f.n-okN, wall.Round(time.Millisecond), pct(0.5), pct(0.99), float64(ex)/float64(max(okN, 1)))
	for msg, c := range errs {
		fmt.Fprintf(out, "fleet: %d× %s\n", c, msg)
	}
	if okN != f.n {
		return 3
	}
	return 0
}

// one issues card i, gets a token for it and runs its session.
func (f fleet) one(ctx context.Context, i int) outcome {
	uid := bytes.Clone(f.uid)
	v := int(uid[len(uid)-2])<<8 | int(uid[len(uid)-1])
	v += i
	uid[len(uid)-2], uid[len(uid)-1] = byte(v>>8), byte(v)
	card, err := bridge.IssueSim(ctx, f.keyFile, f.profile, uid, f.initial)
	if err != nil {
		return outcome{err: err}
	}
	tok, err := f.token(ctx, i)
	if err != nil {
		return outcome{err: err}
	}
	o := f.opts
	o.Token = tok
	t0 := time.Now()
	rep, err := bridge.Run(ctx, o, bridge.Sim{Card: card}, bridge.CardInfo{UID: card.UID()})
	r := outcome{took: time.Since(t0), err: err}
	if rep != nil {
		r.status, r.exchanges = rep.Result.Status, rep.Exchanges
		r.ok = err == nil && rep.Result.OK
	}
	return r
}

// token asks the operator API for session i's bridge token.
func (f fleet) token(ctx context.Context, i int) (string, error) {
	path, body := "/v1/sessions", `{"kind":"balance"}`
	if f.amount > 0 {
		b, err := json.Marshal(map[string]any{"amount": f.amount, "currency": f.currency})
		if err != nil {
			return "", err
		}
		path, body = "/v1/topups", string(b)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(f.apiURL, "/")+path, strings.NewReader(body))
	if err != nil {
		return "", fmt.Errorf("operator API: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+f.apiKey)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", fmt.Sprintf("fleet-%d-%d", time.Now().UnixNano(), i))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("operator API: %w", err)
	}
	defer resp.Body.Close()
	var out struct {
		Token string `json:"bridge_token"`
		Error *struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out); err != nil {
		return "", fmt.Errorf("operator API: HTTP %d: %w", resp.StatusCode, err)
	}
	if out.Token == "" {
		code := ""
		if out.Error != nil {
			code = out.Error.Code
		}
		return "", fmt.Errorf("operator API: HTTP %d %s: no bridge token", resp.StatusCode, code)
	}
	return out.Token, nil
}
