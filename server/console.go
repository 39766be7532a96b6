package server

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"html/template"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/desfire-relay/relay/transaction/ledger"
)

// The support console: server-rendered pages under /console/ for support
// agents. An agent logs in with an operator API key; the console then
// acts as that key (its tenant, its key id in the audit trail and on
// resolutions) by calling the operator API's handlers in process, so
// every action goes through exactly the API's validation and audit.
//
// Login sets a session cookie (HttpOnly, SameSite=Strict, Path=/console/,
// Secure behind TLS) holding the key id and an expiry, signed with
// HMAC-SHA256 under Options.ConsoleKey (a random key per process when
// unset: then a login is good on this node only, until it restarts).
// The key itself is never stored. Every form carries a CSRF token bound to
// the cookie. A key that is removed or expires ends its console sessions
// at the next request.
//
// The login form, which has no session yet, is guarded by a pre-session
// cookie: serving the login page sets a short-lived signed cookie
// (relay_console_login: a random nonce and an expiry; HttpOnly,
// SameSite=Strict, Path=/console/login) and puts a token derived from it
// in the form; a login POST without both, or with a token of another
// cookie, is refused before the key is looked at, so another site cannot
// log a browser into the attacker's key. Login and logout also refuse
// requests the browser marks as cross-origin (Sec-Fetch-Site, Origin).

//go:embed console.html
var consoleFS embed.FS

var consoleTmpl = template.Must(template.New("console").Funcs(template.FuncMap{
	"money": func(v *int64, cur string) string {
		if v == nil {
			return "—"
		}
		return formatMoney(*v, cur)
	},
	"amount": formatMoney,
	"when": func(t any) string {
		switch v := t.(type) {
		case time.Time:
			return v.UTC().Format("2006-01-02 15:04:05 UTC")
		case *time.Time:
			if v == nil {
				return "—"
			}
			return v.UTC().Format("2006-01-02 15:04:05 UTC")
		}
		return ""
	},
	"unresolved":  func(status string) bool { return status == "in_doubt" || status == "in_progress" },
	"cancellable": func(status string) bool { return status == "pending" || status == "failed" },
	"runnable": func(status string) bool {
		return status == "pending" || status == "failed" || status == "in_doubt" || status == "in_progress"
	},
}).ParseFS(consoleFS, "console.html"))

func formatMoney(v int64, cur string) string {
	sign := ""
	if v < 0 {
		sign, v = "-", -v
	}
	return sign + strconv.FormatInt(v/100, 10) + "." + strconv.FormatInt(v%100/10, 10) + strconv.FormatInt(v%10, 10) + " " + cur
}

const (
	consoleCookie = "relay_console"
	consoleTTL    = 8 * time.Hour
	// consoleLoginCookie is the pre-session cookie of the login form; a
	// login page older than consoleLoginTTL must be reloaded.
	consoleLoginCookie = "relay_console_login"
	consoleLoginTTL    = time.Hour
	// maxFormBody bounds a console form.
	maxFormBody = 4 << 10
	// maxConsoleReason bounds a block reason (resolutions: the ledger's).
	maxConsoleReason = 200
)

// consolePage is what every console template gets.
type consolePage struct {
	Title   string
	KeyID   string
	Tenant  string
	CSRF    string
	Notice  string
	Error   string
	Errors  map[string]string // field → message
	Form    map[string]string // values to show again
	Refresh bool              // reload in a second (a session still running)

	Queue    []topUpView
	Readers  []readerView
	CardUID  string
	TopUps   []topUpView
	TopUp    *topUpView
	Attempts []attemptView
	Session  *sessionView
	Block    *blockView // the card's hot-list entry, when the server has one
}

type attemptView struct {
	SessionID string
	CardUID   string
	Outcome   string
	ErrorCode string
	Profile   string
	StartedAt time.Time
	EndedAt   *time.Time
}

// notices are the fixed confirmations a redirect may ask for (no text
// from the query string reaches the page).
var notices = map[string]string{
	"resolved":  "The top-up was resolved; your key id and reason are recorded.",
	"cancelled": "The top-up was cancelled.",
	"blocked":   "The card is blocked: new top-ups for it are refused.",
	"unblocked": "The card is unblocked.",
	"loggedout": "You are logged out.",
	"reversal":  "Reversal created: run it on the desk reader with the card on it to debit the amount back.",
}

