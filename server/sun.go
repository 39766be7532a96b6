package server

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"html/template"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/desfire-relay/relay/transaction/ledger"
	"github.com/desfire-relay/relay/transaction/sun"
)

// Error codes of the SUN endpoints (with sun.Code* for bad input).
const (
	codeSUNDisabled = "sun_disabled"
)

// SUNOptions configure the public SUN verification endpoint.
type SUNOptions struct {
	// Verifier checks messages; nil disables GET /v1/sun/{template}.
	Verifier *sun.Verifier
	// Store answers GET /v1/tags/{uid}; nil disables it.
	Store ledger.SUNStore
	// PerClient and ClientBurst limit requests per client address
	// (default 5/s, burst 20).
	PerClient   rate.Limit
	ClientBurst int
	// PerTag and TagBurst limit repeated verifications per tag (default
	// 1/s, burst 10); a reading newer than any seen is never held back.
	PerTag   rate.Limit
	TagBurst int
	// RegionHeader names a header a trusted proxy sets to the client's
	// country or region ("CF-IPCountry"); empty: no impossible-travel
	// signals.
	RegionHeader string
	// ClientIPHeader names a header a trusted proxy sets to the client's
	// address; empty: the connection's remote address.
	ClientIPHeader string
	// TravelByNetwork, when no region hint is given, uses the client's
	// network as one: "net4:a.b" (IPv4 /16) or "net6:xxxx:xxxx" (IPv6
	// /32). A coarse place (one provider's mobile network may span a
	// country; two networks may share a street), so impossible_travel on
	// it is a signal for an operator to look at, never a refusal.
	TravelByNetwork bool
}

func (o *SUNOptions) defaults() {
	if o.PerClient == 0 {
		o.PerClient, o.ClientBurst = 5, 20
	}
	if o.PerTag == 0 {
		o.PerTag, o.TagBurst = 1, 10
	}
	if o.ClientBurst <= 0 {
		o.ClientBurst = 1
	}
	if o.TagBurst <= 0 {
		o.TagBurst = 1
	}
}

// limiters is a set of token buckets by key. Idle buckets are swept when
// the set grows, so a flood of addresses cannot grow it without bound
// for long.
type limiters struct {
	limit rate.Limit
	burst int

	mu      sync.Mutex // guards m and swept
	m       map[string]*sunLimiterEntry
	swept   time.Time
	maxKeys int
}

type sunLimiterEntry struct {
	l    *rate.Limiter
	seen time.Time
	// max is the highest authentic counter seen for a tag (per-tag set).
	max    uint32
	hasMax bool
}

func newLimiters(l rate.Limit, burst int) *limiters {
	return &limiters{limit: l, burst: burst, m: map[string]*sunLimiterEntry{}, maxKeys: 100000}
}

func (ls *limiters) allow(key string) bool {
	return ls.take(key, nil)
}

// allowTag is the per-tag limit. Its input is authentic (the MAC
// verified), so a counter above every counter seen here is a fresh tap of
// the real tag and always passes: only repeats (replays of copied URLs)
// draw from the bucket, and a flood of one copied URL cannot hold back
// the genuine tag's next reading.
func (ls *limiters) allowTag(uid string, counter uint32) bool {
	return ls.take(uid, &counter)
}

func (ls *limiters) take(key string, counter *uint32) bool {
	now := time.Now()
	ls.mu.Lock()
	defer ls.mu.Unlock()
	e, ok := ls.m[key]
	if !ok {
		if len(ls.m) >= ls.maxKeys && now.Sub(ls.swept) > time.Second {
			ls.swept = now
			for k, v := range ls.m {
				// A bucket idle long enough to be full again is the same
				// as a new one.
				if now.Sub(v.seen) > time.Minute {
					delete(ls.m, k)
				}
			}
		}
		if len(ls.m) >= ls.maxKeys {
			return false
		}
		e = &sunLimiterEntry{l: rate.NewLimiter(ls.limit, ls.burst)}
		ls.m[key] = e
	}
	e.seen = now
	if counter != nil && (!e.hasMax || *counter > e.max) {
		e.max, e.hasMax = *counter, true
		return true
	}
	return e.l.AllowN(now, 1)
}

// sunMetrics count verifications, clone signals and refused requests.
type sunMetrics struct {
	verifications *prometheus.CounterVec
	signals       *prometheus.CounterVec
	refused       *prometheus.CounterVec
}

