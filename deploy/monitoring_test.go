package deploy_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
)

const (
	dashboardFile = "grafana/vmware-event-router.json"
	rulesFile     = "prometheus/rules.yaml"
)

// ruleFile is Prometheus' rule file format, as far as rules.yaml uses it;
// decoded strictly, so a misspelled key (exp:, annotation:) fails.
type ruleFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []rule `json:"rules"`
	} `json:"groups"`
}

type rule struct {
	Alert       string            `json:"alert"`
	Expr        string            `json:"expr"`
	For         string            `json:"for,omitempty"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

func loadRules(t *testing.T) ruleFile {
	t.Helper()
	var rf ruleFile
	if err := decodeStrict(readFile(t, rulesFile), &rf); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	return rf
}

// The alerts issue 15 asks for, and those the README's Troubleshooting
// names as what to alert on.
var wantAlerts = []string{
	"EventRouterStreamDisconnected", "EventRouterStreamSilent", "EventRouterDeadLetters",
	"EventRouterQueueNearFull", "EventRouterWatermarkLag", "EventRouterFilterBreakerOpen",
	"EventRouterFilterReloadFailed", "EventRouterCheckpointWriteFailed",
	"EventRouterDestinationHeld", "EventRouterDeadLetterSinkFull",
}

// The families the dashboard must show (issue 15's panels).
var wantDashboardFamilies = []string{
	"eventrouter_stream_events_total", "eventrouter_processor_deliveries_total",
	"eventrouter_delivery_lag_seconds", "eventrouter_queue_depth", "eventrouter_dead_letters_total",
	"eventrouter_filter_verdicts_total", "eventrouter_filter_errors_total",
	"eventrouter_filter_duration_seconds", "eventrouter_filter_breaker_open",
	"eventrouter_stream_connected", "eventrouter_watermark_lag_seconds",
	"eventrouter_checkpoint_last_write_timestamp_seconds",
}

// grafanaVar matches Grafana's variables: $name or ${name}.
var grafanaVar = regexp.MustCompile(`\$\{?(\w+)\}?`)

// families returns the eventrouter_ families a PromQL expression queries,
// after replacing Grafana's variables ($__rate_interval by a duration, the
// template variables by a regexp), or the parse error. It is an error to
// query a family the router does not register, or to match or group on a
// label none of the expression's families has (an empty panel, an alert
// that never fires).
func families(expr string, registered map[string]metrics.Family) ([]string, error) {
	expr = grafanaVar.ReplaceAllStringFunc(expr, func(v string) string {
		if strings.HasPrefix(strings.Trim(v, "${}"), "__") {
			return "5m"
		}
		return ".*"
	})
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		return nil, err
	}
	var names []string
	var errs []error
	known := map[string]bool{}
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := family(vs.Name, registered)
		if name == "" {
			errs = append(errs, fmt.Errorf("%s is not registered by the router", vs.Name))
			return nil
		}
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
		f := registered[name]
		labels := slices.Clone(f.Labels)
		if f.Type == "histogram" && strings.HasSuffix(vs.Name, "_bucket") {
			labels = append(labels, "le")
		}
		for _, l := range labels {
			known[l] = true
		}
		for _, m := range vs.LabelMatchers {
			if m.Name != "__name__" && !slices.Contains(labels, m.Name) {
				errs = append(errs, fmt.Errorf("%s has no label %q", vs.Name, m.Name))
			}
		}
		return nil
	})
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if a, ok := n.(*parser.AggregateExpr); ok && !a.Without {
			for _, l := range a.Grouping {
				if !known[l] {
					errs = append(errs, fmt.Errorf("by (%s): no family of the expression has that label", l))
				}
			}
		}
		return nil
	})
	return names, errors.Join(errs...)
}

// family maps a series name to its registered family ("" if none): a
// histogram's series carry _bucket, _sum and _count.
func family(series string, registered map[string]metrics.Family) string {
	if _, ok := registered[series]; ok {
		return series
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(series, suffix); ok && registered[base].Type == "histogram" {
			return base
		}
	}
	return ""
}

func TestFamiliesCheckerRejects(t *testing.T) {
	reg := metrics.New().Families()
	for _, expr := range []string{
		`eventrouter_stream_conected == 0`,                       // misspelled
		`rate(eventrouter_queue_depth_bucket[5m])`,               // a gauge has no buckets
		`rate(eventrouter_stream_events_total[$__rate_interval]`, // unbalanced
		`eventrouter_no_such_family`,                             // not registered
		`eventrouter_queue_depth{stream="a"}`,                    // no such label
		`sum by (stream) (eventrouter_queue_depth)`,              // nor here
	} {
		if _, err := families(expr, reg); err == nil {
			t.Errorf("%s: accepted", expr)
		} else {
			t.Logf("%s: %v", expr, err)
		}
	}
	if got, err := families(`histogram_quantile(0.99, sum by (le) (rate(eventrouter_delivery_lag_seconds_bucket{processor=~"$processor"}[$__rate_interval])))`, reg); err != nil ||
		!slices.Equal(got, []string{"eventrouter_delivery_lag_seconds"}) {
		t.Errorf("a histogram quantile: %v %v", got, err)
	}
}

// dashboard is the part of Grafana's dashboard model the test reads.
type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name       string `json:"name"`
			Type       string `json:"type"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID          int    `json:"id"`
	Type        string `json:"type"`
	Title       string `json:"title"`
	Description string `json:"description"`
	Datasource  *struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		Expr         string `json:"expr"`
		LegendFormat string `json:"legendFormat"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

func TestDashboard(t *testing.T) {
	reg := metrics.New().Families()
	var d dashboard
	if err := json.Unmarshal(readFile(t, dashboardFile), &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if d.UID == "" || d.Title == "" {
		t.Errorf("uid %q title %q: both are needed to import and link the dashboard", d.UID, d.Title)
	}

	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = false
		if v.Type != "query" {
			continue
		}
		// label_values(METRIC, LABEL) is Grafana's, not PromQL.
		m := regexp.MustCompile(`^label_values\((\w+),\s*(\w+)\)$`).FindStringSubmatch(v.Definition)
		if m == nil || family(m[1], reg) == "" || m[2] != v.Name {
			t.Errorf("variable %s: %q must be label_values(a registered metric, %s)", v.Name, v.Definition, v.Name)
		}
	}
	for _, name := range []string{"datasource", "stream", "processor"} {
		if _, ok := vars[name]; !ok {
			t.Errorf("no template variable %q", name)
		}
	}

	shown := map[string]bool{}
	ids := map[int]bool{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if ids[p.ID] {
				t.Errorf("panel id %d repeats", p.ID)
			}
			ids[p.ID] = true
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if p.Title == "" || p.Description == "" {
				t.Errorf("panel %d %q: needs a title and a description", p.ID, p.Title)
			}
			if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q: datasource must be the ${datasource} variable", p.Title)
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q: no query", p.Title)
			}
			for _, tg := range p.Targets {
				names, err := families(tg.Expr, reg)
				if err != nil {
					t.Errorf("panel %q: %s: %v", p.Title, tg.Expr, err)
				}
				for _, n := range names {
					shown[n] = true
				}
				for name := range vars {
					if strings.Contains(tg.Expr, "$"+name) {
						vars[name] = true
					}
				}
			}
		}
	}
	walk(d.Panels)
	for _, f := range wantDashboardFamilies {
		if !shown[f] {
			t.Errorf("no panel shows %s", f)
		}
	}
	for _, name := range []string{"stream", "processor"} {
		if !vars[name] {
			t.Errorf("no query uses the variable $%s", name)
		}
	}
}

func TestAlertRules(t *testing.T) {
	reg := metrics.New().Families()
	rf := loadRules(t)
	var alerts []string
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			if r.Alert == "" {
				t.Errorf("group %s: a rule without alert (recording rules are not expected)", g.Name)
			}
			if _, err := families(r.Expr, reg); err != nil {
				t.Errorf("%s: %s: %v", r.Alert, r.Expr, err)
			}
			if r.For != "" {
				if _, err := model.ParseDuration(r.For); err != nil {
					t.Errorf("%s: for %q: %v", r.Alert, r.For, err)
				}
			}
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("%s: severity %q, want warning or critical", r.Alert, s)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: needs summary and description annotations", r.Alert)
			}
		}
	}
	slices.Sort(alerts)
	want := slices.Sorted(slices.Values(wantAlerts))
	if !slices.Equal(alerts, want) {
		t.Errorf("alerts %v, want %v (each with a runbook in the README)", alerts, want)
	}
}
