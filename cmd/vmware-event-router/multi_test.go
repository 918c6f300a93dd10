package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/deadletter"
	"github.com/vmware-samples/vmware-event-router/internal/faastest"
	"github.com/vmware-samples/vmware-event-router/internal/vcsimtest"
)

// exMessages counts, per message, the EventEx events with the subject
// com.example.<prefix> that f answered with success.
func exMessages(t testing.TB, f *faastest.Function, prefix string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, c := range f.Received() {
		if c.Status >= 300 {
			continue
		}
		var ce struct {
			Subject string `json:"subject"`
			Data    struct{ Message string }
		}
		if err := json.Unmarshal(c.Body, &ce); err != nil {
			t.Fatalf("function %s got a body that is not a JSON CloudEvent: %v", f.Name, err)
		}
		if ce.Subject == "com.example."+prefix {
			out[ce.Data.Message]++
		}
	}
	return out
}

// namedStream is sim's stream entry, named name.
func namedStream(sim *vcsimtest.Sim, name string) map[string]any {
	e := sim.Config()
	e["name"] = name
	return e
}

// faasProc is an OpenFaaS processor entry named name for g, calling
// functions synchronously and refreshing them every 200ms, with opts on top.
func faasProc(g *faastest.Gateway, name string, opts map[string]string) map[string]any {
	o := map[string]string{"async": "false", "refresh_interval": "200ms"}
	for k, v := range opts {
		o[k] = v
	}
	return map[string]any{"type": "processor", "provider": "openfaas", "name": name, "address": g.URL(),
		"auth":    map[string]any{"method": "basic_auth", "secret": map[string]string{"username": g.User, "password": g.Password}},
		"options": o}
}

