package testserver

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/desfire-relay/relay/server"
)

// maxRecorded bounds the request and response bytes a Contract keeps per
// exchange; a larger body is checked for its status only.
const maxRecorded = 8 << 20

// Contract checks every request a server receives and every answer it
// gives against the operator API document (server/api/openapi.yaml),
// with kin-openapi's validator:
//
//   - an answer's status must be documented for its operation, and its
//     JSON body must match the documented schema;
//   - a request the document refuses (a missing parameter, a body or
//     query that breaks its schema) must be answered 4xx: the server may
//     not accept what its contract forbids;
//   - a path or method the document lacks must be answered 404, or 405
//     with an Allow header.
//
// Bodies are recorded as they pass, so slow bodies and streamed answers
// keep their timing; the checks run when the handler returns. WebSocket
// upgrades are checked up to the upgrade.
type Contract struct {
	router routers.Router

	mu       sync.Mutex // guards problems and checked
	problems []string
	checked  int
}

// Listener says which of the server's two listeners a Contract checks.
type Listener int

// The listeners.
const (
	// Public: the operator API, the bridge endpoint and health.
	Public Listener = iota
	// Admin: metrics, the document itself, health and pprof.
	Admin
)

// consolePrefix starts the support console's paths (server/console.go):
// server-rendered HTML pages for people, not the operator API the
// document describes. Every action a console page takes is an operator
// API handler called in process, validated by that handler as any API
// request; the pages themselves are tested by server's console tests.
const consolePrefix = "/console"

// bothListeners are the paths served by both listeners.
var bothListeners = map[string]bool{"/healthz": true, "/readyz": true}

func init() {
	// The SUN page answers HTML to a phone; the document describes it as
	// a string.
	openapi3filter.RegisterBodyDecoder("text/html", openapi3filter.PlainBodyDecoder)
	// format: uuid is the canonical 36-character text, any version.
	openapi3.DefineStringFormatValidator("uuid", openapi3.NewRegexpFormatValidator(
		`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`))
}

// NewContract loads the server's OpenAPI document for checking one
// listener. The document's server URLs are replaced by "/" so any test
// listener matches; operations whose servers are all the admin listener
// (port 9090) belong to Admin, the others to Public.
func NewContract(t testing.TB, l Listener) *Contract {
	t.Helper()
	c, err := LoadContract(l)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// LoadContract is NewContract without a test.
func LoadContract(l Listener) (*Contract, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(server.OpenAPI())
	if err != nil {
		return nil, fmt.Errorf("load openapi.yaml: %w", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("openapi.yaml is not a valid OpenAPI document: %w", err)
	}
	doc.Servers = openapi3.Servers{{URL: "/"}}
	for path, item := range doc.Paths.Map() {
		admin := adminOnly(item)
		if !bothListeners[path] && admin != (l == Admin) {
			doc.Paths.Delete(path)
			continue
		}
		item.Servers = nil
		for _, op := range item.Operations() {
			op.Servers = nil
		}
	}
	r, err := gorillamux.NewRouter(doc)
	if err != nil {
		return nil, fmt.Errorf("route openapi.yaml: %w", err)
	}
	return &Contract{router: r}, nil
}

// adminOnly reports whether every operation of item is served on the
// admin listener only.
func adminOnly(item *openapi3.PathItem) bool {
	ops := item.Operations()
	if len(ops) == 0 {
		return false
	}
	for _, op := range ops {
		if op.Servers == nil || len(*op.Servers) == 0 {
			return false
		}
		for _, sv := range *op.Servers {
			if !strings.HasSuffix(sv.URL, ":9090") {
				return false
			}
		}
	}
	return true
}

// Wrap returns h with every exchange checked.
func (c *Contract) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reqBody := &recorder{}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = &teeBody{rc: r.Body, rec: reqBody}
		}
		rw := &contractWriter{ResponseWriter: w}
		defer func() {
			if p := recover(); p != nil {
				c.check(r, reqBody, rw)
				panic(p)
			}
			c.check(r, reqBody, rw)
		}()
		h.ServeHTTP(rw, r)
	})
}

// Problems returns the contract violations seen so far.
func (c *Contract) Problems() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.problems...)
}

// Checked returns how many exchanges were checked.
func (c *Contract) Checked() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.checked
}

// Report fails t with every violation seen (call it when the server
// stopped, e.g. in a t.Cleanup registered before the server's).
func (c *Contract) Report(t testing.TB) {
	t.Helper()
	for _, p := range c.Problems() {
		t.Errorf("OpenAPI contract: %s", p)
	}
}

func (c *Contract) problem(r *http.Request, status int, format string, args ...any) {
	msg := fmt.Sprintf("%s %s → %d: ", r.Method, r.URL.Path, status) + fmt.Sprintf(format, args...)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.problems = append(c.problems, msg)
}

