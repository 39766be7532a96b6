package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/time/rate"
)

// Limits bound what one client can make the server do. Zero fields take
// the defaults of DefaultLimits; a negative rate turns that limit off.
type Limits struct {
	// BodyTimeout bounds reading a request body (headers are bounded by
	// the http.Server's ReadHeaderTimeout).
	BodyTimeout time.Duration
	// AddrRate and AddrBurst limit requests per client address.
	AddrRate  float64
	AddrBurst int
	// KeyRate and KeyBurst limit operator requests per API key.
	KeyRate  float64
	KeyBurst int
	// AuthFailRate and AuthFailBurst limit refused API keys per client
	// address: past them the address gets 429 before any key is checked.
	AuthFailRate  float64
	AuthFailBurst int
	// BridgesPerAddr bounds concurrently open bridge WebSockets per client
	// address.
	BridgesPerAddr int
}

// DefaultLimits are generous for an operator backend and a fleet of
// phones behind one carrier NAT, and tight for a guesser.
func DefaultLimits() Limits {
	return Limits{
		BodyTimeout: 10 * time.Second,
		AddrRate:    50, AddrBurst: 100,
		KeyRate: 100, KeyBurst: 200,
		AuthFailRate: 1, AuthFailBurst: 20,
		BridgesPerAddr: 64,
	}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.BodyTimeout <= 0 {
		l.BodyTimeout = d.BodyTimeout
	}
	if l.AddrRate == 0 {
		l.AddrRate, l.AddrBurst = d.AddrRate, d.AddrBurst
	}
	if l.KeyRate == 0 {
		l.KeyRate, l.KeyBurst = d.KeyRate, d.KeyBurst
	}
	if l.AuthFailRate == 0 {
		l.AuthFailRate, l.AuthFailBurst = d.AuthFailRate, d.AuthFailBurst
	}
	if l.BridgesPerAddr <= 0 {
		l.BridgesPerAddr = d.BridgesPerAddr
	}
	for _, b := range []*int{&l.AddrBurst, &l.KeyBurst, &l.AuthFailBurst} {
		if *b <= 0 {
			*b = 1
		}
	}
	return l
}

// limiterSet keeps one token bucket per key (a client address or an API
// key id), forgetting buckets idle for ten minutes.
type limiterSet struct {
	r     rate.Limit
	burst int
	off   bool

	mu        sync.Mutex // guards m and lastSweep
	m         map[string]*limiterEntry
	lastSweep time.Time
}

type limiterEntry struct {
	lim  *rate.Limiter
	seen time.Time
}

func newLimiterSet(r float64, burst int) *limiterSet {
	return &limiterSet{r: rate.Limit(r), burst: burst, off: r < 0, m: map[string]*limiterEntry{}}
}

// maxLimiters bounds the buckets kept per limit; past it, buckets idle
// for a minute are dropped at once (a flood from many addresses cannot
// grow the map without bound for ten minutes).
const maxLimiters = 100_000

func (s *limiterSet) get(key string, now time.Time) *rate.Limiter {
	s.mu.Lock()
	defer s.mu.Unlock()
	idle := 10 * time.Minute
	if len(s.m) >= maxLimiters {
		idle = time.Minute
	}
	if since := now.Sub(s.lastSweep); since > time.Minute || (len(s.m) >= maxLimiters && since > time.Second) {
		for k, e := range s.m {
			if now.Sub(e.seen) > idle {
				delete(s.m, k)
			}
		}
		s.lastSweep = now
	}
	e := s.m[key]
	if e == nil {
		e = &limiterEntry{lim: rate.NewLimiter(s.r, s.burst)}
		s.m[key] = e
	}
	e.seen = now
	return e.lim
}

// take spends one token of key's bucket; when none is left it returns how
// long until one is (and spends nothing).
func (s *limiterSet) take(key string, now time.Time) (ok bool, retry time.Duration) {
	if s.off {
		return true, 0
	}
	res := s.get(key, now).ReserveN(now, 1)
	if !res.OK() {
		return false, time.Second
	}
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return false, d
	}
	return true, 0
}

// empty reports whether key's bucket has no token left, without spending.
func (s *limiterSet) empty(key string, now time.Time) (bool, time.Duration) {
	if s.off {
		return false, 0
	}
	lim := s.get(key, now)
	if lim.TokensAt(now) >= 1 {
		return false, 0
	}
	need := 1 - lim.TokensAt(now)
	return true, time.Duration(need / float64(s.r) * float64(time.Second))
}

