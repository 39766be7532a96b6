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
		if m := methodRE.FindStringSubmatch(line); m != nil && path != "" && !strings.HasPrefix(path, "/debug/pprof/") {
			// pprof (admin listener, only when enabled) is checked by
			// server's TestAdminListener.
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

// pkgImports is one package of the module and the module packages it
// imports directly: Imports from its own files, TestImports from its test
// files (both paths relative to the module root).
type pkgImports struct {
	Path        string
	Imports     []string
	TestImports []string
}

// under reports whether path p is dir or inside it.
func under(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }

// underAny reports whether p is under one of dirs.
func underAny(p string, dirs ...string) bool {
	for _, d := range dirs {
		if under(p, d) {
			return true
		}
	}
	return false
}

// importViolations checks the layering rules on a module's import graph
// and returns one line per broken rule:
//
//   - desfire and protocol import nothing of ours outside themselves, in
//     their code or their tests, directly or through another package;
//   - transaction's code depends only on desfire (its tests may also use
//     the harnesses in internal);
//   - mobile-bridge depends on neither transaction nor server (its code
//     not even through another package; its tests not directly);
//   - only server itself, internal and tests import server;
//   - server/relay, the bridge transport, depends on no domain package
//     (transaction): transport failures are desfire's sentinels.
func importViolations(pkgs []pkgImports) []string {
	code := map[string][]string{}
	for _, p := range pkgs {
		code[p.Path] = p.Imports
	}
	// deps returns every module package p's code depends on.
	deps := func(p string) []string {
		seen := map[string]bool{}
		var out []string
		var walk func(string)
		walk = func(q string) {
			for _, d := range code[q] {
				if !seen[d] {
					seen[d] = true
					out = append(out, d)
					walk(d)
				}
			}
		}
		walk(p)
		sort.Strings(out)
		return out
	}
	var bad []string
	for _, p := range pkgs {
		all := deps(p.Path)
		switch {
		case under(p.Path, "desfire"), under(p.Path, "protocol"):
			own := strings.SplitN(p.Path, "/", 2)[0]
			for _, d := range append(all, p.TestImports...) {
				if !under(d, own) {
					bad = append(bad, p.Path+" depends on "+d)
				}
			}
		case under(p.Path, "transaction"):
			for _, d := range all {
				if !underAny(d, "transaction", "desfire") {
					bad = append(bad, p.Path+" depends on "+d)
				}
			}
			for _, d := range p.TestImports {
				if !underAny(d, "transaction", "desfire", "internal") {
					bad = append(bad, p.Path+" (tests) imports "+d)
				}
			}
		case under(p.Path, "mobile-bridge"):
			for _, d := range all {
				if underAny(d, "transaction", "server") {
					bad = append(bad, p.Path+" depends on "+d)
				}
			}
			for _, d := range p.TestImports {
				if underAny(d, "transaction", "server") {
					bad = append(bad, p.Path+" (tests) imports "+d)
				}
			}
		}
		if under(p.Path, "server/relay") {
			for _, d := range all {
				if under(d, "transaction") {
					bad = append(bad, p.Path+" depends on "+d)
				}
			}
		}
		if !underAny(p.Path, "server", "internal", "tests") {
			for _, d := range append(append([]string{}, p.Imports...), p.TestImports...) {
				if under(d, "server") {
					bad = append(bad, p.Path+" imports "+d+" (only server, internal and tests may)")
				}
			}
		}
	}
	sort.Strings(bad)
	return bad
}

// moduleImports lists the module's packages (with the pcsc build tag, so
// every file counts) and their imports of the module's packages.
func moduleImports(t *testing.T) []pkgImports {
	t.Helper()
	const mod = "github.com/desfire-relay/relay/"
	out, err := exec.Command("go", "list", "-tags", "pcsc", "-f",
		"{{.ImportPath}}|{{join .Imports \" \"}}|{{join .TestImports \" \"}} {{join .XTestImports \" \"}}", "../...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	ours := func(list string) []string {
		var r []string
		for _, f := range strings.Fields(list) {
			if strings.HasPrefix(f, mod) {
				r = append(r, strings.TrimPrefix(f, mod))
			}
		}
		return r
	}
	var pkgs []pkgImports
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		parts := strings.SplitN(line, "|", 3)
		if len(parts) != 3 || !strings.HasPrefix(parts[0], mod) {
			t.Fatalf("go list line %q", line)
		}
		pkgs = append(pkgs, pkgImports{Path: strings.TrimPrefix(parts[0], mod), Imports: ours(parts[1]), TestImports: ours(parts[2])})
	}
	return pkgs
}

