package openfaas

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/internal/faastest"
	"github.com/vmware-samples/vmware-event-router/internal/gatewaytest"
)

// These tests run the processor under the core's dispatcher against the
// test gateway: the delivery rules of CONFIG.md end to end, without a
// stream.

type dispatchHarness struct {
	*harness
	d    *gateway.Dispatcher
	sink *gatewaytest.Letters
}

func startDispatch(t *testing.T, g *faastest.Gateway, retryLimit int) *dispatchHarness {
	t.Helper()
	cfg := testConfig(g)
	cfg.RetryLimit = retryLimit
	h := start(t, cfg)
	h.waitReady(t)
	s := &gatewaytest.Letters{}
	d := gateway.NewDispatcher(gateway.DispatcherOptions{
		Processor: h.p, ProcessorName: Name, StatsName: cfg.Address,
		Concurrency: cfg.Concurrency, QueueSize: cfg.QueueSize, RetryLimit: cfg.RetryLimit,
		BackoffMin: 10 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
		Sink: s, Log: slog.New(slog.NewTextHandler(h.log, nil)), Metrics: h.m,
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = d.Close(ctx)
	})
	return &dispatchHarness{harness: h, d: d, sink: s}
}

// submit sends n events about vms VMs (round robin), as a stream would:
// per VM in key order.
func (h *dispatchHarness) submit(t *testing.T, subject string, n, vms int) []*gateway.Event {
	t.Helper()
	evs := make([]*gateway.Event, n)
	for i := range n {
		evs[i] = newEvent(t, subject, fmt.Sprintf("vm-%d", i%vms), int32(i+1))
		if err := h.d.Submit(t.Context(), evs[i]); err != nil {
			t.Fatalf("Submit: %v", err)
		}
	}
	return evs
}