// tooMany answers 429 with Retry-After in whole seconds (at least 1).
func tooMany(w http.ResponseWriter, retry time.Duration, msg string) {
	secs := int(math.Ceil(retry.Seconds()))
	if secs < 1 {
		secs = 1
	}
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	writeError(w, http.StatusTooManyRequests, codeRateLimited, msg)
}

// counterSet counts open things (bridge sockets) per client address.
type counterSet struct {
	mu sync.Mutex // guards m
	m  map[string]int
}

func (c *counterSet) acquire(key string, max int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]int{}
	}
	if c.m[key] >= max {
		return false
	}
	c.m[key]++
	return true
}

func (c *counterSet) release(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m[key] <= 1 {
		delete(c.m, key)
		return
	}
	c.m[key]--
}

// requestInfo is what the edge learned about a request, for handlers and
// the audit line.
type requestInfo struct {
	ID     string
	Client string
	// audit fields a handler fills in.
	mu       sync.Mutex // guards objectID and audited
	objectID string
	// audited: the request's audit line was written (it is then its one
	// log line).
	audited bool
}

// newRequestInfo takes the caller's X-Request-Id when it is safe to log
// and echo, or makes one.
func newRequestInfo(r *http.Request) *requestInfo {
	ri := &requestInfo{ID: r.Header.Get("X-Request-Id"), Client: clientAddr(r)}
	if !validRequestID(ri.ID) {
		ri.ID = newRequestID()
	}
	return ri
}

type requestInfoKey struct{}

func info(r *http.Request) *requestInfo {
	if ri, ok := r.Context().Value(requestInfoKey{}).(*requestInfo); ok {
		return ri
	}
	return &requestInfo{}
}

// setObject names the object an operator action created or touched, for
// its audit line.
func setObject(r *http.Request, id string) {
	ri := info(r)
	ri.mu.Lock()
	ri.objectID = id
	ri.mu.Unlock()
}

// clientAddr is the peer's IP address (without port).
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// validRequestID accepts a caller's X-Request-Id of 1..64 bytes of
// letters, digits, '.', '_', ':' and '-': safe to log and echo.
func validRequestID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}

func newRequestID() string {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		return "req-unavailable"
	}
	return hex.EncodeToString(b)
}

// edge wraps the public handler: request id in and out, the per-address
// rate limit, and a bound on reading the body (size and time).
func (s *Server) edge(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ri, ok := r.Context().Value(requestInfoKey{}).(*requestInfo)
		if !ok {
			ri = newRequestInfo(r)
			r = r.WithContext(context.WithValue(r.Context(), requestInfoKey{}, ri))
		}
		w.Header().Set("X-Request-Id", ri.ID)
		now := time.Now()
		if ok, retry := s.addrLimit.take(ri.Client, now); !ok {
			s.metrics.rateLimited.WithLabelValues("address").Inc()
			tooMany(w, retry, "too many requests from this address")
			return
		}
		if r.Body != nil && r.Body != http.NoBody {
			// A slow body cannot hold the connection past the bound; the
			// deadline also covers the drain after an early answer (401).
			_ = http.NewResponseController(w).SetReadDeadline(now.Add(s.o.Limits.BodyTimeout))
			r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		}
		next.ServeHTTP(w, r)
	})
}

// statusRecorder remembers the status an operator handler answered.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// audit writes the one audit line of an operator action: who (key id and
// tenant), what (action and object), the outcome (HTTP status), the
// request id and the client address. Never a key, token or body.
func (s *Server) audit(r *http.Request, action string, status int) {
	ri := info(r)
	p := who(r)
	ri.mu.Lock()
	obj := ri.objectID
	ri.audited = true
	ri.mu.Unlock()
	if obj == "" {
		obj = r.PathValue("id")
	}
	if obj == "" {
		obj = r.PathValue("uid")
	}
	outcome := "ok"
	switch {
	case status >= 500:
		outcome = "error"
	case status >= 400:
		outcome = "refused"
	}
	s.log.Info("audit",
		zap.String("key_id", p.KeyID), zap.String("tenant", p.Tenant), zap.String("action", action),
		zap.String("object_id", obj), zap.String("outcome", outcome), zap.Int("status", status),
		zap.String("request_id", ri.ID), zap.String("client", ri.Client))
}