// TestSeveralStreamsAndProcessors: two vCenters, two OpenFaaS gateways.
// Processor a takes only stream vc-1; processor b takes both, narrowed by
// a pattern. Each gets what its streams and pattern say; with vc-1
// stopped, vc-2 keeps flowing and /readyz names the stopped stream.
func TestSeveralStreamsAndProcessors(t *testing.T) {
	t.Parallel() // long and mostly waiting: runs beside the other long daemon tests
	sim1, sim2 := vcsimtest.Start(t), vcsimtest.Start(t)
	ga, gb := ofGateway(t), ofGateway(t)
	topics := map[string]string{"topic": "com.example.s1,com.example.s2,com.example.drop"}
	fa, fb := ga.Deploy("fa", "", topics), gb.Deploy("fb", "", topics)
	d := startCore(t, namedStream(sim1, "vc-1"), namedStream(sim2, "vc-2"),
		faasProc(ga, "a", map[string]string{"streams": "vc-1"}),
		faasProc(gb, "b", map[string]string{"pattern": `{"subject": ["com.example.s1", "com.example.s2"]}`}))
	d.waitReady(t)
	const drops = `eventrouter_filter_verdicts_total{filter="subject_routing",verdict="drop"}`
	dropped := d.metric(t, drops)

	sim1.PostEx("s1", 0, 5)
	sim2.PostEx("s2", 0, 5)
	sim2.PostEx("drop", 0, 3) // a does not take vc-2; b's pattern drops them
	for _, f := range []*faastest.Function{fa, fb} {
		d.eventually(t, 30*time.Second, "5 s1 events at "+f.Name, func() bool { return len(exMessages(t, f, "s1")) == 5 })
	}
	d.eventually(t, 30*time.Second, "5 s2 events at fb", func() bool { return len(exMessages(t, fb, "s2")) == 5 })
	// The router hands vc-2's events on in order: once the drops are
	// counted, every s2 event has been routed.
	d.eventually(t, 30*time.Second, "3 events dropped by the routing", func() bool { return d.metric(t, drops)-dropped >= 3 })
	if n := len(exMessages(t, fa, "s2")); n != 0 {
		t.Errorf("processor a takes only vc-1, but got %d events of vc-2", n)
	}
	for _, f := range []*faastest.Function{fa, fb} {
		if n := len(exMessages(t, f, "drop")); n != 0 {
			t.Errorf("%s got %d events its processor does not take", f.Name, n)
		}
	}

	// vc-1 down: vc-2 keeps flowing to b; /readyz names vc-1 only.
	sim1.Stop()
	d.eventually(t, 30*time.Second, "/readyz 503 naming stream vc-1", func() bool {
		code, body := d.get(t, "/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "stream vc-1: ")
	})
	sim2.PostEx("s2", 5, 5)
	d.eventually(t, 30*time.Second, "10 s2 events at fb with vc-1 down", func() bool { return len(exMessages(t, fb, "s2")) == 10 })
	if code, body := d.get(t, "/readyz"); code != http.StatusServiceUnavailable || strings.Contains(body, "vc-2") || strings.Contains(body, "processor") {
		t.Errorf("/readyz %d with vc-1 down: %q, want 503 naming only stream vc-1", code, body)
	}
	// Metric labels carry the entry names.
	if v := d.metric(t, `eventrouter_stream_connected{stream="vc-1"}`); v != 0 {
		t.Errorf("vc-1 connected = %v with its vCenter down, want 0", v)
	}
	if v := d.metric(t, `eventrouter_stream_connected{stream="vc-2"}`); v != 1 {
		t.Errorf("vc-2 connected = %v, want 1", v)
	}
	if v := d.metric(t, `eventrouter_stream_connected{stream="vmware_vcenter"}`); v != 0 {
		t.Errorf("a stream series under the provider name: %v", v)
	}
	if v := d.metric(t, `eventrouter_processor_deliveries_total{destination="fb",processor="b",result="ok"}`); v != 15 {
		t.Errorf("processor b's ok deliveries = %v, want 15 (5 s1, 10 s2)", v)
	}
	if v := d.metric(t, `eventrouter_processor_deliveries_total{destination="fa",processor="a",result="ok"}`); v != 5 {
		t.Errorf("processor a's ok deliveries = %v, want 5", v)
	}
	for m, n := range exMessages(t, fb, "s2") {
		if n != 1 {
			t.Errorf("fb got %s %d times", m, n)
		}
	}
}

// TestReplaySeveralProcessors: replay sends each processor's dead letter
// back to that processor only.
func TestReplaySeveralProcessors(t *testing.T) {
	dir := t.TempDir()
	sink, err := deadletter.NewSink(dir, 1<<20, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	letter := func(id, proc, dest string) gateway.DeadLetter {
		ce := `{"specversion":"1.0","id":"` + id + `","source":"https://vc/sdk","type":"com.vmware.event.router/event","subject":"VmPoweredOnEvent","datacontenttype":"application/json","data":{"Key":1}}`
		return gateway.DeadLetter{Event: &gateway.Event{ID: id, Key: 1, Time: at, Subject: "VmPoweredOnEvent", JSON: []byte(ce)},
			Origin: gateway.OriginProcessor, Processor: proc, Destination: dest, Reason: "rejected", Error: "400", Attempts: 1}
	}
	for _, dl := range []gateway.DeadLetter{letter("for-out", "out", "stdout"), letter("for-faas", "faas", "fn")} {
		if err := sink.Write(context.Background(), dl); err != nil {
			t.Fatal(err)
		}
	}
	_ = sink.Close()
	g := ofGateway(t)
	fn := g.Deploy("fn", "", map[string]string{"topic": "VmPoweredOnEvent"})
	config := writeConfig(t, map[string]any{"type": "stream", "provider": "vcsim"},
		map[string]any{"type": "processor", "provider": "stdout", "name": "out"},
		map[string]any{"type": "processor", "provider": "openfaas", "name": "faas", "address": g.URL(),
			"auth":    map[string]any{"method": "basic_auth", "secret": map[string]string{"username": g.User, "password": g.Password}},
			"options": map[string]string{"async": "false"}},
		metricsEntry(freeAddr(t)))
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if code := run(ctx, []string{"replay", "-config", config, filepath.Join(dir, deadletter.FileName)}, &stdout, &stderr); code != 0 {
		t.Fatalf("replay exited %d:\n%s", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), "replayed 2 dead letters: 2 delivered") {
		t.Errorf("replay output: %s", stderr.String())
	}
	if out := stdout.String(); !strings.Contains(out, `"id":"for-out"`) || strings.Contains(out, "for-faas") {
		t.Errorf("stdout got %q, want for-out only", out)
	}
	calls := fn.Received()
	if len(calls) != 1 || !strings.Contains(string(calls[0].Body), `"id":"for-faas"`) {
		t.Errorf("function got %d calls, want for-faas only", len(calls))
	}
}
