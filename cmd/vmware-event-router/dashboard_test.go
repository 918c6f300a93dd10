package main

import (
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
)

// TestDashboardAndRulesAgainstARun: every eventrouter_ metric the Grafana
// dashboard and the alert rules query is one a running router serves:
// scraped from a real run's /metrics, or, for families that have no series
// until something happens (a dead letter, a held destination), registered
// by the router under the same type. deploy/'s tests parse every
// expression with Prometheus' parser; this one ties the names to a run.
func TestDashboardAndRulesAgainstARun(t *testing.T) {
	d := startCore(t, map[string]any{"type": "stream", "provider": "vcsim", "options": map[string]string{"rate": "20"}}, stdoutEntry)
	d.waitReady(t)
	d.eventually(t, 30*time.Second, "a delivered event", func() bool {
		return d.metric(t, `eventrouter_processor_deliveries_total{destination="stdout",processor="stdout",result="ok"}`) > 0
	})

	req, err := http.NewRequest(http.MethodGet, d.metrics+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	code, body := httpDo(req)
	if code != http.StatusOK {
		t.Fatalf("/metrics answered %d", code)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	scraped, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics is not the Prometheus text format: %v", err)
	}
	registered := metrics.New().Families()

	name := regexp.MustCompile(`eventrouter_[a-z0-9_]+`)
	for _, file := range []string{"../../deploy/grafana/vmware-event-router.json", "../../deploy/prometheus/rules.yaml"} {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		used := map[string]bool{}
		for _, n := range name.FindAllString(string(data), -1) {
			used[n] = true
		}
		if len(used) < 5 {
			t.Fatalf("%s: only %d metric names found: the pattern is wrong", file, len(used))
		}
		served := 0
		for n := range used {
			family := n
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if base, ok := strings.CutSuffix(n, suffix); ok && registered[base].Type == "histogram" {
					family = base
				}
			}
			if _, ok := scraped[family]; ok {
				served++
				continue
			}
			if _, ok := registered[family]; !ok {
				t.Errorf("%s queries %s, which the router neither served in this run nor registers", file, n)
			}
		}
		if served == 0 {
			t.Errorf("%s: none of its %d metrics was served by the run", file, len(used))
		}
	}
}
