package main

import (
	"context"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vmware-samples/vmware-event-router/internal/testutil"
)

// topShowsRates reports whether one block of top's output has a nonzero
// events/s for stream and a nonzero ok/s for processor.
func topShowsRates(out, stream, processor string) bool {
	for _, block := range strings.Split(out, "vmware-event-router top ") {
		positive := func(name string) bool {
			for line := range strings.Lines(block) {
				f := strings.Fields(line)
				if len(f) > 1 && f[0] == name {
					v, err := strconv.ParseFloat(f[1], 64)
					return err == nil && v > 0
				}
			}
			return false
		}
		if positive(stream) && positive(processor) {
			return true
		}
	}
	return false
}

// runTop runs the top verb until the test cancels it; the returned
// channel receives its exit code.
func runTop(args []string, stdout, stderr *syncBuffer) (context.CancelFunc, <-chan int) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() { done <- run(ctx, append([]string{"top"}, args...), stdout, stderr) }()
	return cancel, done
}

func exitCode(t *testing.T, done <-chan int) int {
	t.Helper()
	select {
	case code := <-done:
		return code
	case <-time.After(10 * time.Second):
		t.Fatal("top did not return within 10 s of its interruption")
		return -1
	}
}

// TestTopAgainstDaemon: top reads a running router's /metrics (a vcsim
// stream generating 20 events/s to the stdout processor) and prints the
// stream and the processor with nonzero rates, as plain appended blocks
// since its output is not a terminal, until interrupted.
func TestTopAgainstDaemon(t *testing.T) {
	d := startCore(t, map[string]any{"type": "stream", "provider": "vcsim", "options": map[string]string{"rate": "20"}}, stdoutEntry)
	d.waitReady(t)
	var out, errs syncBuffer
	cancel, done := runTop([]string{"-metrics", d.metrics, "-interval", "200ms"}, &out, &errs)
	defer cancel()
	d.eventually(t, 30*time.Second, "a top block with nonzero rates for stream vcsim and processor stdout", func() bool {
		return topShowsRates(out.String(), "vcsim", "stdout")
	})
	cancel()
	if code := exitCode(t, done); code != 0 {
		t.Fatalf("top exited %d: %s", code, errs.String())
	}
	got := out.String()
	for _, want := range []string{"STREAM", "EVENTS/S", "CONNECTED", "WATERMARK LAG", "PENDING", "PROCESSOR", "OK/S", "RETRY/S", "DEAD/S", "QUEUE", "HELD", "DETACHED", "LAG P99", d.metrics + "/metrics"} {
		if !strings.Contains(got, want) {
			t.Errorf("top's output lacks %q:\n%s", want, tail(got, 2000))
		}
	}
	if strings.Contains(got, "\x1b[") {
		t.Errorf("top wrote ANSI escapes to a non-terminal:\n%q", tail(got, 500))
	}
}

// TestTopBasicAuth: the password comes from the environment, works, and
// never appears in top's output or errors.
func TestTopBasicAuth(t *testing.T) {
	const password = "top-secret-pw-4411"
	metrics := map[string]any{"type": "metrics", "provider": "internal", "address": "127.0.0.1:0",
		"auth": map[string]any{"method": "basic_auth", "secret": map[string]string{"username": "ops", "password": password}}}
	d := startDaemon(t, writeConfig(t, map[string]any{"type": "stream", "provider": "vcsim"}, stdoutEntry, metrics))
	d.waitReady(t)

	t.Setenv(topPasswordEnv, "wrong-pw-9923")
	var out, errs syncBuffer
	_, done := runTop([]string{"-metrics", d.metrics, "-user", "ops"}, &out, &errs)
	if code := exitCode(t, done); code != 1 || !strings.Contains(errs.String(), "401") || strings.Contains(errs.String()+out.String(), "wrong-pw-9923") {
		t.Errorf("top with a wrong password: exit %d, stderr %q; want 1 and a 401 without the password", code, errs.String())
	}

	t.Setenv(topPasswordEnv, password)
	var out2, errs2 syncBuffer
	cancel, done := runTop([]string{"-metrics", d.metrics, "-user", "ops", "-interval", "100ms"}, &out2, &errs2)
	defer cancel()
	d.eventually(t, 30*time.Second, "a second top block", func() bool { return strings.Count(out2.String(), "PROCESSOR") >= 2 })
	cancel()
	if code := exitCode(t, done); code != 0 || strings.Contains(out2.String()+errs2.String(), password) {
		t.Errorf("top with the password: exit %d (want 0), output with the password: %v", code, strings.Contains(out2.String()+errs2.String(), password))
	}
}

