package main

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	fluxmetrics "github.com/fluxcd/pkg/runtime/metrics"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/yaml"

	"github.com/sluice-dev/sluice/controllers"
	"github.com/sluice-dev/sluice/gitops"
)

// TestMonitoring reads the dashboard and alert rules of config/monitoring
// and checks that every metric they name is one sluice serves.
func TestMonitoring(t *testing.T) {
	known := servedMetrics(t)

	var rules struct {
		Kind string `json:"kind"`
		Spec struct {
			Groups []struct {
				Name  string `json:"name"`
				Rules []struct {
					Alert  string            `json:"alert"`
					Expr   string            `json:"expr"`
					Labels map[string]string `json:"labels"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"spec"`
	}
	data, err := os.ReadFile("config/monitoring/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &rules); err != nil {
		t.Fatalf("alerts.yaml: %v", err)
	}
	if rules.Kind != "PrometheusRule" {
		t.Fatalf("alerts.yaml is a %q, not a PrometheusRule", rules.Kind)
	}
	exprs := map[string]string{}
	for _, g := range rules.Spec.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || r.Expr == "" || r.Labels["severity"] == "" {
				t.Errorf("alerts.yaml: group %s has a rule without alert, expr or severity: %+v", g.Name, r)
			}
			exprs["alert "+r.Alert] = r.Expr
		}
	}

	var dashboard struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	data, err = os.ReadFile("config/monitoring/dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &dashboard); err != nil {
		t.Fatalf("dashboard.json: %v", err)
	}
	for _, p := range dashboard.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("dashboard.json: panel %q queries nothing", p.Title)
		}
		for i, target := range p.Targets {
			exprs["panel "+p.Title+" "+string(rune('A'+i))] = target.Expr
		}
	}
	labelValues := regexp.MustCompile(`label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,`)
	for _, v := range dashboard.Templating.List {
		q, _ := json.Marshal(v.Query)
		for _, m := range labelValues.FindAllStringSubmatch(string(q), -1) {
			exprs["variable "+v.Name] = m[1]
		}
	}
	if len(exprs) < 10 {
		t.Fatalf("found only %d queries in config/monitoring", len(exprs))
	}

	for where, expr := range exprs {
		names := metricNames(expr)
		if len(names) == 0 {
			t.Errorf("%s: no metric in %q", where, expr)
		}
		for _, name := range names {
			if !known[name] {
				t.Errorf("%s: sluice serves no metric %s (in %q)", where, name, expr)
			}
		}
	}
}

// servedMetrics are the names of the series sluice's metrics address
// serves: its own metrics, Flux's gotk_* ones and what controller-runtime's
// registry holds (Go and process metrics).
func servedMetrics(t *testing.T) map[string]bool {
	known := map[string]bool{}
	add := func(name string, histogram bool) {
		known[name] = true
		if histogram {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				known[name+suffix] = true
			}
		}
	}
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	collectors := slices.Concat(controllers.Collectors(), gitops.Collectors(), fluxmetrics.NewRecorder().Collectors())
	for _, c := range collectors {
		_, histogram := c.(*prometheus.HistogramVec)
		ch := make(chan *prometheus.Desc, 16)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			m := fqName.FindStringSubmatch(d.String())
			if m == nil {
				t.Fatalf("no name in %s", d)
			}
			add(m[1], histogram)
		}
	}
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		add(f.GetName(), f.GetType() == dto.MetricType_HISTOGRAM)
	}
	return known
}

var (
	promqlStrings  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	promqlMatchers = regexp.MustCompile(`\{[^}]*\}|\[[^\]]*\]`)
	promqlGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promqlName     = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	promqlWords    = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true, "by": true, "without": true}
)

// metricNames are the metrics a PromQL expression selects: its names that
// are neither functions, keywords, labels nor numbers.
func metricNames(expr string) []string {
	expr = promqlStrings.ReplaceAllString(expr, `""`)
	expr = promqlMatchers.ReplaceAllString(expr, " ")
	expr = promqlGrouping.ReplaceAllString(expr, " ")
	var names []string
	for _, loc := range promqlName.FindAllStringIndex(expr, -1) {
		name := expr[loc[0]:loc[1]]
		rest := strings.TrimLeft(expr[loc[1]:], " \t\n")
		if strings.HasPrefix(rest, "(") || promqlWords[name] {
			continue
		}
		if loc[0] > 0 && strings.ContainsAny(expr[loc[0]-1:loc[0]], "0123456789.$") {
			continue // 1e3, $variable
		}
		names = append(names, name)
	}
	return names
}

func TestMetricNames(t *testing.T) {
	for _, tt := range []struct {
		expr string
		want []string
	}{
		{`increase(sluice_rejections_total[10m]) > 0`, []string{"sluice_rejections_total"}},
		{`sum by (namespace, name) (increase(sluice_promotions_total{namespace=~"$namespace"}[$__rate_interval]))`, []string{"sluice_promotions_total"}},
		{`histogram_quantile(0.95, sum by (le) (rate(gotk_reconcile_duration_seconds_bucket{kind="Delivery"}[5m]))) > 30`,
			[]string{"gotk_reconcile_duration_seconds_bucket"}},
		{`sum(rate(a_sum[1m])) / sum(rate(a_count[1m])) and on (pod) up == 1`, []string{"a_sum", "a_count", "up"}},
		{`sluice_delivery_phase{phase!="Healthy"} == 1`, []string{"sluice_delivery_phase"}},
	} {
		if got := metricNames(tt.expr); !slices.Equal(got, tt.want) {
			t.Errorf("metricNames(%q) = %v, want %v", tt.expr, got, tt.want)
		}
	}
}