func newSUNMetrics(reg *prometheus.Registry) *sunMetrics {
	m := &sunMetrics{
		verifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_sun_verifications_total", Help: "SUN verifications by template and answer.",
		}, []string{"template", "status"}),
		signals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_sun_clone_signals_total", Help: "SUN clone signals raised, by kind.",
		}, []string{"kind"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_sun_refused_total", Help: "SUN requests refused before an answer, by error code.",
		}, []string{"code"}),
	}
	for _, c := range []prometheus.Collector{m.verifications, m.signals, m.refused} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				continue
			}
		}
	}
	return m
}

// sunHandler serves the SUN endpoints.
type sunHandler struct {
	o       SUNOptions
	log     *zap.Logger
	clients *limiters
	tags    *limiters
	m       *sunMetrics
}

var regionHint = regexp.MustCompile(`^[A-Za-z0-9-]{1,16}$`)

// sun returns the server's SUN handler, made on first use (the route
// table asks for it once per route).
func (s *Server) sun() *sunHandler {
	s.sunOnce.Do(func() {
		o := s.o.SUN
		o.defaults()
		s.sunH = &sunHandler{o: o, log: s.log, clients: newLimiters(o.PerClient, o.ClientBurst),
			tags: newLimiters(o.PerTag, o.TagBurst), m: newSUNMetrics(s.metrics.reg)}
	})
	return s.sunH
}