// TestTopTLS: top verifies the metrics server's certificate: refused
// against the system's roots, accepted with -ca-file.
func TestTopTLS(t *testing.T) {
	certFile, keyFile := testutil.WriteSelfSigned(t, t.TempDir())
	metrics := map[string]any{"type": "metrics", "provider": "internal", "address": "127.0.0.1:0", "auth": map[string]any{"method": "none"},
		"options": map[string]string{"tls_cert_file": certFile, "tls_key_file": keyFile}}
	d := startDaemon(t, writeConfig(t, map[string]any{"type": "stream", "provider": "vcsim"}, stdoutEntry, metrics))
	// The start-up log names the address with its scheme.
	target := d.metrics
	if !strings.HasPrefix(target, "https://") {
		t.Fatalf("start-up log names the TLS metrics server %q, want https://", target)
	}

	var out, errs syncBuffer
	_, done := runTop([]string{"-metrics", target}, &out, &errs)
	if code := exitCode(t, done); code != 1 || !strings.Contains(errs.String(), "certificate") {
		t.Errorf("top against an unknown CA: exit %d, stderr %q; want 1 and a certificate error", code, errs.String())
	}
	var out2, errs2 syncBuffer
	cancel, done := runTop([]string{"-metrics", target, "-ca-file", certFile, "-interval", "100ms"}, &out2, &errs2)
	defer cancel()
	d.eventually(t, 30*time.Second, "a top block over https", func() bool { return strings.Contains(out2.String(), "PROCESSOR") })
	cancel()
	if code := exitCode(t, done); code != 0 {
		t.Errorf("top with -ca-file: exit %d: %s", code, errs2.String())
	}
}

func TestTopFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  string
		code int
		err  string
	}{
		{"no address", nil, "", 1, "-metrics: required"},
		{"credentials in the URL", []string{"-metrics", "http://ops:hunter2@127.0.0.1:1"}, "", 1, "-metrics: give credentials with -user and VMWARE_EVENT_ROUTER_METRICS_PASSWORD, not in the URL"},
		{"not http", []string{"-metrics", "ftp://x"}, "", 1, "-metrics: must be an http:// or https:// URL"},
		{"user without password", []string{"-metrics", "http://127.0.0.1:1", "-user", "ops"}, "", 1, "-user: set the password in VMWARE_EVENT_ROUTER_METRICS_PASSWORD"},
		{"short interval", []string{"-metrics", "http://127.0.0.1:1", "-interval", "10ms"}, "", 1, "-interval: must be at least 100ms"},
		{"unreachable", []string{"-metrics", "http://" + freeAddr(t)}, "", 1, "connection refused"},
		{"stray argument", []string{"-metrics", "http://127.0.0.1:1", "extra"}, "", 2, `unexpected argument "extra"`},
		{"missing CA file", []string{"-metrics", "https://127.0.0.1:1", "-ca-file", "/nonexistent/ca.pem"}, "", 1, "-ca-file: open /nonexistent/ca.pem"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(topPasswordEnv, tc.env)
			var out, errs syncBuffer
			code := run(t.Context(), append([]string{"top"}, tc.args...), &out, &errs)
			if code != tc.code || !strings.Contains(errs.String(), tc.err) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, errs.String(), tc.code, tc.err)
			}
			if strings.Contains(errs.String(), "hunter2") {
				t.Errorf("the URL's password is in the error: %q", errs.String())
			}
		})
	}
}

// topScrape1 and topScrape2 are two scrapes 2 s apart.
const topScrape1 = `# TYPE eventrouter_stream_events_total counter
eventrouter_stream_events_total{stream="vc-a"} 100
eventrouter_stream_events_total{stream="vc-b"} 50
# TYPE eventrouter_stream_connected gauge
eventrouter_stream_connected{stream="vc-a"} 1
eventrouter_stream_connected{stream="vc-b"} 0
# TYPE eventrouter_watermark_lag_seconds gauge
eventrouter_watermark_lag_seconds{stream="vc-a"} 0.25
# TYPE eventrouter_watermark_pending_events gauge
eventrouter_watermark_pending_events{stream="vc-a"} 7
# TYPE eventrouter_processor_deliveries_total counter
eventrouter_processor_deliveries_total{destination="f1",processor="fn",result="ok"} 10
eventrouter_processor_deliveries_total{destination="f2",processor="fn",result="ok"} 20
eventrouter_processor_deliveries_total{destination="f1",processor="fn",result="retry"} 1
# TYPE eventrouter_queue_depth gauge
eventrouter_queue_depth{destination="f1",processor="fn"} 3
eventrouter_queue_depth{destination="f2",processor="fn"} 4
# TYPE eventrouter_destination_held gauge
eventrouter_destination_held{destination="f2",processor="fn"} 1
# TYPE eventrouter_processor_detached gauge
eventrouter_processor_detached{processor="fn",stream="vc-a"} 1
eventrouter_processor_detached{processor="fn",stream="vc-b"} 0
# TYPE eventrouter_delivery_lag_seconds histogram
eventrouter_delivery_lag_seconds_bucket{processor="fn",le="0.01"} 0
eventrouter_delivery_lag_seconds_bucket{processor="fn",le="0.1"} 30
eventrouter_delivery_lag_seconds_bucket{processor="fn",le="1"} 30
eventrouter_delivery_lag_seconds_bucket{processor="fn",le="+Inf"} 30
eventrouter_delivery_lag_seconds_sum{processor="fn"} 1.5
eventrouter_delivery_lag_seconds_count{processor="fn"} 30
`

