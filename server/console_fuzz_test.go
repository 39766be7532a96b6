package server

import (
	"encoding/base64"
	"net/http"
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
