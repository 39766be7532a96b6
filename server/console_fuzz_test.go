package server

import (
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// FuzzConsoleCookie: a console cookie from a browser never panics, and
// only a cookie signed under the console key (unexpired) is a session.
func FuzzConsoleCookie(f *testing.F) {
	s := New(Options{ConsoleKey: []byte(strings.Repeat("k", 32))})
	now := time.Unix(1_800_000_000, 0)
	good := s.consoleCookieValue("key:abc", now.Add(time.Hour))
	f.Add(good)
	f.Add("")
	f.Add("a.b")
	f.Add("a2V5fDF8bg.")
	f.Fuzz(func(t *testing.T, v string) {
		r, _ := http.NewRequest("GET", "/console/", nil)
		r.Header.Set("Cookie", consoleCookie+"="+v)
		payload, id, ok := s.consoleSessionOf(r, now)
		if !ok {
			return
		}
		signed := base64.RawURLEncoding.EncodeToString([]byte(payload)) + "." + base64.RawURLEncoding.EncodeToString(s.consoleMAC("session", payload))
		if v != signed || !strings.HasPrefix(payload, id+"|") {
			t.Fatalf("cookie %q accepted as %q", v, id)
		}
	})
}

// FuzzCheckUID: a typed card UID never panics, and an accepted one is 8,
// 14 or 20 upper-case hex digits.
func FuzzCheckUID(f *testing.F) {
	for _, s := range []string{"04A1B2C3D4E5F6", "04 a1 b2 c3 d4 e5 f6", "", "zz", "04:A1:B2:C3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		uid, problem := checkUID(raw)
		if problem != "" {
			return
		}
		if n := len(uid); n != 8 && n != 14 && n != 20 || strings.Trim(uid, "0123456789ABCDEF") != "" {
			t.Fatalf("%q accepted as %q", raw, uid)
		}
	})
}

// loginCookieOf serves the login page once and returns the pre-session
// cookie it sets.
func loginCookieOf(t testing.TB, s *Server) *http.Cookie {
	rec := httptest.NewRecorder()
	s.renderLogin(rec, httptest.NewRequest("GET", "/console/login", nil), http.StatusOK, &consolePage{Errors: map[string]string{}})
	for _, c := range rec.Result().Cookies() {
		if c.Name == consoleLoginCookie {
			return c
		}
	}
	t.Fatal("the login page set no pre-session cookie")
	return nil
}

// FuzzConsoleLoginCookie: the login form's pre-session cookie never
// panics, and only a cookie signed under the console key for the login
// form (not a session cookie) and unexpired is accepted.
func FuzzConsoleLoginCookie(f *testing.F) {
	s := New(Options{ConsoleKey: []byte(strings.Repeat("k", 32))})
	f.Add(loginCookieOf(f, s).Value)
	f.Add(s.consoleCookieValue("key:abc", time.Now().Add(time.Hour)))
	f.Add("")
	f.Add("bm9uY2V8MQ.")
	f.Fuzz(func(t *testing.T, v string) {
		r, _ := http.NewRequest("POST", "/console/login", nil)
		r.Header.Set("Cookie", consoleLoginCookie+"="+v)
		payload, _, ok := s.loginSessionOf(r, time.Now())
		if !ok {
			return
		}
		signed := base64.RawURLEncoding.EncodeToString([]byte(payload)) + "." + base64.RawURLEncoding.EncodeToString(s.consoleMAC("login", payload))
		if v != signed {
			t.Fatalf("pre-session cookie %q accepted", v)
		}
	})
}

// TestLoginCookieExpires: a pre-session cookie past its expiry is no
// longer accepted, nor is one signed under another console key, and the
// login token is bound to the cookie.
func TestLoginCookieExpires(t *testing.T) {
	s := New(Options{ConsoleKey: []byte(strings.Repeat("k", 32))})
	c := loginCookieOf(t, s)
	r, _ := http.NewRequest("POST", "/console/login", nil)
	r.AddCookie(c)
	now := time.Now()
	payload, exp, ok := s.loginSessionOf(r, now)
	if !ok || exp.Sub(now) > consoleLoginTTL || exp.Sub(now) < consoleLoginTTL-time.Minute {
		t.Fatalf("fresh cookie: ok=%v expires in %v", ok, exp.Sub(now))
	}
	if _, _, ok := s.loginSessionOf(r, now.Add(consoleLoginTTL+time.Second)); ok {
		t.Fatal("an expired pre-session cookie is accepted")
	}
	other := New(Options{ConsoleKey: []byte(strings.Repeat("o", 32))})
	if _, _, ok := other.loginSessionOf(r, now); ok {
		t.Fatal("a pre-session cookie of another console key is accepted")
	}
	if other.loginToken(payload) == s.loginToken(payload) || s.loginToken(payload) == s.csrfToken(payload) {
		t.Fatal("login tokens are not bound to the console key and purpose")
	}
}
