package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// topPasswordEnv holds the metrics server's basic_auth password for top:
// a flag's value would show in the process list and in shell history.
const topPasswordEnv = envPrefix + "_METRICS_PASSWORD"

// topCommand is `vmware-event-router top`: it scrapes the router's
// /metrics every interval and prints, per stream and per processor, the
// rates over the interval and the current gauges, until interrupted. The
// first scrape must succeed (a wrong address or password ends it at once);
// later failures are printed and the next interval tries again, so a
// router restart does not end it.
func topCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("vmware-event-router top", flag.ContinueOnError)
	fs.SetOutput(stderr)
	metricsURL := fs.String("metrics", "", "the router's metrics address, e.g. http://127.0.0.1:8080 (/metrics is added when the path is empty)")
	interval := fs.Duration("interval", time.Second, "how often to scrape and print")
	user := fs.String("user", "", "basic_auth user of the metrics server; the password is read from "+topPasswordEnv)
	caFile := fs.String("ca-file", "", "PEM file of the CA that signed the metrics server's certificate (default: the system's roots)")
	fail := func(format string, a ...any) int {
		_, _ = fmt.Fprintf(stderr, "vmware-event-router top: "+format+"\n", a...)
		return 1
	}
	if code, ok := parseArgs(fs, args, stderr, "vmware-event-router top"); !ok {
		return code
	}
	if *interval < 100*time.Millisecond {
		return fail("-interval: must be at least 100ms, got %v", *interval)
	}
	s, err := newScraper(*metricsURL, *user, os.Getenv(topPasswordEnv), *caFile)
	if err != nil {
		return fail("%v", err)
	}
	prev, err := s.scrape(ctx)
	if err != nil {
		return fail("%v", err)
	}
	redraw := isTerminal(stdout)
	if err := writeTop(stdout, s.url, *interval, redraw, nil, prev); err != nil {
		return fail("%v", err)
	}
	tick := time.NewTicker(*interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return 0
		case <-tick.C:
		}
		cur, err := s.scrape(ctx)
		switch {
		case ctx.Err() != nil:
			return 0
		case err != nil:
			_, _ = fmt.Fprintf(stdout, "%s  %v\n", time.Now().Format(time.TimeOnly), err)
			continue
		}
		if err := writeTop(stdout, s.url, *interval, redraw, prev, cur); err != nil {
			return fail("%v", err)
		}
		prev = cur
	}
}

// isTerminal reports whether w is a character device (a terminal), where
// top redraws in place; elsewhere it appends blocks.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// scraper fetches the router's /metrics.
type scraper struct {
	url            string // without credentials
	user, password string
	client         *http.Client
}

func newScraper(raw, user, password, caFile string) (*scraper, error) {
	if raw == "" {
		return nil, errors.New("-metrics: required, e.g. -metrics http://127.0.0.1:8080")
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		// The parse error would repeat the URL, which might hold a password.
		return nil, errors.New("-metrics: must be an http:// or https:// URL")
	}
	if u.User != nil {
		return nil, fmt.Errorf("-metrics: give credentials with -user and %s, not in the URL", topPasswordEnv)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/metrics"
	}
	if user != "" && password == "" {
		return nil, fmt.Errorf("-user: set the password in %s", topPasswordEnv)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("-ca-file: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("-ca-file: %s: no PEM certificate", caFile)
		}
	}
	return &scraper{url: u.String(), user: user, password: password, client: &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: tc, Proxy: http.ProxyFromEnvironment},
	}}, nil
}

func (s *scraper) scrape(ctx context.Context) (*sample, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, err
	}
	if s.user != "" {
		req.SetBasicAuth(s.user, s.password)
	}
	// The text format: expfmt's text parser reads it.
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	at := time.Now()
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		return nil, fmt.Errorf("%s: 401 unauthorized (check -user and %s)", s.url, topPasswordEnv)
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("%s: %s", s.url, resp.Status)
	}
	return parseSample(resp.Body, at)
}

// sample is what top reads of one scrape.
type sample struct {
	at         time.Time
	streams    map[string]*streamSample
	processors map[string]*processorSample
}

type streamSample struct {
	events                           float64 // counter
	connected, lag, pending          float64
	hasConnected, hasLag, hasPending bool
}