func (s *Server) consoleRoutes() {
	s.mux.HandleFunc("GET /console", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/console/", http.StatusSeeOther)
	})
	s.mux.HandleFunc("GET /console/login", s.consoleLoginPage)
	s.mux.HandleFunc("POST /console/login", s.consoleLogin)
	s.mux.HandleFunc("POST /console/logout", s.consoleLogout)
	for pattern, h := range map[string]http.HandlerFunc{
		"GET /console/{$}":                  s.consoleHome,
		"GET /console/cards":                s.consoleCard,
		"GET /console/topups/{id}":          s.consoleTopUp,
		"GET /console/sessions/{id}":        s.consoleSession,
		"POST /console/topups/{id}/resolve": s.consoleResolve,
		"POST /console/topups/{id}/cancel":  s.consoleCancel,
		"POST /console/topups/{id}/reverse": s.consoleReverse,
		"POST /console/topups/{id}/run":     s.consoleRun,
		"POST /console/cards/{uid}/block":   s.consoleBlock,
		"POST /console/cards/{uid}/unblock": s.consoleBlock,
		"POST /console/cards/{uid}/balance": s.consoleBalance,
	} {
		s.mux.Handle(pattern, s.consoleAuth(h))
	}
}

// --- session cookie and CSRF ---

func (s *Server) consoleMAC(parts ...string) []byte {
	m := hmac.New(sha256.New, s.consoleKey)
	for _, p := range parts {
		m.Write([]byte(p))
		m.Write([]byte{0})
	}
	return m.Sum(nil)
}

// consoleCookieValue is keyID|expiry|nonce, then its MAC.
func (s *Server) consoleCookieValue(keyID string, exp time.Time) string {
	nonce := make([]byte, 16)
	_, _ = rand.Read(nonce)
	payload := keyID + "|" + strconv.FormatInt(exp.Unix(), 10) + "|" + base64.RawURLEncoding.EncodeToString(nonce)
	return base64.RawURLEncoding.EncodeToString([]byte(payload)) + "." + base64.RawURLEncoding.EncodeToString(s.consoleMAC("session", payload))
}

// signedCookie returns the payload of the cookie name when its MAC under
// purpose holds; its "|"-separated parts must number want.
func (s *Server) signedCookie(r *http.Request, name, purpose string, want int) (payload string, parts []string, ok bool) {
	c, err := r.Cookie(name)
	if err != nil || len(c.Value) > 512 {
		return "", nil, false
	}
	p64, m64, found := strings.Cut(c.Value, ".")
	if !found {
		return "", nil, false
	}
	strict := base64.RawURLEncoding.Strict()
	raw, err1 := strict.DecodeString(p64)
	mac, err2 := strict.DecodeString(m64)
	if err1 != nil || err2 != nil || !hmac.Equal(mac, s.consoleMAC(purpose, string(raw))) {
		return "", nil, false
	}
	parts = strings.Split(string(raw), "|")
	if len(parts) != want {
		return "", nil, false
	}
	return string(raw), parts, true
}

// unexpired parses a Unix expiry and reports whether now is before it.
func unexpired(unix string, now time.Time) (time.Time, bool) {
	exp, err := strconv.ParseInt(unix, 10, 64)
	if err != nil || now.Unix() >= exp {
		return time.Time{}, false
	}
	return time.Unix(exp, 0), true
}

// consoleSessionOf checks the cookie and returns its payload and key id.
func (s *Server) consoleSessionOf(r *http.Request, now time.Time) (payload, keyID string, ok bool) {
	payload, parts, ok := s.signedCookie(r, consoleCookie, "session", 3)
	if !ok {
		return "", "", false
	}
	if _, ok := unexpired(parts[1], now); !ok {
		return "", "", false
	}
	return payload, parts[0], true
}

// loginSessionOf checks the login form's pre-session cookie (nonce|expiry)
// and returns its payload and expiry.
func (s *Server) loginSessionOf(r *http.Request, now time.Time) (payload string, exp time.Time, ok bool) {
	payload, parts, ok := s.signedCookie(r, consoleLoginCookie, "login", 2)
	if !ok {
		return "", time.Time{}, false
	}
	exp, ok = unexpired(parts[1], now)
	return payload, exp, ok
}

// loginToken is the login form's CSRF token of a pre-session payload.
func (s *Server) loginToken(payload string) string {
	return base64.RawURLEncoding.EncodeToString(s.consoleMAC("login-csrf", payload))
}

