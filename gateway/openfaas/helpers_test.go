package openfaas

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	dto "github.com/prometheus/client_model/go"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/config"
	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
	"github.com/vmware-samples/vmware-event-router/internal/faastest"
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

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// newEvent builds an event as the stream does: a structured CloudEvent
// about entity, encoded once.
func newEvent(t testing.TB, subject, entity string, key int32) *gateway.Event {
	t.Helper()
	ce := cloudevents.New()
	ce.SetID(fmt.Sprintf("id-%s-%d", entity, key))
	ce.SetSource("https://vcenter.test/sdk")
	ce.SetType(gateway.EventType)
	ce.SetSubject(subject)
	created := time.Date(2026, 1, 2, 3, 4, 5, int(key), time.UTC)
	ce.SetTime(created)
	if err := ce.SetData("application/json", map[string]any{"Key": key, "Vm": map[string]any{"Vm": map[string]string{"Type": "VirtualMachine", "Value": entity}}}); err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(ce)
	if err != nil {
		t.Fatal(err)
	}
	return &gateway.Event{ID: ce.ID(), Source: ce.Source(), Subject: subject, Time: created, Key: key,
		Entity: "VirtualMachine:" + entity, JSON: data}
}