// In the second, vc-b's counter was reset (10 < 50: counted from 0), vc-c
// is new, fn delivered 40 more ok (over two destinations), 4 retries and
// 2 dead letters, and 100 lags all in (0.1 s, 1 s].
const topScrape2 = `# TYPE eventrouter_stream_events_total counter
eventrouter_stream_events_total{stream="vc-a"} 150
eventrouter_stream_events_total{stream="vc-b"} 10
eventrouter_stream_events_total{stream="vc-c"} 4
# TYPE eventrouter_processor_deliveries_total counter
eventrouter_processor_deliveries_total{destination="f1",processor="fn",result="ok"} 30
eventrouter_processor_deliveries_total{destination="f2",processor="fn",result="ok"} 40
eventrouter_processor_deliveries_total{destination="f1",processor="fn",result="retry"} 5
eventrouter_processor_deliveries_total{destination="f1",processor="fn",result="dead_letter"} 2
# TYPE eventrouter_delivery_lag_seconds histogram
eventrouter_delivery_lag_seconds_bucket{processor="fn",le="0.01"} 0
eventrouter_delivery_lag_seconds_bucket{processor="fn",le="0.1"} 30
eventrouter_delivery_lag_seconds_bucket{processor="fn",le="1"} 130
eventrouter_delivery_lag_seconds_bucket{processor="fn",le="+Inf"} 130
eventrouter_delivery_lag_seconds_sum{processor="fn"} 60
eventrouter_delivery_lag_seconds_count{processor="fn"} 130
`

func TestTopRates(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	s1, err := parseSample(strings.NewReader(topScrape1), t0)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := parseSample(strings.NewReader(topScrape2), t0.Add(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}

	ss, ps := rows(nil, s1)
	if len(ss) != 2 || !math.IsNaN(ss[0].rate) || !math.IsNaN(ps[0].ok) || !math.IsNaN(ps[0].lagP99) {
		t.Errorf("first scrape: %+v %+v, want rates NaN (no interval yet)", ss, ps)
	}
	if a := ss[0]; a.name != "vc-a" || a.connected != "yes" || a.lag != "250ms" || a.pending != "7" ||
		ss[1].connected != "no" || ss[1].lag != "-" {
		t.Errorf("first scrape gauges: %+v", ss)
	}
	if ps[0].queue != 7 || ps[0].held != 1 || ps[0].detached != 1 {
		t.Errorf("queue %v held %v detached %v, want the sums 7, 1 and 1", ps[0].queue, ps[0].held, ps[0].detached)
	}

	ss, ps = rows(s1, s2)
	rates := map[string]float64{}
	for _, r := range ss {
		rates[r.name] = r.rate
	}
	if want := map[string]float64{"vc-a": 25, "vc-b": 5, "vc-c": 2}; len(rates) != 3 || rates["vc-a"] != want["vc-a"] || rates["vc-b"] != want["vc-b"] || rates["vc-c"] != want["vc-c"] {
		t.Errorf("stream rates %v, want %v", rates, want)
	}
	p := ps[0]
	if p.name != "fn" || p.ok != 20 || p.retry != 2 || p.dead != 1 || p.failed != 0 {
		t.Errorf("processor rates %+v, want ok 20, retry 2, dead 1, failed 0 per second", p)
	}
	// 99th of the 100 lags in (0.1, 1]: 0.1 + 0.9 × 99/100.
	if math.Abs(p.lagP99-0.991) > 1e-9 {
		t.Errorf("lag p99 %v, want 0.991", p.lagP99)
	}
	if p.queue != 0 || p.held != 0 {
		t.Errorf("gauges absent in the second scrape: queue %v held %v, want 0", p.queue, p.held)
	}
	// Nothing delivered between two equal scrapes: no p99.
	s3 := *s2
	s3.at = s2.at.Add(time.Second)
	if _, ps := rows(s2, &s3); !math.IsNaN(ps[0].lagP99) || ps[0].ok != 0 {
		t.Errorf("no deliveries: %+v, want lag NaN and ok 0", ps[0])
	}
}

func TestTopLayout(t *testing.T) {
	s, err := parseSample(strings.NewReader(topScrape1), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var plain, term strings.Builder
	if err := writeTop(&plain, "http://x/metrics", time.Second, false, nil, s); err != nil {
		t.Fatal(err)
	}
	if err := writeTop(&term, "http://x/metrics", time.Second, true, nil, s); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(plain.String(), "\x1b") || !strings.HasSuffix(plain.String(), "\n\n") {
		t.Errorf("plain block: %q, want no escapes and a blank line after", plain.String())
	}
	if !strings.HasPrefix(term.String(), "\x1b[H\x1b[2J") {
		t.Errorf("terminal block: %q, want it to start by clearing the screen", term.String())
	}
	// Every line of a table has its columns at the same offsets: the
	// header's last column ends where each row's does.
	lines := strings.Split(plain.String(), "\n")
	if len(lines[2]) != len(lines[3]) || len(lines[2]) != len(lines[4]) {
		t.Errorf("stream table not aligned:\n%s", plain.String())
	}
}