func (h *dispatchHarness) deliveries(dest, result string) float64 {
	var m dto.Metric
	if err := h.m.Deliveries.WithLabelValues(Name, dest, result).Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

func (h *dispatchHarness) waitIdle(t *testing.T, within time.Duration) {
	t.Helper()
	eventually(t, within, "every event finished (delivered or dead-lettered)", h.d.Idle)
}

// deliverAll waits for evs to finish and asserts that f received them all,
// in order, with no dead letter.
func (h *dispatchHarness) deliverAll(t *testing.T, f *faastest.Function, evs []*gateway.Event) {
	t.Helper()
	h.waitIdle(t, 30*time.Second)
	checkAll(t, f, evs)
	if n := len(h.sink.All()); n != 0 {
		t.Errorf("%d dead letters, want 0", n)
	}
}

// checkAll asserts that f received every event of evs (at least once) and,
// per VM, in the order submitted.
func checkAll(t *testing.T, f *faastest.Function, evs []*gateway.Event) {
	t.Helper()
	seen := map[string]bool{}
	last := map[string]int32{}
	for _, c := range f.Received() {
		var ce struct {
			ID   string `json:"id"`
			Data struct {
				Key int32 `json:"Key"`
				Vm  struct {
					Vm struct{ Value string }
				}
			} `json:"data"`
		}
		if err := json.Unmarshal(c.Body, &ce); err != nil {
			t.Fatalf("function %s got a body that is not JSON: %v", f.Name, err)
		}
		vm := ce.Data.Vm.Vm.Value
		if ce.Data.Key < last[vm] {
			t.Errorf("function %s got %s key %d after key %d: per-VM order broken", f.Name, vm, ce.Data.Key, last[vm])
		}
		last[vm] = ce.Data.Key
		seen[ce.ID] = true
	}
	lost := 0
	for _, ev := range evs {
		if !seen[ev.ID] {
			lost++
		}
	}
	if lost > 0 {
		t.Errorf("function %s: %d of %d events never delivered", f.Name, lost, len(evs))
	}
}

// TestDispatchOrderAcrossVMs sends bursts about many VMs to a slow
// function: everything arrives, each VM's events in order.
func TestDispatchOrderAcrossVMs(t *testing.T) {
	g := newGateway(t, faastest.Options{})
	f := g.Deploy("fn", "", map[string]string{"topic": "VmPoweredOnEvent"})
	f.SetDelay(5 * time.Millisecond)
	h := startDispatch(t, g, 3)
	h.deliverAll(t, f, h.submit(t, "VmPoweredOnEvent", 400, 16))
}

// TestDispatch503ThenRecovery: a function answering 503 for a while loses
// nothing when the retry budget outlasts the burst.
func TestDispatch503ThenRecovery(t *testing.T) {
	g := newGateway(t, faastest.Options{})
	f := g.Deploy("fn", "", map[string]string{"topic": "VmPoweredOnEvent"})
	f.FailFor(time.Second, http.StatusServiceUnavailable)
	h := startDispatch(t, g, 20)
	h.deliverAll(t, f, h.submit(t, "VmPoweredOnEvent", 100, 8))
	if h.deliveries("fn", "retry") == 0 {
		t.Error("no retry counted: the 503s were not seen")
	}
}

// TestDispatchOneFunctionFailing: a function that always fails (500, or
// 403: a function that always refuses) does not stop another from
// receiving; its events end in the dead-letter sink with the reason once
// retry_limit is spent, and another 4xx is dead-lettered at once.
func TestDispatchOneFunctionFailing(t *testing.T) {
	g := newGateway(t, faastest.Options{})
	good := g.Deploy("good", "", map[string]string{"topic": "VmPoweredOnEvent"})
	bad := g.Deploy("bad", "", map[string]string{"topic": "VmPoweredOnEvent"})
	rejecting := g.Deploy("rejecting", "", map[string]string{"topic": "VmPoweredOnEvent"})
	forbidden := g.Deploy("forbidden", "", map[string]string{"topic": "VmPoweredOnEvent"})
	bad.Fail(http.StatusInternalServerError)
	rejecting.Fail(http.StatusBadRequest)
	forbidden.Fail(http.StatusForbidden)
	h := startDispatch(t, g, 3)
	evs := h.submit(t, "VmPoweredOnEvent", 30, 5)
	h.waitIdle(t, 30*time.Second)
	checkAll(t, good, evs)

	reasons := map[string]map[string]int{}
	for _, dl := range h.sink.All() {
		if dl.Origin != gateway.OriginProcessor || dl.Processor != Name {
			t.Errorf("dead letter origin %q processor %q", dl.Origin, dl.Processor)
		}
		if reasons[dl.Destination] == nil {
			reasons[dl.Destination] = map[string]int{}
		}
		reasons[dl.Destination][dl.Reason]++
		if (dl.Destination == "bad" || dl.Destination == "forbidden") && dl.Attempts != 3 {
			t.Errorf("dead letter for %s after %d attempts, want retry_limit 3", dl.Destination, dl.Attempts)
		}
	}
	for _, fn := range []string{"bad", "forbidden"} {
		if got := reasons[fn]["retry_limit"]; got != len(evs) {
			t.Errorf("%s: %d retry_limit dead letters, want %d (all: %v)", fn, got, len(evs), reasons)
		}
	}
	if n := len(forbidden.Calls()); n != 3*len(evs) {
		t.Errorf("forbidden got %d calls, want %d: a 403 is retried up to retry_limit", n, 3*len(evs))
	}
	if got := reasons["rejecting"]["rejected"]; got != len(evs) {
		t.Errorf("rejecting: %d rejected dead letters, want %d (all: %v)", got, len(evs), reasons)
	}
	if n := len(rejecting.Calls()); n != len(evs) {
		t.Errorf("rejecting got %d calls, want %d: a 4xx must not be retried", n, len(evs))
	}
	if n := len(reasons["good"]); n != 0 {
		t.Errorf("good has dead letters: %v", reasons["good"])
	}
}

// TestDispatchGatewayDown: events submitted while the gateway is down wait,
// with no attempt counted, and all arrive once it is back.
func TestDispatchGatewayDown(t *testing.T) {
	g := newGateway(t, faastest.Options{})
	f := g.Deploy("fn", "", map[string]string{"topic": "VmPoweredOnEvent"})
	h := startDispatch(t, g, 2)
	g.Stop()
	evs := h.submit(t, "VmPoweredOnEvent", 50, 10)
	eventually(t, 5*time.Second, "the dispatcher to see the gateway unreachable", func() bool {
		return h.deliveries("fn", "failed") >= 2
	})
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	h.waitIdle(t, 30*time.Second)
	checkAll(t, f, evs)
	if n := len(h.sink.All()); n != 0 {
		t.Errorf("%d dead letters after a gateway outage, want 0", n)
	}
	if n := h.deliveries("fn", "retry"); n != 0 {
		t.Errorf("%v attempts counted against events while the gateway was down, want 0", n)
	}
}

// TestDispatchInvocationsLocked: the gateway answers 401 to every
// invocation for a while (credentials rotated in front of the functions);
// every event reaches the function once it accepts them again, none is
// dead-lettered.
func TestDispatchInvocationsLocked(t *testing.T) {
	g := newGateway(t, faastest.Options{})
	f := g.Deploy("fn", "", map[string]string{"topic": "VmPoweredOnEvent"})
	h := startDispatch(t, g, 20)
	g.LockInvocations(0)
	evs := h.submit(t, "VmPoweredOnEvent", 60, 6)
	eventually(t, 10*time.Second, "the gateway to refuse 60 invocations", func() bool { return g.Refused() >= 60 })
	g.UnlockInvocations()
	h.waitIdle(t, 30*time.Second)
	checkAll(t, f, evs)
	if n := len(h.sink.All()); n != 0 {
		t.Errorf("%d dead letters after a 401 outage, want 0: %+v", n, h.sink.All()[0])
	}
	if h.deliveries("fn", "retry") == 0 {
		t.Error("no retry counted: the 401s were not seen")
	}
}

// TestDispatchRetryAfter: a function answering 503 with Retry-After: 1 is
// not called again for that event within that second (the dispatcher's own
// backoff here is 10ms..200ms), and the event is delivered afterwards.
func TestDispatchRetryAfter(t *testing.T) {
	g := newGateway(t, faastest.Options{})
	f := g.Deploy("fn", "", map[string]string{"topic": "VmPoweredOnEvent"})
	f.SetRetryAfter("1")
	f.FailFor(300*time.Millisecond, http.StatusServiceUnavailable)
	h := startDispatch(t, g, 20)
	h.deliverAll(t, f, h.submit(t, "VmPoweredOnEvent", 1, 1))
	calls := f.Calls()
	if len(calls) < 2 || calls[0].Status != http.StatusServiceUnavailable {
		t.Fatalf("%d calls: want a 503 and then a retry", len(calls))
	}
	for i := 1; i < len(calls); i++ {
		// The attempt after a 503 starts at least a second after the
		// call that got it began (the wait counts from its answer).
		if gap := calls[i].Time.Sub(calls[i-1].Time); calls[i-1].Status == http.StatusServiceUnavailable && gap < time.Second {
			t.Errorf("call %d came %s after a 503 with Retry-After: 1", i, gap)
		}
	}
	if h.deliveries("fn", "retry") == 0 {
		t.Error("no retry counted: the 503 was not seen")
	}
}