type processorSample struct {
	deliveries  map[string]float64 // by result, over destinations
	queue, held float64            // over destinations
	detached    float64            // streams it is detached from
	lag         histogram
}

// histogram is a delivery-lag histogram: cumulative counts by upper bound
// (ascending, without +Inf) and the total count.
type histogram struct {
	bounds []float64
	counts []float64
	total  float64
}

func parseSample(r io.Reader, at time.Time) (*sample, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("reading /metrics: %w", err)
	}
	s := &sample{at: at, streams: map[string]*streamSample{}, processors: map[string]*processorSample{}}
	stream := func(name string) *streamSample {
		if s.streams[name] == nil {
			s.streams[name] = &streamSample{}
		}
		return s.streams[name]
	}
	processor := func(name string) *processorSample {
		if s.processors[name] == nil {
			s.processors[name] = &processorSample{deliveries: map[string]float64{}}
		}
		return s.processors[name]
	}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue() + m.GetUntyped().GetValue()
			switch name {
			case "eventrouter_stream_events_total":
				stream(l["stream"]).events = v
			case "eventrouter_stream_connected":
				st := stream(l["stream"])
				st.connected, st.hasConnected = v, true
			case "eventrouter_watermark_lag_seconds":
				st := stream(l["stream"])
				st.lag, st.hasLag = v, true
			case "eventrouter_watermark_pending_events":
				st := stream(l["stream"])
				st.pending, st.hasPending = v, true
			case "eventrouter_processor_deliveries_total":
				processor(l["processor"]).deliveries[l["result"]] += v
			case "eventrouter_queue_depth":
				processor(l["processor"]).queue += v
			case "eventrouter_destination_held":
				processor(l["processor"]).held += v
			case "eventrouter_processor_detached":
				processor(l["processor"]).detached += v
			case "eventrouter_delivery_lag_seconds":
				processor(l["processor"]).lag = readHistogram(m.GetHistogram())
			}
		}
	}
	return s, nil
}

func readHistogram(h *dto.Histogram) histogram {
	var out histogram
	for _, b := range h.GetBucket() {
		if math.IsInf(b.GetUpperBound(), 1) {
			continue
		}
		out.bounds = append(out.bounds, b.GetUpperBound())
		out.counts = append(out.counts, float64(b.GetCumulativeCount())+b.GetCumulativeCountFloat())
	}
	out.total = float64(h.GetSampleCount()) + h.GetSampleCountFloat()
	return out
}

// streamRow and processorRow are one line of top: rates over the interval
// between two samples (NaN without an earlier sample), gauges as now.
type streamRow struct {
	name                    string
	rate                    float64
	connected, lag, pending string
}

type processorRow struct {
	name                    string
	ok, retry, failed, dead float64
	queue, held, detached   float64
	lagP99                  float64 // seconds; NaN when nothing was delivered in the interval
}

// rows computes top's lines from the previous sample (nil for the first)
// and the current one.
func rows(prev, cur *sample) ([]streamRow, []processorRow) {
	dt := math.NaN()
	if prev != nil {
		dt = cur.at.Sub(prev.at).Seconds()
	}
	var ss []streamRow
	for _, name := range sortedKeys(cur.streams) {
		c := cur.streams[name]
		r := streamRow{name: name, rate: math.NaN(), connected: "-", lag: "-", pending: "-"}
		if prev != nil {
			var before float64
			if p := prev.streams[name]; p != nil {
				before = p.events
			}
			r.rate = increase(before, c.events) / dt
		}
		switch {
		case c.hasConnected && c.connected == 1:
			r.connected = "yes"
		case c.hasConnected:
			r.connected = "no"
		}
		if c.hasLag {
			r.lag = seconds(c.lag)
		}
		if c.hasPending {
			r.pending = fmt.Sprintf("%.0f", c.pending)
		}
		ss = append(ss, r)
	}
	var ps []processorRow
	for _, name := range sortedKeys(cur.processors) {
		c := cur.processors[name]
		r := processorRow{name: name, queue: c.queue, held: c.held, detached: c.detached, lagP99: math.NaN()}
		p := &processorSample{deliveries: map[string]float64{}}
		if prev != nil && prev.processors[name] != nil {
			p = prev.processors[name]
		}
		rate := func(result string) float64 { return increase(p.deliveries[result], c.deliveries[result]) / dt }
		r.ok, r.retry, r.failed, r.dead = rate("ok"), rate("retry"), rate("failed"), rate("dead_letter")
		if prev != nil {
			r.lagP99 = quantile(0.99, p.lag, c.lag)
		}
		ps = append(ps, r)
	}
	return ss, ps
}