// TestImportDirection keeps the layers one-way (see importViolations).
func TestImportDirection(t *testing.T) {
	pkgs := moduleImports(t)
	if len(pkgs) < 10 {
		t.Fatalf("go list found %d packages", len(pkgs))
	}
	for _, v := range importViolations(pkgs) {
		t.Error(v)
	}
}

// TestImportRulesCatchViolations runs the checker on a clean synthetic
// graph and on one violation of each rule, so a checker that stopped
// looking would fail here.
func TestImportRulesCatchViolations(t *testing.T) {
	clean := []pkgImports{
		{Path: "desfire", Imports: []string{"desfire/dfcrypto"}, TestImports: []string{"desfire/simcard"}},
		{Path: "desfire/dfcrypto"},
		{Path: "desfire/simcard", Imports: []string{"desfire"}},
		{Path: "desfire/personalize", Imports: []string{"desfire", "desfire/simcard"}},
		{Path: "protocol"},
		{Path: "transaction", Imports: []string{"desfire", "transaction/keys"}, TestImports: []string{"internal/testcard"}},
		{Path: "transaction/keys", Imports: []string{"desfire/personalize"}},
		{Path: "mobile-bridge/bridge", Imports: []string{"desfire/personalize", "protocol"}, TestImports: []string{"internal/testserver"}},
		{Path: "server", Imports: []string{"transaction", "protocol", "server/config"}},
		{Path: "server/config"},
		{Path: "server/relay", Imports: []string{"desfire", "protocol"}},
		{Path: "server/cmd/relayd", Imports: []string{"server"}},
		{Path: "internal/testcard", Imports: []string{"transaction"}},
		{Path: "internal/testserver", Imports: []string{"server", "internal/testcard"}},
		{Path: "tests", TestImports: []string{"server"}},
	}
	if v := importViolations(clean); len(v) != 0 {
		t.Fatalf("clean graph: %v", v)
	}
	cases := []struct {
		name string
		add  pkgImports // replaces the package of the same path
		want string
	}{
		{"desfire imports transaction", pkgImports{Path: "desfire/simcard", Imports: []string{"desfire", "transaction/keys"}}, "desfire/simcard depends on transaction/keys"},
		{"desfire through another package", pkgImports{Path: "desfire/dfcrypto", Imports: []string{"protocol"}}, "desfire depends on protocol"},
		{"desfire test imports internal", pkgImports{Path: "desfire/dfcrypto", TestImports: []string{"internal/testcard"}}, "desfire/dfcrypto depends on internal/testcard"},
		{"protocol imports desfire", pkgImports{Path: "protocol", Imports: []string{"desfire"}}, "protocol depends on desfire"},
		{"transport imports the domain", pkgImports{Path: "server/relay", Imports: []string{"desfire", "transaction/keys"}}, "server/relay depends on transaction/keys"},
		{"transaction imports protocol", pkgImports{Path: "transaction/keys", Imports: []string{"protocol"}}, "transaction depends on protocol"},
		{"transaction test imports mobile-bridge", pkgImports{Path: "transaction", Imports: []string{"desfire"}, TestImports: []string{"mobile-bridge/bridge"}}, "transaction (tests) imports mobile-bridge/bridge"},
		{"mobile-bridge imports transaction", pkgImports{Path: "mobile-bridge/bridge", Imports: []string{"transaction/keys"}}, "mobile-bridge/bridge depends on transaction/keys"},
		{"mobile-bridge through internal", pkgImports{Path: "mobile-bridge/bridge", Imports: []string{"internal/testcard"}}, "mobile-bridge/bridge depends on transaction"},
		{"mobile-bridge test imports transaction", pkgImports{Path: "mobile-bridge/bridge", TestImports: []string{"transaction"}}, "mobile-bridge/bridge (tests) imports transaction"},
		{"transaction imports server", pkgImports{Path: "transaction/keys", Imports: []string{"server/config"}}, "transaction/keys imports server/config (only server, internal and tests may)"},
		{"protocol test imports server", pkgImports{Path: "protocol", TestImports: []string{"server"}}, "protocol imports server (only server, internal and tests may)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var g []pkgImports
			for _, p := range clean {
				if p.Path == c.add.Path {
					p = c.add
				}
				g = append(g, p)
			}
			v := importViolations(g)
			found := false
			for _, line := range v {
				if strings.HasPrefix(line, c.want) || line == c.want {
					found = true
				}
			}
			if !found {
				t.Fatalf("violations %q, want one starting %q", v, c.want)
			}
		})
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