// renderLogin shows the login page with a CSRF token bound to the
// browser's pre-session cookie, setting a fresh cookie when the browser
// has none or one past half its life.
func (s *Server) renderLogin(w http.ResponseWriter, r *http.Request, status int, p *consolePage) {
	now := time.Now()
	payload, exp, ok := s.loginSessionOf(r, now)
	if !ok || exp.Sub(now) < consoleLoginTTL/2 {
		nonce := make([]byte, 16)
		_, _ = rand.Read(nonce)
		exp = now.Add(consoleLoginTTL)
		payload = base64.RawURLEncoding.EncodeToString(nonce) + "|" + strconv.FormatInt(exp.Unix(), 10)
		value := base64.RawURLEncoding.EncodeToString([]byte(payload)) + "." + base64.RawURLEncoding.EncodeToString(s.consoleMAC("login", payload))
		http.SetCookie(w, &http.Cookie{Name: consoleLoginCookie, Value: value, Path: "/console/login", Expires: exp,
			MaxAge: int(consoleLoginTTL.Seconds()), HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil || s.o.HSTS})
	}
	p.CSRF = s.loginToken(payload)
	s.renderConsole(w, status, "login", p)
}

// loginCSRF reports whether a login POST carries the token of a valid
// pre-session cookie.
func (s *Server) loginCSRF(r *http.Request, now time.Time) bool {
	payload, _, ok := s.loginSessionOf(r, now)
	return ok && subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(s.loginToken(payload))) == 1
}

// crossOrigin refuses state-changing requests a browser marks as coming
// from another origin (Sec-Fetch-Site, else Origin against Host).
var crossOrigin = http.NewCrossOriginProtection()

func (s *Server) csrfToken(payload string) string {
	return base64.RawURLEncoding.EncodeToString(s.consoleMAC("csrf", payload))
}

// consoleAuth admits a request with a valid console cookie of a key that
// still works: the key's principal goes into the context, as for the API;
// a POST must also carry the form's CSRF token. The per-key rate limit
// applies as to the API.
func (s *Server) consoleAuth(next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		consoleHeaders(w)
		now := time.Now()
		payload, id, ok := s.consoleSessionOf(r, now)
		var k APIKey
		if ok {
			k, ok = s.keys.byID(id, now)
		}
		if !ok {
			if r.Method == http.MethodGet {
				http.Redirect(w, r, "/console/login", http.StatusSeeOther)
				return
			}
			s.renderLogin(w, r, http.StatusUnauthorized, &consolePage{Title: "Log in", Errors: map[string]string{}, Error: "Your console session ended. Log in again."})
			return
		}
		r = r.WithContext(withPrincipal(r.Context(), principal{KeyID: k.ID, Tenant: k.Tenant}))
		if ok, retry := s.keyLimit.take(k.ID, now); !ok {
			s.metrics.rateLimited.WithLabelValues("key").Inc()
			tooMany(w, retry, "too many requests with this API key")
			return
		}
		csrf := s.csrfToken(payload)
		if r.Method == http.MethodPost {
			if err := parseConsoleForm(w, r); err != nil {
				s.renderConsole(w, http.StatusBadRequest, "message", &consolePage{Title: "Refused", KeyID: k.ID, Tenant: k.Tenant, CSRF: csrf, Error: err.Error()})
				return
			}
			if subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(csrf)) != 1 {
				s.renderConsole(w, http.StatusForbidden, "message", &consolePage{Title: "Refused", KeyID: k.ID, Tenant: k.Tenant, CSRF: csrf,
					Error: "This form is out of date or did not come from the console (CSRF token missing or wrong). Reload the page and try again."})
				return
			}
		}
		r = r.WithContext(context.WithValue(r.Context(), consolePageKey{}, &consolePage{KeyID: k.ID, Tenant: k.Tenant, CSRF: csrf}))
		next(w, r)
	})
}

// parseConsoleForm reads a url-encoded form of at most maxFormBody bytes.
func parseConsoleForm(w http.ResponseWriter, r *http.Request) error {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		return errors.New("the console only accepts its own forms (application/x-www-form-urlencoded)")
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBody)
	if err := r.ParseForm(); err != nil {
		return errors.New("the form could not be read (too large or malformed)")
	}
	for k, vs := range r.PostForm {
		if len(vs) != 1 {
			return errors.New("form field " + strconv.Quote(sanitize(k)) + " given more than once")
		}
	}
	return nil
}

func consoleHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	// same-origin, not no-referrer: a browser without Sec-Fetch-Site then
	// sends the console's own Origin on its forms (no-referrer makes it
	// "null"), which login's cross-origin check needs.
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Frame-Options", "DENY")
}

type consolePageKey struct{}