// increase is a counter's increase from before to now; a counter that went
// down was reset (the router restarted), and counts from 0.
func increase(before, now float64) float64 {
	if now < before {
		return now
	}
	return now - before
}

// quantile estimates the q-quantile of the observations between two
// samples of a histogram, as Prometheus' histogram_quantile does: linear
// interpolation inside the bucket the rank falls in; in the +Inf bucket,
// the highest finite bound. NaN when nothing was observed.
func quantile(q float64, before, now histogram) float64 {
	if now.total < before.total || len(before.counts) != len(now.counts) {
		before = histogram{counts: make([]float64, len(now.counts))} // reset: count from 0
	}
	total := now.total - before.total
	if total <= 0 {
		return math.NaN()
	}
	rank := q * total
	lower, below := 0.0, 0.0
	for i, bound := range now.bounds {
		cum := now.counts[i] - before.counts[i]
		if cum >= rank {
			if cum == below {
				return bound
			}
			return lower + (bound-lower)*(rank-below)/(cum-below)
		}
		lower, below = bound, cum
	}
	if len(now.bounds) == 0 {
		return math.NaN()
	}
	return now.bounds[len(now.bounds)-1]
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// seconds formats a duration in seconds compactly: 12ms, 1.50s, 3m20s.
func seconds(v float64) string {
	switch {
	case math.IsNaN(v):
		return "-"
	case v < 1:
		return fmt.Sprintf("%.0fms", v*1000)
	case v < 60:
		return fmt.Sprintf("%.2fs", v)
	}
	return time.Duration(v * float64(time.Second)).Round(time.Second).String()
}

func perSecond(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf("%.1f", v)
}

// writeTop prints one block: a title line, the streams, the processors.
// redraw clears the terminal first instead of appending.
func writeTop(w io.Writer, target string, interval time.Duration, redraw bool, prev, cur *sample) error {
	ss, ps := rows(prev, cur)
	var b strings.Builder
	if redraw {
		b.WriteString("\x1b[H\x1b[2J")
	}
	fmt.Fprintf(&b, "vmware-event-router top  %s  every %v  %s\n\n", target, interval, cur.at.Format(time.TimeOnly))
	// Names left-aligned (padded to one width), numbers right-aligned.
	width := len("PROCESSOR")
	for _, r := range ss {
		width = max(width, len(r.name))
	}
	for _, r := range ps {
		width = max(width, len(r.name))
	}
	table := func(header string, lines []string) error {
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
		for _, l := range append([]string{header}, lines...) {
			name, rest, _ := strings.Cut(l, "\t")
			_, _ = fmt.Fprintf(tw, "%-*s\t%s\t\n", width, name, rest)
		}
		return tw.Flush()
	}
	var lines []string
	for _, r := range ss {
		lines = append(lines, strings.Join([]string{r.name, perSecond(r.rate), r.connected, r.lag, r.pending}, "\t"))
	}
	if err := table("STREAM\tEVENTS/S\tCONNECTED\tWATERMARK LAG\tPENDING", lines); err != nil {
		return err
	}
	b.WriteString("\n")
	lines = lines[:0]
	for _, r := range ps {
		lines = append(lines, strings.Join([]string{r.name, perSecond(r.ok), perSecond(r.retry), perSecond(r.failed), perSecond(r.dead),
			fmt.Sprintf("%.0f", r.queue), fmt.Sprintf("%.0f", r.held), fmt.Sprintf("%.0f", r.detached), seconds(r.lagP99)}, "\t"))
	}
	if err := table("PROCESSOR\tOK/S\tRETRY/S\tFAILED/S\tDEAD/S\tQUEUE\tHELD\tDETACHED\tLAG P99", lines); err != nil {
		return err
	}
	if !redraw {
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}
