package server

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"
)

// routeMethods are the methods a 405 answer may name in Allow.
var routeMethods = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}

// noRoute answers a request no pattern took: 405 with Allow when the path
// is known under other methods, 404 otherwise.
func noRoute(mux *http.ServeMux) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if allow := allowedMethods(mux, r); len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			writeError(w, http.StatusMethodNotAllowed, codeMethod, "method not allowed on this path; allowed: "+strings.Join(allow, ", "))
			return
		}
		writeError(w, http.StatusNotFound, codeNotFound, "no such route")
	}
}

// allowedMethods lists the methods under which mux serves r's path.
func allowedMethods(mux *http.ServeMux, r *http.Request) []string {
	var out []string
	for _, m := range routeMethods {
		if m == r.Method {
			continue
		}
		probe := &http.Request{Method: m, URL: r.URL, Host: r.Host, Header: http.Header{}}
		if _, pattern := mux.Handler(probe); pattern != "" && pattern != "/" {
			out = append(out, m)
		}
	}
	return out
}

// routeOf is the route pattern that serves r, without its method, for
// metrics and logs ("unmatched" when none does): bounded, and free of ids,
// card UIDs and query strings (a bridge token may ride in one).
func routeOf(mux *http.ServeMux, r *http.Request) string {
	_, pattern := mux.Handler(r)
	if _, path, ok := strings.Cut(pattern, " "); ok {
		pattern = path
	}
	if pattern == "" || pattern == "/" {
		return "unmatched"
	}
	return pattern
}

// methodLabel bounds the method label to the methods the API knows.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions:
		return m
	}
	return "other"
}

// observe wraps the public handler: every request is counted and timed
// by route, method and status, and produces exactly one log line — the
// audit line of an operator action, or a request line for everything
// else (bridge sockets, health checks, refused and unknown requests).
// Neither carries a query string, a header, a key or a token.
func (s *Server) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ri := newRequestInfo(r)
		r = r.WithContext(context.WithValue(r.Context(), requestInfoKey{}, ri))
		ow := &observedWriter{ResponseWriter: w}
		defer func() {
			status := ow.status
			if status == 0 {
				status = http.StatusOK
			}
			route, method, d := routeOf(s.mux, r), methodLabel(r.Method), time.Since(start)
			s.metrics.httpRequest(route, method, status, d, ow.hijacked)
			ri.mu.Lock()
			audited := ri.audited
			ri.mu.Unlock()
			if audited {
				return
			}
			lvl := zap.InfoLevel
			if route == "/healthz" || route == "/readyz" {
				lvl = zap.DebugLevel
			}
			s.log.Log(lvl, "request", zap.String("method", method), zap.String("route", route), zap.Int("status", status),
				zap.Duration("duration", d), zap.Int64("bytes", ow.bytes), zap.String("request_id", ri.ID), zap.String("client", ri.Client))
		}()
		next.ServeHTTP(ow, r)
	})
}

// observedWriter records the status and size of an answer; it unwraps
// and hijacks for the bridge's WebSocket upgrade (status 101).
type observedWriter struct {
	http.ResponseWriter
	status   int
	bytes    int64
	hijacked bool
}

func (o *observedWriter) WriteHeader(code int) {
	if o.status == 0 {
		o.status = code
	}
	o.ResponseWriter.WriteHeader(code)
}

func (o *observedWriter) Write(b []byte) (int, error) {
	if o.status == 0 {
		o.status = http.StatusOK
	}
	n, err := o.ResponseWriter.Write(b)
	o.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the connection.
func (o *observedWriter) Unwrap() http.ResponseWriter { return o.ResponseWriter }

// Flush passes a flush on (streamed exports).
func (o *observedWriter) Flush() {
	if f, ok := o.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Hijack hands the connection over (WebSocket upgrade).
func (o *observedWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(o.ResponseWriter).Hijack()
	if err == nil {
		o.hijacked = true
		if o.status == 0 {
			o.status = http.StatusSwitchingProtocols
		}
	}
	return c, rw, err
}
