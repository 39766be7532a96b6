package tests

import (
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/desfire-relay/relay/internal/testenv"
	"github.com/desfire-relay/relay/server"
)

// TestOpenAPIMatchesRoutes checks that every route the server registers is
// documented and every documented path is served.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	doc := string(server.OpenAPI())
	var documented []string
	path := ""
	pathRE := regexp.MustCompile(`^  (/\S*):\s*$`)
	methodRE := regexp.MustCompile(`^    (get|post|put|patch|delete):\s*$`)
	for _, line := range strings.Split(doc, "\n") {
		if m := pathRE.FindStringSubmatch(line); m != nil {
			path = m[1]
			continue
		}
		if m := methodRE.FindStringSubmatch(line); m != nil && path != "" {
			documented = append(documented, strings.ToUpper(m[1])+" "+path)
		}
		if strings.HasPrefix(line, "components:") {
			break
		}
	}
	// The document covers both listeners: the public one (Routes) and the
	// admin one (AdminRoutes; /healthz and /readyz are on both).
	routes := append([]string(nil), server.Routes()...)
	for _, r := range server.AdminRoutes() {
		if !slices.Contains(routes, r) {
			routes = append(routes, r)
		}
	}
	sort.Strings(documented)
	sort.Strings(routes)
	if strings.Join(documented, "\n") != strings.Join(routes, "\n") {
		t.Fatalf("OpenAPI documents:\n%s\nserver routes:\n%s", strings.Join(documented, "\n"), strings.Join(routes, "\n"))
	}
	// Every route is really served on its listener (an unknown route
	// answers 404 not_found), and the admin routes are not public.
	srv := server.New(server.Options{})
	for _, l := range []struct {
		name   string
		h      http.Handler
		routes []string
	}{{"public", srv.Handler(), server.Routes()}, {"admin", srv.AdminHandler(), server.AdminRoutes()}} {
		for _, r := range l.routes {
			method, p, _ := strings.Cut(r, " ")
			p = strings.NewReplacer("{id}", "00000000-0000-0000-0000-000000000000", "{uid}", "04A1B2C3D4E5F6").Replace(p)
			if p == "/readyz" || p == "/v1/bridge" {
				continue // need a service; covered by the end-to-end tests
			}
			rec := httptest.NewRecorder()
			l.h.ServeHTTP(rec, httptest.NewRequest(method, p, nil))
			if rec.Code == http.StatusNotFound || rec.Code == http.StatusMethodNotAllowed {
				t.Errorf("%s listener: %s answered %d", l.name, r, rec.Code)
			}
		}
	}
	for _, r := range server.AdminRoutes() {
		if slices.Contains(server.Routes(), r) {
			continue
		}
		_, p, _ := strings.Cut(r, " ")
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, p, nil))
		if rec.Code != http.StatusNotFound {
			t.Errorf("public listener serves admin route %s (%d)", r, rec.Code)
		}
	}
}

// TestImportDirection keeps the layers one-way: desfire imports nothing of
// ours outside desfire, transaction never imports server, and nothing but
// server's own command imports server.
func TestImportDirection(t *testing.T) {
	const mod = "github.com/desfire-relay/relay/"
	deps := func(pkg string) []string {
		out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", pkg).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", pkg, err)
		}
		return strings.Fields(string(out))
	}
	for _, d := range deps("../desfire/...") {
		if strings.HasPrefix(d, mod) && !strings.HasPrefix(d, mod+"desfire") {
			t.Errorf("desfire depends on %s", d)
		}
	}
	for _, d := range deps("../transaction/...") {
		if strings.HasPrefix(d, mod+"server") || strings.HasPrefix(d, mod+"mobile-bridge") {
			t.Errorf("transaction depends on %s", d)
		}
	}
	for _, d := range deps("../mobile-bridge/...") {
		if strings.HasPrefix(d, mod+"server") {
			t.Errorf("mobile-bridge depends on %s", d)
		}
	}
}

// TestComposeFileValid runs docker-compose config on the compose file.
func TestComposeFileValid(t *testing.T) {
	bin, err := exec.LookPath("docker-compose")
	if err != nil {
		if testenv.InCI() {
			t.Fatal("docker-compose is not installed (scripts/test.sh installs it)")
		}
		t.Skip("docker-compose not installed; scripts/test.sh installs it")
	}
	cmd := exec.Command(bin, "-f", "../docker-compose.yml", "config", "-q")
	cmd.Env = append(os.Environ(), "COMPOSE_PROJECT_NAME=relaytest")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docker-compose config: %v\n%s", err, out)
	}
}
