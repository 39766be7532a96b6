package server_test

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/desfire-relay/relay/internal/testbackend"
	"github.com/desfire-relay/relay/internal/testserver"
	"github.com/desfire-relay/relay/server"
	"github.com/desfire-relay/relay/server/config"
	"github.com/desfire-relay/relay/transaction/profile"
)

// consoleClient is a cookie-keeping HTTP client of the console that does
// not follow redirects (tests look at them).
type consoleClient struct {
	t    *testing.T
	base string
	c    *http.Client
}

func newConsoleClient(t *testing.T, h *testserver.Harness) *consoleClient {
	jar, _ := cookiejar.New(nil)
	return &consoleClient{t: t, base: h.HTTP.URL, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

func (c *consoleClient) send(req *http.Request) (int, http.Header, string) {
	c.t.Helper()
	resp, err := c.c.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func (c *consoleClient) get(path string) (int, http.Header, string) {
	c.t.Helper()
	req, _ := http.NewRequest("GET", c.base+path, nil)
	return c.send(req)
}

func (c *consoleClient) post(path, contentType, body string) (int, http.Header, string) {
	c.t.Helper()
	req, _ := http.NewRequest("POST", c.base+path, strings.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	return c.send(req)
}

func (c *consoleClient) form(path string, v url.Values) (int, http.Header, string) {
	c.t.Helper()
	return c.post(path, "application/x-www-form-urlencoded", v.Encode())
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf reads the CSRF token of a console page.
func (c *consoleClient) csrf(path string) string {
	c.t.Helper()
	code, _, body := c.get(path)
	m := csrfRE.FindStringSubmatch(body)
	if code != http.StatusOK || m == nil {
		c.t.Fatalf("GET %s: %d, no CSRF token", path, code)
	}
	return m[1]
}

// loginCSRF opens the login page and returns its form's CSRF token (the
// jar keeps the pre-session cookie it comes with).
func (c *consoleClient) loginCSRF() string {
	c.t.Helper()
	return c.csrf("/console/login")
}

func (c *consoleClient) login(key string) {
	c.t.Helper()
	code, hdr, body := c.form("/console/login", url.Values{"api_key": {key}, "csrf": {c.loginCSRF()}})
	if code != http.StatusSeeOther || hdr.Get("Location") != "/console/" {
		c.t.Fatalf("login: %d %s %s", code, hdr, body)
	}
}

// TestConsoleLoginAndCookie: the session cookie's attributes, refused
// keys, a tampered cookie and a removed key.
func TestConsoleLoginAndCookie(t *testing.T) {
	h := testserver.New(t, testbackend.Backends()[0], profile.AN12113(), testserver.Options{})
	c := newConsoleClient(t, h)
	if code, hdr, _ := c.get("/console/"); code != http.StatusSeeOther || hdr.Get("Location") != "/console/login" {
		t.Fatalf("anonymous console: %d %v", code, hdr)
	}
	tok := "&csrf=" + url.QueryEscape(c.loginCSRF())
	for name, tc := range map[string]struct {
		ct, body string
		status   int
		want     string
	}{
		"json body":     {"application/json", `{"api_key":"x"}`, 400, "only accepts its own forms"},
		"empty key":     {"application/x-www-form-urlencoded", "api_key=" + tok, 400, "Enter your operator API key."},
		"blank key":     {"application/x-www-form-urlencoded", "api_key=%20%20" + tok, 400, "Enter your operator API key."},
		"huge key":      {"application/x-www-form-urlencoded", "api_key=" + strings.Repeat("k", 300) + tok, 400, "longer than any API key"},
		"unknown key":   {"application/x-www-form-urlencoded", "api_key=nope" + tok, 401, "Unknown API key."},
		"key twice":     {"application/x-www-form-urlencoded", "api_key=a&api_key=b" + tok, 400, "given more than once"},
		"oversized":     {"application/x-www-form-urlencoded", "api_key=" + strings.Repeat("k", 9000) + tok, 400, "could not be read"},
		"malformed ctt": {"text/html; charset", "api_key=x" + tok, 400, "only accepts its own forms"},
	} {
		code, hdr, body := c.post("/console/login", tc.ct, tc.body)
		if code != tc.status || !strings.Contains(body, tc.want) || hdr.Get("Set-Cookie") != "" {
			t.Errorf("%s: %d %q (want %d %q)", name, code, excerpt(body), tc.status, tc.want)
		}
	}
	code, hdr, _ := c.form("/console/login", url.Values{"api_key": {testserver.APIKey}, "csrf": {c.loginCSRF()}})
	cookie := sessionCookie(hdr)
	if code != http.StatusSeeOther || !strings.Contains(cookie, "HttpOnly") || !strings.Contains(cookie, "SameSite=Strict") ||
		!strings.Contains(cookie, "Path=/console/") || strings.Contains(cookie, testserver.APIKey) {
		t.Fatalf("login: %d cookie %q", code, cookie)
	}
	code, hdr, body := c.get("/console/")
	if code != http.StatusOK || !strings.Contains(body, "Unresolved top-ups") || !strings.Contains(hdr.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Fatalf("console after login: %d %v", code, hdr)
	}

	// A tampered cookie is no session.
	u, _ := url.Parse(h.HTTP.URL + "/console/")
	good := c.c.Jar.Cookies(u)[0]
	val := []byte(good.Value)
	val[3] ^= 1
	c.c.Jar.SetCookies(u, []*http.Cookie{{Name: good.Name, Value: string(val), Path: "/console/"}})
	if code, _, _ := c.get("/console/"); code != http.StatusSeeOther {
		t.Fatalf("tampered cookie: %d", code)
	}
	// A removed key ends its console sessions.
	c.c.Jar.SetCookies(u, []*http.Cookie{{Name: good.Name, Value: good.Value, Path: "/console/"}})
	if code, _, _ := c.get("/console/"); code != http.StatusOK {
		t.Fatalf("restored cookie: %d", code)
	}
	other := server.LegacyKeys([]string{config.HashAPIKey("another-key")})
	if err := h.Server.SetKeys(other); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := c.get("/console/"); code != http.StatusSeeOther {
		t.Fatalf("removed key's console session still works: %d", code)
	}
	if code, _, body := c.form("/console/logout", nil); code != http.StatusSeeOther {
		t.Fatalf("logout: %d %s", code, body)
	}
}

// TestConsoleFormsBadInput: every console form refuses bad input with a
// clear message and changes nothing; forms without the CSRF token are
// refused before anything else.
func TestConsoleFormsBadInput(t *testing.T) {
	h := testserver.New(t, testbackend.Backends()[0], profile.AN12113(), testserver.Options{})
	card := h.Card([]byte{0x04, 0x7E, 0x50, 0x11, 0x22, 0x33, 0x55}, 100)
	id, tok := h.TopUp("console-bad-input", 300, "")
	card.SetTearAfterCommit(true)
	if rep, err := h.Bridge(tok, card, true); err == nil && rep.Result.OK {
		t.Fatalf("torn session ended ok: %+v", rep.Result)
	}
	registerReader(t, h, "desk-off") // registered, never connected
	c := newConsoleClient(t, h)
	c.login(testserver.APIKey)
	csrf := c.csrf("/console/topups/" + id)
	resolve := "/console/topups/" + id + "/resolve"
	for name, tc := range map[string]struct {
		path   string
		form   url.Values
		status int
		want   string
	}{
		"no csrf":           {resolve, url.Values{"outcome": {"applied"}, "reason": {"r"}}, 403, "CSRF token missing or wrong"},
		"wrong csrf":        {resolve, url.Values{"outcome": {"applied"}, "reason": {"r"}, "csrf": {csrf + "x"}}, 403, "CSRF token missing or wrong"},
		"no outcome":        {resolve, url.Values{"reason": {"r"}, "csrf": {csrf}}, 400, "Choose what happened"},
		"bad outcome":       {resolve, url.Values{"outcome": {"maybe"}, "reason": {"r"}, "csrf": {csrf}}, 400, "Choose what happened"},
		"no reason":         {resolve, url.Values{"outcome": {"failed"}, "csrf": {csrf}}, 400, "A reason is required"},
		"blank reason":      {resolve, url.Values{"outcome": {"failed"}, "reason": {"   "}, "csrf": {csrf}}, 400, "A reason is required"},
		"control in reason": {resolve, url.Values{"outcome": {"failed"}, "reason": {"a\x00b"}, "csrf": {csrf}}, 400, "control characters"},
		"long reason":       {resolve, url.Values{"outcome": {"failed"}, "reason": {strings.Repeat("r", 501)}, "csrf": {csrf}}, 400, "too long"},
		"bad top-up id":     {"/console/topups/nope/resolve", url.Values{"outcome": {"failed"}, "reason": {"r"}, "csrf": {csrf}}, 400, "a top-up id is a UUID"},
		"unknown top-up":    {"/console/topups/00000000-0000-4000-8000-000000000000/resolve", url.Values{"outcome": {"failed"}, "reason": {"r"}, "csrf": {csrf}}, 404, "not found"},
		"reverse in_doubt":  {"/console/topups/" + id + "/reverse", url.Values{"csrf": {csrf}}, 409, "The top-up was not reversed"},
		"run, no reader":    {"/console/topups/" + id + "/run", url.Values{"csrf": {csrf}}, 400, "Choose the desk reader"},
		"run, offline":      {"/console/topups/" + id + "/run", url.Values{"reader": {"desk-off"}, "csrf": {csrf}}, 409, "This reader is offline"},
		"run, bad id":       {"/console/topups/x/run", url.Values{"reader": {"desk-off"}, "csrf": {csrf}}, 400, "a top-up id is a UUID"},
		"bad card uid":      {"/console/cards/XYZ/block", url.Values{"reason": {"lost"}, "csrf": {csrf}}, 400, "hex digits"},
		"block no reason":   {"/console/cards/047E5011223355/block", url.Values{"csrf": {csrf}}, 400, "A reason is required"},
		"no reader":         {"/console/cards/047E5011223355/balance", url.Values{"csrf": {csrf}}, 400, "Choose the desk reader"},
		"bad reader":        {"/console/cards/047E5011223355/balance", url.Values{"reader": {"a b"}, "csrf": {csrf}}, 400, "not a reader id"},
		"unknown reader":    {"/console/cards/047E5011223355/balance", url.Values{"reader": {"nope"}, "csrf": {csrf}}, 404, "not found"},
		"offline reader":    {"/console/cards/047E5011223355/balance", url.Values{"reader": {"desk-off"}, "csrf": {csrf}}, 409, "This reader is offline"},
	} {
		code, _, body := c.form(tc.path, tc.form)
		if code != tc.status || !strings.Contains(body, tc.want) {
			t.Errorf("%s: %d %q (want %d %q)", name, code, excerpt(body), tc.status, tc.want)
		}
	}
	if s := h.Status(id); s != "in_doubt" {
		t.Fatalf("refused forms changed the top-up to %s", s)
	}
	// Cancel and block call the API routes of the hot list and cancel; a
	// server without them says so.
	if !slices.Contains(server.Routes(), "POST /v1/topups/{id}/cancel") {
		if code, _, body := c.form("/console/topups/"+id+"/cancel", url.Values{"csrf": {csrf}}); code != 501 || !strings.Contains(body, "not available on this server yet") {
			t.Errorf("cancel: %d %q", code, excerpt(body))
		}
	} else if code, _, body := c.form("/console/topups/"+id+"/cancel", url.Values{"csrf": {csrf}}); code != http.StatusConflict || !strings.Contains(body, "The top-up was not cancelled") {
		t.Errorf("cancel an in_doubt top-up: %d %q", code, excerpt(body))
	}
	for name, path := range map[string]string{
		"page of a malformed id": "/console/topups/nope",
		"unknown top-up page":    "/console/topups/00000000-0000-4000-8000-000000000000",
		"malformed card":         "/console/cards?uid=0g",
		"empty card":             "/console/cards?uid=",
		"malformed session":      "/console/sessions/nope",
	} {
		if code, _, body := c.get(path); code < 400 || code >= 500 || !strings.Contains(body, `role="alert"`) {
			t.Errorf("%s: %d %q", name, code, excerpt(body))
		}
	}
	// Another tenant's agent sees nothing of this tenant.
	other := newConsoleClient(t, h)
	if err := h.Server.SetKeys(append(server.LegacyKeys([]string{config.HashAPIKey(testserver.APIKey)}), tenantKey("key:acme", "acme-key", "acme"))); err != nil {
		t.Fatal(err)
	}
	other.login("acme-key")
	if code, _, _ := other.get("/console/topups/" + id); code != http.StatusNotFound {
		t.Errorf("another tenant's console shows the top-up: %d", code)
	}
	if code, _, body := other.get("/console/"); code != 200 || strings.Contains(body, id) {
		t.Errorf("another tenant's queue lists the top-up: %d", code)
	}
}

func excerpt(s string) string {
	if i := strings.Index(s, `role="alert"`); i >= 0 {
		s = s[i:]
	}
	if len(s) > 300 {
		s = s[:300]
	}
	return s
}

// sessionCookie returns the console session cookie an answer sets, if any.
func sessionCookie(hdr http.Header) string {
	for _, c := range hdr.Values("Set-Cookie") {
		if strings.HasPrefix(c, "relay_console=") {
			return c
		}
	}
	return ""
}

// TestConsoleLoginCSRF: the login form is bound to a pre-session cookie
// the login page sets, so a page on another site cannot log a browser
// into the attacker's key: a login without the cookie, without the token,
// with a wrong token or with the token of another browser's cookie is
// refused before the key is looked at, and no session cookie is set; so
// are logins and logouts the browser marks as cross-origin.
func TestConsoleLoginCSRF(t *testing.T) {
	h := testserver.New(t, testbackend.Backends()[0], profile.AN12113(), testserver.Options{})
	attacker := newConsoleClient(t, h)
	attackerToken := attacker.loginCSRF() // a valid pair, in the attacker's own browser

	victim := newConsoleClient(t, h)
	const refused = "login CSRF token missing or wrong"
	// The attacker's page posts its key and token from the victim's browser,
	// which has no pre-session cookie yet.
	code, hdr, body := victim.form("/console/login", url.Values{"api_key": {testserver.APIKey}, "csrf": {attackerToken}})
	if code != http.StatusForbidden || !strings.Contains(body, refused) || sessionCookie(hdr) != "" {
		t.Fatalf("login without a pre-session cookie: %d %q %v", code, excerpt(body), hdr.Values("Set-Cookie"))
	}
	// The refusal's page is a fresh login form: its cookie and token work.
	m := csrfRE.FindStringSubmatch(body)
	if m == nil || !strings.Contains(strings.Join(hdr.Values("Set-Cookie"), "\n"), "relay_console_login=") {
		t.Fatalf("refusal without a fresh login form: %v", hdr.Values("Set-Cookie"))
	}
	fresh := m[1]

	victimToken := victim.loginCSRF()
	if victimToken != fresh {
		t.Fatalf("the login page did not keep the valid pre-session cookie: %q then %q", fresh, victimToken)
	}
	for name, form := range map[string]url.Values{
		"no token":                {"api_key": {testserver.APIKey}},
		"empty token":             {"api_key": {testserver.APIKey}, "csrf": {""}},
		"wrong token":             {"api_key": {testserver.APIKey}, "csrf": {victimToken + "x"}},
		"another browser's token": {"api_key": {testserver.APIKey}, "csrf": {attackerToken}},
		"forged token":            {"api_key": {testserver.APIKey}, "csrf": {strings.Repeat("A", 43)}},
	} {
		code, hdr, body := victim.form("/console/login", form)
		if code != http.StatusForbidden || !strings.Contains(body, refused) || sessionCookie(hdr) != "" {
			t.Errorf("%s: %d %q %v", name, code, excerpt(body), hdr.Values("Set-Cookie"))
		}
	}
	if code, _, _ := victim.get("/console/"); code != http.StatusSeeOther {
		t.Fatalf("a refused login left a console session: %d", code)
	}

	// Cross-origin posts are refused even with a valid cookie and token.
	for name, hdrs := range map[string]map[string]string{
		"Sec-Fetch-Site cross-site": {"Sec-Fetch-Site": "cross-site"},
		"Sec-Fetch-Site same-site":  {"Sec-Fetch-Site": "same-site"},
		"foreign Origin":            {"Origin": "https://evil.example"},
	} {
		req, _ := http.NewRequest("POST", h.HTTP.URL+"/console/login",
			strings.NewReader(url.Values{"api_key": {testserver.APIKey}, "csrf": {victimToken}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range hdrs {
			req.Header.Set(k, v)
		}
		code, hdr, body := victim.send(req)
		if code != http.StatusForbidden || !strings.Contains(body, "sent from another site") || sessionCookie(hdr) != "" {
			t.Errorf("%s: %d %q", name, code, excerpt(body))
		}
	}

	// The browser's own form, as a browser sends it, logs in; the
	// pre-session cookie is then dropped.
	req, _ := http.NewRequest("POST", h.HTTP.URL+"/console/login",
		strings.NewReader(url.Values{"api_key": {testserver.APIKey}, "csrf": {victimToken}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	req.Header.Set("Origin", h.HTTP.URL)
	code, hdr, body = victim.send(req)
	if code != http.StatusSeeOther || sessionCookie(hdr) == "" || !strings.Contains(strings.Join(hdr.Values("Set-Cookie"), "\n"), "relay_console_login=; Path=/console/login; Max-Age=0") {
		t.Fatalf("login with the form's token: %d %v %q", code, hdr.Values("Set-Cookie"), excerpt(body))
	}
	if code, _, _ := victim.get("/console/"); code != http.StatusOK {
		t.Fatalf("console after login: %d", code)
	}
	// A cross-site logout is refused; the session stays.
	req, _ = http.NewRequest("POST", h.HTTP.URL+"/console/logout", strings.NewReader(""))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	if code, _, _ := victim.send(req); code != http.StatusForbidden {
		t.Fatalf("cross-site logout: %d", code)
	}
	if code, _, _ := victim.get("/console/"); code != http.StatusOK {
		t.Fatalf("console after a refused logout: %d", code)
	}
}