// check validates one finished exchange.
func (c *Contract) check(r *http.Request, reqBody *recorder, rw *contractWriter) {
	if r.URL.Path == consolePrefix || strings.HasPrefix(r.URL.Path, consolePrefix+"/") {
		return
	}
	status := rw.status
	if status == 0 {
		status = http.StatusOK
	}
	if rw.hijacked {
		status = http.StatusSwitchingProtocols
	}
	c.mu.Lock()
	c.checked++
	c.mu.Unlock()
	probe := r.Clone(context.Background())
	probe.Body = io.NopCloser(bytes.NewReader(reqBody.buf.Bytes()))
	route, params, err := c.router.FindRoute(probe)
	if err != nil {
		c.checkUnrouted(r, rw, status, err)
		return
	}
	in := &openapi3filter.RequestValidationInput{Request: probe, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, SkipSettingDefaults: true,
			ExcludeRequestBody: !reqBody.complete()}}
	if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil && status < 400 {
		c.problem(r, status, "the server accepted a request the document refuses: %s", short(err))
	}
	if status == http.StatusSwitchingProtocols {
		if _, ok := route.Operation.Responses.Map()["101"]; !ok {
			c.problem(r, status, "undocumented upgrade")
		}
		return
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: status, Header: rw.Header(),
		Body:    io.NopCloser(bytes.NewReader(rw.body.buf.Bytes())),
		Options: &openapi3filter.Options{IncludeResponseStatus: true, ExcludeResponseBody: rw.body.overflow || r.Method == http.MethodHead}}
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		c.problem(r, status, "answer breaks the document: %s", short(err))
	}
}

// checkUnrouted: a path or method the document does not list must be
// refused as such.
func (c *Contract) checkUnrouted(r *http.Request, rw *contractWriter, status int, err error) {
	switch {
	case errors.Is(err, routers.ErrMethodNotAllowed):
		if status != http.StatusMethodNotAllowed || rw.Header().Get("Allow") == "" {
			c.problem(r, status, "method not in the document: want 405 with Allow, got %d Allow=%q", status, rw.Header().Get("Allow"))
		}
	case errors.Is(err, routers.ErrPathNotFound):
		if status != http.StatusNotFound && status != http.StatusMethodNotAllowed {
			c.problem(r, status, "path not in the document answered %d (want 404)", status)
		}
	default:
		c.problem(r, status, "route: %v", err)
	}
}

// short keeps the first lines of a validation error.
func short(err error) string {
	s := err.Error()
	lines := strings.Split(s, "\n")
	if len(lines) > 6 {
		lines = append(lines[:6], "…")
	}
	return strings.Join(lines, " | ")
}

// recorder keeps the first maxRecorded bytes that pass, and whether the
// reader saw the end.
type recorder struct {
	buf      bytes.Buffer
	overflow bool
	eof      bool
}

func (r *recorder) write(p []byte) {
	if r.overflow {
		return
	}
	if r.buf.Len()+len(p) > maxRecorded {
		r.overflow = true
		return
	}
	r.buf.Write(p)
}

func (r *recorder) complete() bool { return r.eof && !r.overflow }

// teeBody records a request body as the handler reads it.
type teeBody struct {
	rc  io.ReadCloser
	rec *recorder
}

func (t *teeBody) Read(p []byte) (int, error) {
	n, err := t.rc.Read(p)
	t.rec.write(p[:n])
	if errors.Is(err, io.EOF) {
		t.rec.eof = true
	}
	return n, err
}

func (t *teeBody) Close() error { return t.rc.Close() }

// contractWriter records an answer as it is written.
type contractWriter struct {
	http.ResponseWriter
	status   int
	body     recorder
	hijacked bool
}

func (w *contractWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *contractWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.body.write(p)
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *contractWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *contractWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Hijack hands the connection over (WebSocket upgrade).
func (w *contractWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil {
		w.hijacked = true
	}
	return c, rw, err
}

// Serve starts a loopback server for the public handler h with every
// exchange checked against the OpenAPI document; the violations fail t
// when the test ends (after the server stopped).
func Serve(t testing.TB, h http.Handler) *httptest.Server {
	t.Helper()
	return serve(t, h, Public)
}

// ServeAdmin is Serve for the admin handler.
func ServeAdmin(t testing.TB, h http.Handler) *httptest.Server {
	t.Helper()
	return serve(t, h, Admin)
}

func serve(t testing.TB, h http.Handler, l Listener) *httptest.Server {
	t.Helper()
	c := NewContract(t, l)
	t.Cleanup(func() { c.Report(t) }) // runs after Close: registered first
	hs := httptest.NewServer(c.Wrap(h))
	t.Cleanup(hs.Close)
	return hs
}

// Client returns an HTTP client whose every exchange is checked against
// the document, for servers in other processes (relayd binaries); the
// violations fail t when the test ends.
func Client(t testing.TB, l Listener) *http.Client {
	t.Helper()
	c := NewContract(t, l)
	t.Cleanup(func() { c.Report(t) })
	return &http.Client{Transport: c.RoundTripper(http.DefaultTransport)}
}

// RoundTripper checks every exchange through base: the request as sent
// and the answer as received (read whole, then handed on).
func (c *Contract) RoundTripper(base http.RoundTripper) http.RoundTripper {
	return roundTripper{c: c, base: base}
}

type roundTripper struct {
	c    *Contract
	base http.RoundTripper
}

func (rt roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	reqBody := &recorder{eof: true}
	if req.Body != nil && req.Body != http.NoBody {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		reqBody.write(b)
		req.Body = io.NopCloser(bytes.NewReader(b))
	}
	resp, err := rt.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	rw := &contractWriter{ResponseWriter: headerOnly{h: resp.Header}, status: resp.StatusCode}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		rw.hijacked = true
	} else {
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		rw.body.write(b)
		resp.Body = io.NopCloser(bytes.NewReader(b))
	}
	probe := req.Clone(context.Background())
	probe.URL.Host, probe.Host = "", ""
	rt.c.check(probe, reqBody, rw)
	return resp, nil
}

// headerOnly gives a received answer's header to the checks.
type headerOnly struct{ h http.Header }

func (h headerOnly) Header() http.Header       { return h.h }
func (headerOnly) Write(b []byte) (int, error) { return len(b), nil }
func (headerOnly) WriteHeader(int)             {}
