package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/desfire-relay/relay/transaction/ledger"
)

// Config configures a Dispatcher.
type Config struct {
	Endpoints []Endpoint
	Outbox    ledger.Outbox
	// TopUp reads a top-up for an event's payload.
	TopUp func(ctx context.Context, id uuid.UUID) (ledger.TopUp, error)
	// Client sends the deliveries (default: 10 s timeout, no redirects).
	Client *http.Client
	Now    func() time.Time
	Log    *zap.Logger
	// Registerer takes the delivery metrics (nil: none).
	Registerer prometheus.Registerer
	// Interval between outbox polls when idle (default 500 ms).
	Interval time.Duration
	// Batch is how many deliveries one poll claims (default 50) and
	// Parallel how many are in flight at once (default 8).
	Batch, Parallel int
	// Lease is how long a claimed delivery stays with this process
	// (default 1 min; longer than Client's timeout).
	Lease time.Duration
	// MaxAttempts before a delivery is parked until redelivered
	// (default 15: about a day and a half of backoff).
	MaxAttempts int
	// BaseBackoff and MaxBackoff bound the retry delays (default 2 s, 4 h).
	BaseBackoff, MaxBackoff time.Duration
}

// parked is the retry time of a delivery that gave up: never due again
// until an operator asks for redelivery.
var parked = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

// Dispatcher moves outbox events to the endpoints.
type Dispatcher struct {
	cfg     Config
	byName  map[string]Endpoint
	subs    []ledger.Subscription
	results *prometheus.CounterVec
	latency prometheus.Histogram
	backlog prometheus.Gauge
}

// New returns a dispatcher; cfg.Endpoints must have passed Check.
func New(cfg Config) (*Dispatcher, error) {
	if cfg.Outbox == nil || cfg.TopUp == nil {
		return nil, fmt.Errorf("webhook dispatcher needs an outbox and a top-up reader: %w", ErrConfig)
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 10 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defD := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&cfg.Batch, 50)
	def(&cfg.Parallel, 8)
	def(&cfg.MaxAttempts, 15)
	defD(&cfg.Interval, 500*time.Millisecond)
	defD(&cfg.Lease, time.Minute)
	defD(&cfg.BaseBackoff, 2*time.Second)
	defD(&cfg.MaxBackoff, 4*time.Hour)
	d := &Dispatcher{cfg: cfg, byName: map[string]Endpoint{}, subs: Subscriptions(cfg.Endpoints),
		results: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "relay_webhook_deliveries_total",
			Help: "Webhook delivery attempts by endpoint and result (ok, error, gave_up)."}, []string{"endpoint", "result"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "relay_webhook_delivery_seconds",
			Help: "Time to deliver one webhook (request to response).", Buckets: prometheus.DefBuckets}),
		backlog: prometheus.NewGauge(prometheus.GaugeOpts{Name: "relay_webhook_backlog",
			Help: "Webhook deliveries not yet acknowledged, plus events not yet fanned out."}),
	}
	for _, e := range cfg.Endpoints {
		d.byName[e.Name] = e
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{d.results, d.latency, d.backlog} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("webhook metrics: %w", err)
			}
		}
	}
	return d, nil
}

// Run delivers until ctx ends.
func (d *Dispatcher) Run(ctx context.Context) {
	for {
		n, err := d.RunOnce(ctx)
		if err != nil && ctx.Err() == nil {
			d.cfg.Log.Warn("webhook outbox", zap.Error(err))
		}
		if n > 0 && err == nil {
			continue // more may be due
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(d.cfg.Interval):
		}
	}
}