// page returns a fresh page for the request's principal.
func page(r *http.Request, title string) *consolePage {
	base, _ := r.Context().Value(consolePageKey{}).(*consolePage)
	p := &consolePage{Title: title, Errors: map[string]string{}, Form: map[string]string{}}
	if base != nil {
		p.KeyID, p.Tenant, p.CSRF = base.KeyID, base.Tenant, base.CSRF
	}
	if n, ok := notices[r.URL.Query().Get("notice")]; ok {
		p.Notice = n
	}
	return p
}

func (s *Server) renderConsole(w http.ResponseWriter, status int, name string, p *consolePage) {
	var buf bytes.Buffer
	if err := consoleTmpl.ExecuteTemplate(&buf, name, p); err != nil {
		s.log.Error("console template", zap.String("page", name), zap.Error(err))
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	consoleHeaders(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// --- login ---

func (s *Server) consoleLoginPage(w http.ResponseWriter, r *http.Request) {
	p := &consolePage{Title: "Log in", Errors: map[string]string{}}
	if n, ok := notices[r.URL.Query().Get("notice")]; ok {
		p.Notice = n
	}
	s.renderLogin(w, r, http.StatusOK, p)
}

func (s *Server) consoleLogin(w http.ResponseWriter, r *http.Request) {
	p := &consolePage{Title: "Log in", Errors: map[string]string{}}
	ri, now := info(r), time.Now()
	if empty, retry := s.authFail.empty(ri.Client, now); empty {
		s.metrics.rateLimited.WithLabelValues("auth_failures").Inc()
		w.Header().Set("Retry-After", strconv.Itoa(int(retry.Seconds()+1)))
		p.Error = "Too many refused keys from this address. Wait a minute and try again."
		s.renderLogin(w, r, http.StatusTooManyRequests, p)
		return
	}
	if err := crossOrigin.Check(r); err != nil {
		s.auditLogin(r, "refused: cross-origin")
		p.Error = "Login refused: the form was sent from another site. Open the console's own login page and log in there."
		s.renderLogin(w, r, http.StatusForbidden, p)
		return
	}
	if err := parseConsoleForm(w, r); err != nil {
		p.Error = err.Error()
		s.renderLogin(w, r, http.StatusBadRequest, p)
		return
	}
	if !s.loginCSRF(r, now) {
		s.auditLogin(r, "refused: csrf")
		p.Error = "Login refused: this login form is out of date or did not come from the console (login CSRF token missing or wrong; " +
			"the browser must accept the console's cookies). The form below is fresh: log in again."
		s.renderLogin(w, r, http.StatusForbidden, p)
		return
	}
	key := r.PostFormValue("api_key")
	switch {
	case strings.TrimSpace(key) == "":
		p.Errors["api_key"] = "Enter your operator API key."
	case len(key) > 256:
		p.Errors["api_key"] = "This is longer than any API key (256 characters at most)."
	}
	if len(p.Errors) > 0 {
		p.Error = "The form has errors."
		s.renderLogin(w, r, http.StatusBadRequest, p)
		return
	}
	k, ok, expired := s.keys.lookup(key, now)
	if !ok {
		s.authFail.take(ri.Client, now)
		p.Errors["api_key"] = "Unknown API key."
		if expired {
			p.Errors["api_key"] = "This API key has expired."
		}
		p.Error = "Login refused."
		s.auditLogin(r, "refused")
		s.renderLogin(w, r, http.StatusUnauthorized, p)
		return
	}
	exp := now.Add(consoleTTL)
	if !k.ExpiresAt.IsZero() && k.ExpiresAt.Before(exp) {
		exp = k.ExpiresAt
	}
	http.SetCookie(w, &http.Cookie{Name: consoleCookie, Value: s.consoleCookieValue(k.ID, exp), Path: "/console/",
		Expires: exp, HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil || s.o.HSTS})
	http.SetCookie(w, &http.Cookie{Name: consoleLoginCookie, Value: "", Path: "/console/login", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil || s.o.HSTS})
	s.log.Info("audit", zap.String("key_id", k.ID), zap.String("tenant", k.Tenant), zap.String("action", "console login"),
		zap.String("outcome", "ok"), zap.String("request_id", ri.ID), zap.String("client", ri.Client))
	http.Redirect(w, r, "/console/", http.StatusSeeOther)
}

// auditLogin logs a refused console login.
func (s *Server) auditLogin(r *http.Request, outcome string) {
	ri := info(r)
	s.log.Info("audit", zap.String("action", "console login"), zap.String("outcome", outcome), zap.String("request_id", ri.ID), zap.String("client", ri.Client))
}

func (s *Server) consoleLogout(w http.ResponseWriter, r *http.Request) {
	if err := crossOrigin.Check(r); err != nil {
		consoleHeaders(w)
		http.Error(w, "logout refused: the form was sent from another site", http.StatusForbidden)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: consoleCookie, Value: "", Path: "/console/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil || s.o.HSTS})
	http.Redirect(w, r, "/console/login?notice=loggedout", http.StatusSeeOther)
}

// --- in-process API calls ---

type apiAnswer struct {
	status int
	body   []byte
	// missing: this server has no such route (yet).
	missing bool
}

// message is the API's error message (or a generic one).
func (a apiAnswer) message() string {
	var e errorBody
	if json.Unmarshal(a.body, &e) == nil && e.Error.Message != "" {
		return e.Error.Message
	}
	return "the server answered " + strconv.Itoa(a.status)
}

func (a apiAnswer) code() string {
	var e errorBody
	_ = json.Unmarshal(a.body, &e)
	return e.Error.Code
}

func (a apiAnswer) ok() bool { return a.status >= 200 && a.status < 300 }

// callAPI runs the operator API handler of pattern ("METHOD /path") as the
// console's principal, with the path values, query and JSON body given,
// and audits it like an API request.
func (s *Server) callAPI(r *http.Request, pattern string, vals map[string]string, query url.Values, body any) apiAnswer {
	h, ok := s.api[pattern]
	if !ok {
		return apiAnswer{missing: true}
	}
	method, path, _ := strings.Cut(pattern, " ")
	for k, v := range vals {
		path = strings.Replace(path, "{"+k+"}", url.PathEscape(v), 1)
	}
	var rd io.Reader = http.NoBody
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return apiAnswer{status: http.StatusInternalServerError}
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(r.Context(), method, path, rd)
	if err != nil {
		return apiAnswer{status: http.StatusBadRequest, body: []byte(`{"error":{"code":"invalid_request","message":"malformed path"}}`)}
	}
	req.RemoteAddr = r.RemoteAddr
	req.URL.RawQuery = query.Encode()
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range vals {
		req.SetPathValue(k, v)
	}
	rec := &answerRecorder{header: http.Header{}}
	h(rec, req)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	s.audit(req, "console: "+pattern, rec.status)
	return apiAnswer{status: rec.status, body: rec.body.Bytes()}
}

// answerRecorder keeps an in-process API answer.
type answerRecorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (a *answerRecorder) Header() http.Header { return a.header }

func (a *answerRecorder) WriteHeader(code int) {
	if a.status == 0 {
		a.status = code
	}
}

func (a *answerRecorder) Write(b []byte) (int, error) {
	if a.status == 0 {
		a.status = http.StatusOK
	}
	return a.body.Write(b)
}

// getJSON calls a GET route and decodes its answer into v.
func (s *Server) getJSON(r *http.Request, pattern string, vals map[string]string, query url.Values, v any) apiAnswer {
	a := s.callAPI(r, pattern, vals, query, nil)
	if a.ok() {
		if err := json.Unmarshal(a.body, v); err != nil {
			return apiAnswer{status: http.StatusInternalServerError, body: []byte(`{"error":{"code":"internal","message":"unreadable answer"}}`)}
		}
	}
	return a
}

// --- pages ---

func (s *Server) consoleHome(w http.ResponseWriter, r *http.Request) {
	p := page(r, "Support console")
	s.fillHome(r, p)
	s.renderConsole(w, http.StatusOK, "home", p)
}

// fillHome loads the queue of unresolved top-ups and the readers.
func (s *Server) fillHome(r *http.Request, p *consolePage) {
	for _, st := range []string{"in_doubt", "in_progress"} {
		var pg topUpPage
		if a := s.getJSON(r, "GET /v1/topups", nil, url.Values{"status": {st}, "limit": {"100"}}, &pg); !a.ok() {
			p.Error = "The queue could not be loaded: " + a.message()
			return
		}
		p.Queue = append(p.Queue, pg.TopUps...)
	}
	s.fillReaders(r, p)
}

func (s *Server) fillReaders(r *http.Request, p *consolePage) {
	var rs struct {
		Readers []readerView `json:"readers"`
	}
	if a := s.getJSON(r, "GET /v1/readers", nil, nil, &rs); a.ok() {
		p.Readers = rs.Readers
	}
}

func (s *Server) consoleCard(w http.ResponseWriter, r *http.Request) {
	p := page(r, "Card")
	raw := r.URL.Query().Get("uid")
	p.Form["uid"] = raw
	uid, problem := checkUID(raw)
	if problem != "" {
		p.Errors["uid"] = problem
		p.Error = "The card could not be looked up."
		s.fillHome(r, p)
		p.Title = "Support console"
		s.renderConsole(w, http.StatusBadRequest, "home", p)
		return
	}
	s.renderCard(w, r, p, uid, http.StatusOK)
}

// checkUID validates a card UID typed by a person (spaces, colons and
// dashes between bytes allowed); problem says what is wrong, for the page.
func checkUID(raw string) (uid, problem string) {
	s := strings.NewReplacer(" ", "", ":", "", "-", "").Replace(strings.TrimSpace(raw))
	switch {
	case s == "":
		return "", "Enter the card's UID (hex, e.g. 04A1B2C3D4E5F6)."
	case len(raw) > 64:
		return "", "A card UID has 4, 7 or 10 bytes (8, 14 or 20 hex digits)."
	}
	uid, err := ledger.NormalizeCardUID(s)
	if err != nil {
		return "", "A card UID is 8, 14 or 20 hex digits (0-9, A-F)."
	}
	return uid, ""
}

func (s *Server) renderCard(w http.ResponseWriter, r *http.Request, p *consolePage, uid string, status int) {
	p.Title, p.CardUID = "Card "+uid, uid
	var out struct {
		TopUps []topUpView `json:"topups"`
	}
	if a := s.getJSON(r, "GET /v1/cards/{uid}/topups", map[string]string{"uid": uid}, nil, &out); !a.ok() {
		p.Error = "The card's top-ups could not be loaded: " + a.message()
	}
	p.TopUps = out.TopUps
	var b blockView
	if a := s.getJSON(r, "GET /v1/cards/{uid}/block", map[string]string{"uid": uid}, nil, &b); a.ok() {
		p.Block = &b
	}
	s.fillReaders(r, p)
	s.renderConsole(w, status, "card", p)
}

func (s *Server) consoleTopUp(w http.ResponseWriter, r *http.Request) {
	p := page(r, "Top-up")
	id, ok := s.topUpOf(w, r, p)
	if !ok {
		return
	}
	s.renderTopUp(w, r, p, id, http.StatusOK)
}

func (s *Server) renderTopUp(w http.ResponseWriter, r *http.Request, p *consolePage, id uuid.UUID, status int) {
	var v topUpView
	a := s.getJSON(r, "GET /v1/topups/{id}", map[string]string{"id": id.String()}, nil, &v)
	if !a.ok() {
		p.Error = "The top-up could not be loaded: " + a.message()
		s.renderConsole(w, a.status, "message", p)
		return
	}
	p.Title, p.TopUp = "Top-up "+v.ID, &v
	s.fillReaders(r, p)
	atts, err := s.o.Service.TenantAttempts(r.Context(), who(r).Tenant, id)
	if err != nil {
		p.Error = "The attempts could not be loaded."
	}
	for _, at := range atts {
		p.Attempts = append(p.Attempts, attemptView{SessionID: at.SessionID.String(), CardUID: at.CardUID, Outcome: at.Outcome.String(),
			ErrorCode: storedCode(at.ErrorCode), Profile: at.Profile, StartedAt: at.StartedAt, EndedAt: at.EndedAt})
	}
	s.renderConsole(w, status, "topup", p)
}

func (s *Server) consoleSession(w http.ResponseWriter, r *http.Request) {
	p := page(r, "Balance lookup")
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		p.Error = "There is no session with this id (a session id is a UUID)."
		s.renderConsole(w, http.StatusBadRequest, "message", p)
		return
	}
	var v sessionView
	if a := s.getJSON(r, "GET /v1/sessions/{id}", map[string]string{"id": id.String()}, nil, &v); !a.ok() {
		p.Error = "The session could not be loaded: " + a.message()
		s.renderConsole(w, a.status, "message", p)
		return
	}
	p.Session, p.Refresh = &v, v.Status == "open"
	if c, problem := checkUID(r.URL.Query().Get("card")); problem == "" {
		p.CardUID = c
	}
	s.renderConsole(w, http.StatusOK, "session", p)
}

// --- actions ---

// reason validates a required free-text reason.
func reason(p *consolePage, r *http.Request, max int) string {
	v := strings.TrimSpace(r.PostFormValue("reason"))
	p.Form["reason"] = v
	switch {
	case v == "":
		p.Errors["reason"] = "A reason is required: say why, for the audit trail."
	case len(v) > max:
		p.Errors["reason"] = "The reason is too long (" + strconv.Itoa(max) + " characters at most)."
	case !printableText(v):
		p.Errors["reason"] = "The reason contains characters that cannot be stored (control characters)."
	}
	return v
}

func printableText(s string) bool {
	for _, c := range s {
		if c < 0x20 || c == 0x7f || c == 0xfffd {
			return false
		}
	}
	return true
}

// consoleAction words one console form's failures and renders again the
// page the form was on.
type consoleAction struct {
	p       *consolePage
	failed  string // "The top-up was not resolved"
	missing string // the words when this server lacks the endpoint ("": none)
	render  func(status int)
}

// topUpForm starts an action on the top-up named in the path: its page
// and id, and the action's words (failed, and missing when the server
// may lack the endpoint). False: the path names no top-up (answered).
func (s *Server) topUpForm(w http.ResponseWriter, r *http.Request, failed, missing string) (consoleAction, uuid.UUID, bool) {
	p := page(r, "Top-up")
	id, ok := s.topUpOf(w, r, p)
	return consoleAction{p: p, failed: failed, missing: missing, render: func(status int) { s.renderTopUp(w, r, p, id, status) }}, id, ok
}

// cardForm is topUpForm for an action on the card named in the path.
func (s *Server) cardForm(w http.ResponseWriter, r *http.Request, failed, missing string) (consoleAction, string, bool) {
	p := page(r, "Card")
	uid, ok := s.cardOf(w, r, p)
	return consoleAction{p: p, failed: failed, missing: missing, render: func(status int) { s.renderCard(w, r, p, uid, status) }}, uid, ok
}

// invalid answers a form with errors.
func (c consoleAction) invalid() {
	c.p.Error = c.failed + ": the form has errors."
	c.render(http.StatusBadRequest)
}

// refused answers the API's refusal of the action; false when a is a
// success and the handler goes on.
func (c consoleAction) refused(a apiAnswer) bool {
	switch {
	case a.missing && c.missing != "":
		c.p.Error = c.missing
		c.render(http.StatusNotImplemented)
	case !a.ok():
		c.p.Error = c.failed + ": " + a.message()
		if a.code() == codeReaderOffline {
			c.p.Errors["reader"] = "This reader is offline: start its agent, then try again."
		}
		c.render(a.status)
	default:
		return false
	}
	return true
}

// topUpOf reads the top-up id of the path; false (the message page
// written) when it is not a UUID.
func (s *Server) topUpOf(w http.ResponseWriter, r *http.Request, p *consolePage) (uuid.UUID, bool) {
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		p.Error = "There is no top-up with this id (a top-up id is a UUID)."
		s.renderConsole(w, http.StatusBadRequest, "message", p)
		return uuid.Nil, false
	}
	return id, true
}

// cardOf reads the card UID of the path; false (the message page
// written) when it is not one.
func (s *Server) cardOf(w http.ResponseWriter, r *http.Request, p *consolePage) (string, bool) {
	uid, problem := checkUID(r.PathValue("uid"))
	if problem != "" {
		p.Error = problem
		s.renderConsole(w, http.StatusBadRequest, "message", p)
		return "", false
	}
	return uid, true
}

func (s *Server) consoleResolve(w http.ResponseWriter, r *http.Request) {
	act, id, ok := s.topUpForm(w, r, "The top-up was not resolved", "")
	if !ok {
		return
	}
	p := act.p
	outcome := r.PostFormValue("outcome")
	p.Form["outcome"] = outcome
	if outcome != "applied" && outcome != "failed" {
		p.Errors["outcome"] = "Choose what happened: the credit reached the card (applied) or it did not (failed)."
	}
	why := reason(p, r, ledger.MaxReasonLen)
	if len(p.Errors) > 0 {
		act.invalid()
		return
	}
	a := s.callAPI(r, "POST /v1/topups/{id}/resolve", map[string]string{"id": id.String()}, nil, map[string]string{"outcome": outcome, "reason": why})
	if act.refused(a) {
		return
	}
	http.Redirect(w, r, "/console/topups/"+id.String()+"?notice=resolved", http.StatusSeeOther)
}

func (s *Server) consoleCancel(w http.ResponseWriter, r *http.Request) {
	act, id, ok := s.topUpForm(w, r, "The top-up was not cancelled", "Cancelling a top-up is not available on this server yet.")
	if !ok {
		return
	}
	a := s.callAPI(r, "POST /v1/topups/{id}/cancel", map[string]string{"id": id.String()}, nil, map[string]string{})
	if act.refused(a) {
		return
	}
	http.Redirect(w, r, "/console/topups/"+id.String()+"?notice=cancelled", http.StatusSeeOther)
}

func (s *Server) consoleReverse(w http.ResponseWriter, r *http.Request) {
	act, id, ok := s.topUpForm(w, r, "The top-up was not reversed", "Reversal is not available on this server yet.")
	if !ok {
		return
	}
	a := s.callAPI(r, "POST /v1/topups/{id}/reversal", map[string]string{"id": id.String()}, nil, nil)
	if act.refused(a) {
		return
	}
	var rv topUpView
	if err := json.Unmarshal(a.body, &rv); err != nil {
		act.p.Error = act.failed + ": " + a.message()
		act.render(a.status)
		return
	}
	http.Redirect(w, r, "/console/topups/"+url.PathEscape(rv.ID)+"?notice=reversal", http.StatusSeeOther)
}

// consoleRun runs a top-up (or reversal) on a desk reader: the card on
// the reader is credited (debited), or an unresolved top-up settles from
// the card's own log.
func (s *Server) consoleRun(w http.ResponseWriter, r *http.Request) {
	act, id, ok := s.topUpForm(w, r, "The top-up was not run", "")
	if !ok {
		return
	}
	p := act.p
	reader, ok := pickReader(p, r)
	if !ok {
		act.invalid()
		return
	}
	a := s.callAPI(r, "POST /v1/sessions", nil, nil, map[string]any{"kind": "topup", "topup_id": id.String(), "reader_id": reader})
	if act.refused(a) {
		return
	}
	s.redirectToSession(w, r, p, a, "")
}

// pickReader validates the reader field of a form.
func pickReader(p *consolePage, r *http.Request) (string, bool) {
	reader := r.PostFormValue("reader")
	p.Form["reader"] = reader
	switch {
	case reader == "":
		p.Errors["reader"] = "Choose the desk reader the card is on."
	case ledger.ValidateReaderID(reader) != nil:
		p.Errors["reader"] = "This is not a reader id."
	}
	return reader, len(p.Errors) == 0
}

// redirectToSession sends the browser to the page of the session the API
// answer created.
func (s *Server) redirectToSession(w http.ResponseWriter, r *http.Request, p *consolePage, a apiAnswer, card string) {
	var out struct {
		SessionID string `json:"session_id"`
	}
	if err := json.Unmarshal(a.body, &out); err != nil || out.SessionID == "" {
		p.Error = "The session started but its id could not be read."
		s.renderConsole(w, http.StatusInternalServerError, "message", p)
		return
	}
	target := "/console/sessions/" + url.PathEscape(out.SessionID)
	if card != "" {
		target += "?card=" + card
	}
	http.Redirect(w, r, target, http.StatusSeeOther)
}

// consoleBlock blocks (…/block) or unblocks (…/unblock) a card through
// PUT or DELETE /v1/cards/{uid}/block.
func (s *Server) consoleBlock(w http.ResponseWriter, r *http.Request) {
	verb, pattern, notice := "blocked", "PUT /v1/cards/{uid}/block", "blocked"
	if !strings.HasSuffix(r.URL.Path, "/block") {
		verb, pattern, notice = "unblocked", "DELETE /v1/cards/{uid}/block", "unblocked"
	}
	act, uid, ok := s.cardForm(w, r, "The card was not "+verb, "Blocking cards is not available on this server yet.")
	if !ok {
		return
	}
	why := reason(act.p, r, maxConsoleReason)
	if len(act.p.Errors) > 0 {
		act.invalid()
		return
	}
	a := s.callAPI(r, pattern, map[string]string{"uid": uid}, nil, map[string]string{"reason": why})
	if act.refused(a) {
		return
	}
	http.Redirect(w, r, "/console/cards?uid="+uid+"&notice="+notice, http.StatusSeeOther)
}

// consoleBalance starts a balance lookup on a registered desk reader and
// shows the session page, which reloads until the session ends.
func (s *Server) consoleBalance(w http.ResponseWriter, r *http.Request) {
	act, uid, ok := s.cardForm(w, r, "The balance was not read", "")
	if !ok {
		return
	}
	p := act.p
	reader, ok := pickReader(p, r)
	if !ok {
		act.invalid()
		return
	}
	a := s.callAPI(r, "POST /v1/sessions", nil, nil, map[string]any{"kind": "balance", "reader_id": reader})
	if act.refused(a) {
		return
	}
	s.redirectToSession(w, r, p, a, uid)
}