func (h *sunHandler) clientAddr(r *http.Request) string {
	if h.o.ClientIPHeader != "" {
		if v := strings.TrimSpace(strings.Split(r.Header.Get(h.o.ClientIPHeader), ",")[0]); net.ParseIP(v) != nil {
			return v
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// networkHint is the place hint of a client address: its IPv4 /16 or
// IPv6 /32, or "" for something that is not an address.
func networkHint(addr string) string {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return ""
	}
	ip = ip.Unmap()
	if ip.Is4() {
		b := ip.As4()
		return fmt.Sprintf("net4:%d.%d", b[0], b[1])
	}
	b := ip.As16()
	return fmt.Sprintf("net6:%02x%02x:%02x%02x", b[0], b[1], b[2], b[3])
}

// wantsHTML reports whether the client prefers an HTML page (a browser
// opening the tag's URL) over JSON.
func wantsHTML(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil || params["q"] == "0" {
			continue
		}
		switch mt {
		case "text/html", "application/xhtml+xml":
			return true
		case "application/json":
			return false
		}
	}
	return false
}

// verify answers GET /v1/sun/{template}: public, no API key.
func (h *sunHandler) verify(w http.ResponseWriter, r *http.Request) {
	html := wantsHTML(r)
	if r.Method == http.MethodHead {
		// The GET pattern also matches HEAD. A HEAD (a link checker)
		// must not spend the tag's counter: answer without verifying.
		w.Header().Set("Cache-Control", "no-store")
		if html {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
		} else {
			w.Header().Set("Content-Type", "application/json")
		}
		w.WriteHeader(http.StatusOK)
		return
	}
	if h.o.Verifier == nil {
		h.fail(w, html, http.StatusServiceUnavailable, codeSUNDisabled, "SUN verification is not configured")
		return
	}
	if !h.clients.allow(h.clientAddr(r)) {
		w.Header().Set("Retry-After", "1")
		h.fail(w, html, http.StatusTooManyRequests, codeRateLimited, "too many requests from this address")
		return
	}
	req := sun.Request{Template: r.PathValue("template"), RawQuery: r.URL.RawQuery, AllowTag: h.tags.allowTag}
	if h.o.RegionHeader != "" {
		if v := r.Header.Get(h.o.RegionHeader); regionHint.MatchString(v) {
			req.Region = strings.ToUpper(v)
		}
	}
	if req.Region == "" && h.o.TravelByNetwork {
		req.Region = networkHint(h.clientAddr(r))
	}
	res, err := h.o.Verifier.Verify(r.Context(), req)
	var ie *sun.InputError
	switch {
	case errors.As(err, &ie):
		h.fail(w, html, http.StatusBadRequest, ie.Code, sanitize(ie.Error()))
		return
	case errors.Is(err, sun.ErrRateLimited):
		w.Header().Set("Retry-After", "1")
		h.fail(w, html, http.StatusTooManyRequests, codeRateLimited, "too many verifications of this tag")
		return
	case err != nil:
		h.log.Error("SUN verification failed", zap.String("template", sanitize(req.Template)), zap.Error(err))
		status, code := http.StatusInternalServerError, codeInternal
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			status, code = http.StatusServiceUnavailable, codeUnavailable
		}
		h.fail(w, html, status, code, "verification unavailable")
		return
	}
	h.m.verifications.WithLabelValues(res.Template, string(res.Status)).Inc()
	for _, k := range res.Signals {
		h.m.signals.WithLabelValues(k).Inc()
	}
	if res.Clone {
		h.log.Warn("SUN clone signal", zap.String("template", res.Template), zap.String("card", maskTag(res.UID)),
			zap.Strings("signals", res.Signals))
	}
	if html {
		writeSUNPage(w, http.StatusOK, sunPage{Result: &res})
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (h *sunHandler) fail(w http.ResponseWriter, html bool, status int, code, msg string) {
	h.m.refused.WithLabelValues(code).Inc()
	if html {
		writeSUNPage(w, status, sunPage{Code: code, Message: msg})
		return
	}
	writeError(w, status, code, msg)
}

// maskTag keeps the first and last two bytes of a UID for logs.
func maskTag(uid string) string {
	if len(uid) < 8 {
		return uid
	}
	return uid[:4] + strings.Repeat("*", len(uid)-8) + uid[len(uid)-4:]
}

var tagUID = regexp.MustCompile(`^[0-9A-Fa-f]{14}$`)

// tag answers GET /v1/tags/{uid} for operators: the tag's last counter,
// counts, clone flag and latest signals. A tag belongs to the tenant that
// provisioned it, or to the tenant of the template it was first verified
// through; for every other tenant it is 404.
func (h *sunHandler) tag(w http.ResponseWriter, r *http.Request) {
	if h.o.Store == nil {
		writeError(w, http.StatusServiceUnavailable, codeSUNDisabled, "SUN verification is not configured")
		return
	}
	uid := r.PathValue("uid")
	if !tagUID.MatchString(uid) {
		writeError(w, http.StatusBadRequest, codeInvalid, "uid must be 14 hex digits")
		return
	}
	t, err := h.o.Store.SUNTag(r.Context(), strings.ToUpper(uid))
	if err == nil && t.Tenant != who(r).Tenant {
		// Another tenant's tag does not exist for this key.
		err = ledger.ErrNotFound
	}
	if errors.Is(err, ledger.ErrNotFound) {
		writeError(w, http.StatusNotFound, codeNotFound, "no such tag")
		return
	}
	if err != nil {
		h.log.Error("SUN tag lookup failed", zap.Error(err))
		writeError(w, http.StatusInternalServerError, codeInternal, "tag lookup failed")
		return
	}
	writeJSON(w, http.StatusOK, t)
}

//go:embed sun.html
var sunHTML string

var sunTemplate = template.Must(template.New("sun").Parse(sunHTML))

// sunPage is what the HTML page shows: a result, or a refusal.
type sunPage struct {
	Result  *sun.Result
	Code    string
	Message string
}

// Headline and Class give the page's verdict text and colour.
func (p sunPage) Headline() string {
	if p.Result == nil {
		return "This link is not valid"
	}
	switch p.Result.Status {
	case sun.Authentic:
		if p.Result.Clone {
			return "Genuine tag — but it shows signs of copying"
		}
		return "Genuine tag"
	case sun.Replayed:
		return "This link was already used"
	case sun.Tampered:
		return "Genuine tag — seal opened"
	case sun.UnknownTag:
		return "Unknown tag"
	}
	return "Not genuine"
}

// Class is the CSS class of the verdict.
func (p sunPage) Class() string {
	if p.Result != nil && p.Result.Status == sun.Authentic && !p.Result.Clone {
		return "ok"
	}
	if p.Result != nil && (p.Result.Status == sun.Authentic || p.Result.Status == sun.Tampered) {
		return "warn"
	}
	return "bad"
}

// Explanation is the sentence under the headline.
func (p sunPage) Explanation() string {
	if p.Result == nil {
		return "The address is incomplete or malformed. Tap the tag again to open a fresh link."
	}
	switch p.Result.Status {
	case sun.Authentic:
		if p.Result.Clone {
			return "The tag's signature is correct, but its history looks like a copy in circulation. The operator has been told."
		}
		return "The tag's signature is correct and this is its newest reading."
	case sun.Replayed:
		return "Each tap of a genuine tag makes a new link. This one was seen before: it may be a copied link. Tap the tag again."
	case sun.Tampered:
		return "The tag's signature is correct, but its tamper loop reports that it was opened."
	case sun.UnknownTag:
		return "This tag is not registered with this service."
	}
	return "The tag's signature does not match. The link was altered or the tag is not genuine."
}

func writeSUNPage(w http.ResponseWriter, status int, p sunPage) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(status)
	_ = sunTemplate.Execute(w, p)
}
