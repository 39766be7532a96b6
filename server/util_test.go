package server_test

import (
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/desfire-relay/relay/internal/testserver"
	"github.com/desfire-relay/relay/server"
)

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }

func decodeJSON(r *http.Response, v any) { json.NewDecoder(r.Body).Decode(v) }

func newTestServer(t *testing.T, s *server.Server) *httptest.Server {
	return testserver.Serve(t, s.Handler())
}
