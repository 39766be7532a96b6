package tests

import (
	"encoding/json"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v4"
)

// webhookMetrics are exported by the outcome webhooks (issue 17 point 2),
// named here by agreement ahead of them.
var webhookMetrics = []string{"relay_webhook_backlog"}

// exportedMetrics reads the metric names relayd registers from
// server/metrics.go.
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	src, err := os.ReadFile("../server/metrics.go")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, m := range regexp.MustCompile(`Name:\s+"(relay_[a-z_]+)"`).FindAllStringSubmatch(string(src), -1) {
		out[m[1]] = true
	}
	for _, m := range webhookMetrics {
		out[m] = true
	}
	if len(out) < 10 {
		t.Fatalf("found only %d metric names in server/metrics.go", len(out))
	}
	return out
}

var metricRE = regexp.MustCompile(`\brelay_[a-z_]+\b`)

// unknownMetrics returns the relay_ metrics expr names that relayd does
// not export (histogram series suffixes allowed).
func unknownMetrics(expr string, known map[string]bool) []string {
	var out []string
	for _, name := range metricRE.FindAllString(expr, -1) {
		base := name
		for _, suf := range []string{"_bucket", "_count", "_sum"} {
			if b, ok := strings.CutSuffix(name, suf); ok && known[b] {
				base = b
			}
		}
		if !known[base] {
			out = append(out, name)
		}
	}
	return out
}

// TestAlertRules: deploy/prometheus/alerts.yml parses as Prometheus rule
// groups, covers the alerts, and names only exported metrics.
func TestAlertRules(t *testing.T) {
	raw, err := os.ReadFile("../deploy/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	known := exportedMetrics(t)
	covered := map[string]bool{}
	var names []string
	for _, g := range doc.Groups {
		for _, r := range g.Rules {
			names = append(names, r.Alert)
			if r.Alert == "" || strings.TrimSpace(r.Expr) == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("rule %q: alert, expr, severity and summary are required", r.Alert)
			}
			if bad := unknownMetrics(r.Expr, known); len(bad) > 0 {
				t.Errorf("rule %s names metrics relayd does not export: %v", r.Alert, bad)
			}
			for _, m := range []string{"relay_oldest_unresolved_topup_seconds", "relay_integrity_failures_total", "relay_webhook_backlog", "relay_sessions_total"} {
				if strings.Contains(r.Expr, m) {
					covered[m] = true
				}
			}
		}
	}
	if len(covered) != 4 {
		t.Errorf("alerts cover %v; want unresolved age, integrity failures, webhook backlog and session errors", covered)
	}
	sort.Strings(names)
	t.Logf("%d alert rules: %s", len(names), strings.Join(names, ", "))
}

// TestGrafanaDashboard: deploy/grafana/relay-dashboard.json is a
// dashboard whose every query names exported metrics.
func TestGrafanaDashboard(t *testing.T) {
	raw, err := os.ReadFile("../deploy/grafana/relay-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatal(err)
	}
	if dash.Title == "" || dash.UID == "" || len(dash.Panels) < 8 {
		t.Fatalf("dashboard %q uid %q with %d panels", dash.Title, dash.UID, len(dash.Panels))
	}
	known := exportedMetrics(t)
	used := map[string]bool{}
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			if bad := unknownMetrics(q.Expr, known); len(bad) > 0 {
				t.Errorf("panel %q names metrics relayd does not export: %v", p.Title, bad)
			}
			for _, m := range metricRE.FindAllString(q.Expr, -1) {
				used[m] = true
			}
		}
	}
	t.Logf("%d panels over %d series names", len(dash.Panels), len(used))
}
