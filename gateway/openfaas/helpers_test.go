package openfaas

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/vmware-samples/vmware-event-router/gateway/config"
	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
	"github.com/vmware-samples/vmware-event-router/internal/faastest"
	"github.com/vmware-samples/vmware-event-router/internal/gatewaytest"
	"github.com/vmware-samples/vmware-event-router/internal/testutil"
)

// newGateway starts a test gateway that the test closes.
func newGateway(t testing.TB, opts faastest.Options) *faastest.Gateway {
	t.Helper()
	g, err := faastest.New(opts)
	if err != nil {
		t.Fatalf("test gateway: %v", err)
	}
	t.Cleanup(g.Close)
	return g
}

// testConfig is the processor's config for g, with short intervals.
func testConfig(g *faastest.Gateway) config.OpenFaaS {
	return config.OpenFaaS{
		Address:         g.URL(),
		Username:        g.User,
		Password:        config.Secret(g.Password),
		RefreshInterval: 100 * time.Millisecond,
		Concurrency:     8,
		Timeout:         5 * time.Second,
		RetryLimit:      3,
		QueueSize:       1000,
	}
}

type harness struct {
	p   *Processor
	m   *metrics.Metrics
	log *logBuffer
}

// start builds and starts a processor for cfg; the test closes it.
func start(t testing.TB, cfg config.OpenFaaS) *harness {
	t.Helper()
	h := newHarness(t, cfg)
	if err := h.p.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return h
}

func newHarness(t testing.TB, cfg config.OpenFaaS) *harness {
	t.Helper()
	lb := &logBuffer{}
	m := metrics.New()
	p, err := New(cfg, slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), m)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return &harness{p: p, m: m, log: lb}
}

// waitReady waits for the first function listing.
func (h *harness) waitReady(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := h.p.Subscription(ctx); err != nil {
		t.Fatalf("no routing within 10s: %v (ready: %v)", err, h.p.Ready())
	}
}

func (h *harness) refreshes(result string) float64 {
	var m dto.Metric
	c := h.p.refreshes[0]
	if result != "ok" {
		c = h.p.refreshes[1]
	}
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// logBuffer collects log lines from several goroutines.
type logBuffer struct{ testutil.SyncBuffer }

// count returns how many log lines contain s.
func (l *logBuffer) count(s string) int {
	n := 0
	for line := range strings.SplitSeq(l.String(), "\n") {
		if strings.Contains(line, s) {
			n++
		}
	}
	return n
}

// eventually and newEvent are the shared helpers, under the names these tests use.
var (
	eventually = testutil.Eventually
	newEvent   = gatewaytest.VMEvent
)
