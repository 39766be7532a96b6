package testserver

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestContractCatchesDrift: each kind of drift between a handler and the
// document is reported, and a conforming exchange is not.
func TestContractCatchesDrift(t *testing.T) {
	const topUp = `{"id":"6f1c2f5e-1d2a-4c55-9a7e-0f6d5c4b3a21","status":"pending","amount":100,"currency":"EUR","attempts":0,` +
		`"created_at":"2026-12-05T07:00:00Z","updated_at":"2026-12-05T07:00:00Z"}`
	cases := []struct {
		name, method, path, body string
		status                   int
		answer                   string
		header                   map[string]string
		want                     string // "" for no problem
	}{
		{"conforming", "GET", "/v1/topups/6f1c2f5e-1d2a-4c55-9a7e-0f6d5c4b3a21", "", 200, topUp, nil, ""},
		{"undocumented status", "GET", "/v1/topups/6f1c2f5e-1d2a-4c55-9a7e-0f6d5c4b3a21", "", 418, `{"error":{"code":"teapot","message":"x"}}`, nil, "status is not supported"},
		{"answer missing a required field", "GET", "/v1/topups/6f1c2f5e-1d2a-4c55-9a7e-0f6d5c4b3a21", "", 200, `{"id":"6f1c2f5e-1d2a-4c55-9a7e-0f6d5c4b3a21"}`, nil, "answer breaks the document"},
		{"wrong type in an answer", "GET", "/v1/topups/6f1c2f5e-1d2a-4c55-9a7e-0f6d5c4b3a21", "", 200, strings.Replace(topUp, `"amount":100`, `"amount":"100"`, 1), nil, "answer breaks the document"},
		{"null card_uid accepted", "POST", "/v1/topups", `{"amount":100,"currency":"EUR","card_uid":null}`, 201, topUp, nil, "accepted a request the document refuses"},
		{"amount over the maximum accepted", "POST", "/v1/topups", `{"amount":4294967296,"currency":"EUR"}`, 201, topUp, nil, "accepted a request the document refuses"},
		{"null card_uid refused", "POST", "/v1/topups", `{"amount":100,"currency":"EUR","card_uid":null}`, 400, `{"error":{"code":"invalid_request","message":"x"}}`, nil, ""},
		{"malformed id accepted", "GET", "/v1/topups/xyz", "", 200, topUp, nil, "accepted a request the document refuses"},
		{"unknown filter accepted", "GET", "/v1/topups?limit=0", "", 200, `{"topups":[]}`, nil, "accepted a request the document refuses"},
		{"405 without Allow", "PUT", "/v1/topups", "", 405, `{"error":{"code":"method_not_allowed","message":"x"}}`, nil, "want 405 with Allow"},
		{"404 for a known path's unknown method", "PATCH", "/v1/topups", "", 404, `{"error":{"code":"not_found","message":"x"}}`, nil, "want 405 with Allow"},
		{"405 with Allow", "PUT", "/v1/topups", "", 405, `{"error":{"code":"method_not_allowed","message":"x"}}`, map[string]string{"Allow": "GET, POST"}, ""},
		{"undocumented path served", "GET", "/v1/secret", "", 200, `{}`, nil, "path not in the document"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ct := NewContract(t, Public)
			h := ct.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Body != nil {
					_, _ = r.Body.Read(make([]byte, 1024))
					buf := make([]byte, 1)
					for {
						if _, err := r.Body.Read(buf); err != nil {
							break
						}
					}
				}
				for k, v := range c.header {
					w.Header().Set(k, v)
				}
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(c.status)
				_, _ = w.Write([]byte(c.answer))
			}))
			req := httptest.NewRequest(c.method, c.path, strings.NewReader(c.body))
			if c.body != "" {
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Idempotency-Key", "k1")
			}
			h.ServeHTTP(httptest.NewRecorder(), req)
			got := strings.Join(ct.Problems(), "\n")
			if ct.Checked() != 1 {
				t.Fatalf("checked %d exchanges", ct.Checked())
			}
			switch {
			case c.want == "" && got != "":
				t.Fatalf("conforming exchange reported: %s", got)
			case c.want != "" && !strings.Contains(got, c.want):
				t.Fatalf("problems %q, want one containing %q", got, c.want)
			}
		})
	}
}

// TestContractListeners: the admin-only paths belong to the admin
// listener's contract, and are unknown to the public one.
func TestContractListeners(t *testing.T) {
	for _, l := range []struct {
		listener Listener
		want     string
	}{{Public, "path not in the document"}, {Admin, ""}} {
		ct := NewContract(t, l.listener)
		h := ct.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("# metrics\n")) }))
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/metrics", nil))
		got := strings.Join(ct.Problems(), "\n")
		if (l.want == "") != (got == "") || !strings.Contains(got, l.want) {
			t.Errorf("listener %d: problems %q, want %q", l.listener, got, l.want)
		}
	}
}

// TestContractClient: the client-side check sees the same drift.
func TestContractClient(t *testing.T) {
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(418)
		w.Write([]byte(`{"error":{"code":"teapot","message":"x"}}`))
	}))
	defer hs.Close()
	ct := NewContract(t, Public)
	client := &http.Client{Transport: ct.RoundTripper(http.DefaultTransport)}
	resp, err := client.Get(hs.URL + "/v1/topups/6f1c2f5e-1d2a-4c55-9a7e-0f6d5c4b3a21")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 418 || !strings.Contains(string(b), "teapot") {
		t.Fatalf("answer not handed on: %d %s", resp.StatusCode, b)
	}
	if got := strings.Join(ct.Problems(), "\n"); !strings.Contains(got, "status is not supported") {
		t.Fatalf("problems %q", got)
	}
}