// RunOnce fans new events out, claims the deliveries due and sends them;
// it returns how many it attempted.
func (d *Dispatcher) RunOnce(ctx context.Context) (int, error) {
	now := d.cfg.Now()
	if _, err := d.cfg.Outbox.FanOut(ctx, d.subs, d.cfg.Batch, now); err != nil {
		return 0, err
	}
	if n, err := d.cfg.Outbox.Backlog(ctx); err == nil {
		d.backlog.Set(float64(n))
	}
	due, err := d.cfg.Outbox.ClaimDeliveries(ctx, d.cfg.Batch, d.cfg.Lease, now)
	if err != nil {
		return 0, err
	}
	var (
		wg   sync.WaitGroup
		sem  = make(chan struct{}, d.cfg.Parallel)
		mu   sync.Mutex
		errs []error
	)
	for _, del := range due {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := d.deliver(ctx, del); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return len(due), errors.Join(errs...)
}

// deliver sends one delivery and records the result in the outbox.
func (d *Dispatcher) deliver(ctx context.Context, del ledger.Delivery) error {
	ep, ok := d.byName[del.Endpoint]
	if !ok {
		// The endpoint was removed from the configuration: park it.
		return d.cfg.Outbox.Retry(ctx, del.Event.ID, del.Endpoint, "endpoint no longer configured", parked)
	}
	body, err := d.payload(ctx, del.Event)
	if err != nil {
		return err
	}
	start := time.Now()
	status, err := d.post(ctx, ep, del.Event, body)
	d.latency.Observe(time.Since(start).Seconds())
	now := d.cfg.Now()
	if err == nil && status/100 == 2 {
		d.results.WithLabelValues(ep.Name, "ok").Inc()
		return d.cfg.Outbox.Delivered(ctx, del.Event.ID, ep.Name, now)
	}
	reason := fmt.Sprintf("HTTP %d", status)
	if err != nil {
		reason = err.Error()
	}
	next, result := now.Add(d.backoff(del.Attempts)), "error"
	if del.Attempts+1 >= d.cfg.MaxAttempts {
		next, result = parked, "gave_up"
		reason = fmt.Sprintf("gave up after %d attempts: %s", del.Attempts+1, reason)
	}
	d.results.WithLabelValues(ep.Name, result).Inc()
	d.cfg.Log.Info("webhook delivery failed", zap.String("endpoint", ep.Name), zap.String("event", del.Event.ID.String()),
		zap.Int("attempt", del.Attempts+1), zap.String("reason", reason), zap.Time("next", next))
	return d.cfg.Outbox.Retry(ctx, del.Event.ID, ep.Name, reason, next)
}

// backoff is the delay after the attempts-th failure: exponential from
// BaseBackoff, capped at MaxBackoff, with ±20% jitter so a recovering
// receiver is not hit by every retry at once.
func (d *Dispatcher) backoff(attempts int) time.Duration {
	b := d.cfg.BaseBackoff
	for i := 0; i < attempts && b < d.cfg.MaxBackoff; i++ {
		b *= 2
	}
	b = min(b, d.cfg.MaxBackoff)
	return b - b/5 + time.Duration(rand.Int64N(int64(b/5)*2+1))
}

func (d *Dispatcher) post(ctx context.Context, ep Endpoint, ev ledger.Event, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.URL, bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "desfire-relay-webhook/1")
	req.Header.Set(EventIDHeader, ev.ID.String())
	req.Header.Set(EventTypeHeader, ev.Type)
	req.Header.Set(SignatureHeader, Sign([]byte(ep.Secret), d.cfg.Now(), body))
	resp, err := d.cfg.Client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("post: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, nil
}

// Payload is the JSON body of a delivery.
type Payload struct {
	ID        string    `json:"id"`
	Type      string    `json:"type"`
	CreatedAt time.Time `json:"created_at"`
	Data      Data      `json:"data"`
}

// Data describes the top-up (and session) the event is about. Status is
// the one the event records; the other fields are the top-up's as the
// delivery is made.
type Data struct {
	TopUpID      string  `json:"topup_id,omitempty"`
	SessionID    string  `json:"session_id,omitempty"`
	Status       string  `json:"status"`
	Amount       int64   `json:"amount,omitempty"`
	Currency     string  `json:"currency,omitempty"`
	Reference    string  `json:"reference,omitempty"`
	CardUID      string  `json:"card_uid,omitempty"`
	BalanceAfter *int64  `json:"balance_after,omitempty"`
	TMC          *uint32 `json:"tmc,omitempty"`
}

func (d *Dispatcher) payload(ctx context.Context, ev ledger.Event) ([]byte, error) {
	p := Payload{ID: ev.ID.String(), Type: ev.Type, CreatedAt: ev.At, Data: Data{Status: ev.Status}}
	if ev.SessionID != uuid.Nil {
		p.Data.SessionID = ev.SessionID.String()
	}
	if ev.TopUpID != uuid.Nil {
		tu, err := d.cfg.TopUp(ctx, ev.TopUpID)
		if err != nil {
			return nil, fmt.Errorf("event %s: read top-up: %w", ev.ID, err)
		}
		p.Data.TopUpID, p.Data.Amount, p.Data.Currency, p.Data.Reference = tu.ID.String(), tu.Amount, tu.Currency, tu.Reference
		p.Data.CardUID, p.Data.BalanceAfter, p.Data.TMC = tu.CardUID, tu.BalanceAfter, tu.TMC
	}
	return json.Marshal(p)
}
