package eventbridge

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/internal/gatewaytest"
)

// TestWithDispatcher runs the processor under the router's real dispatcher
// against moto, with the hook rejecting entries: throttled entries are
// retried until delivered, an entry rejected more than retry_limit times and
// an oversized event are dead-lettered, every other event reaches the rule's
// target exactly once and each VM's events arrive in order; no call holds
// more than 10 entries or two events about one VM.
func TestWithDispatcher(t *testing.T) {
	t.Parallel()
	mb := newMotoBus(t, "vsphere", powerPattern)
	h := &hook{}
	f := started(t, testConfig(mb.srv.URL, mb.bus, mb.ruleARN), func(next API) API { h.next = next; return h })
	sink := &gatewaytest.Letters{}
	disp := gateway.NewDispatcher(gateway.DispatcherOptions{
		Processor: f.p, ProcessorName: "aws_event_bridge", StatsName: mb.ruleARN,
		RetryLimit: 20, BackoffMin: 2 * time.Millisecond, BackoffMax: 20 * time.Millisecond,
		Sink: sink, Log: slog.New(slog.NewJSONHandler(f.logs, nil)), Metrics: f.m,
	})

	const vms, perVM = 8, 6
	var evs []*gateway.Event
	for i := range vms * perVM {
		subject := "VmPoweredOnEvent"
		if i%2 == 1 {
			subject = "VmPoweredOffEvent"
		}
		evs = append(evs, vmEvent{subject: subject, vm: fmt.Sprintf("vm%d", i%vms), key: int32(100 + i)}.event(t))
	}
	throttled := 0
	for i := 0; i < len(evs); i += 5 {
		n := 1 + i%3
		for range n {
			h.rejectTimes(evs[i].ID, "ThrottlingException")
		}
		throttled += n
	}
	hopeless := evs[7]
	for range 20 {
		h.rejectTimes(hopeless.ID, "InternalFailure")
	}
	big := vmEvent{subject: "VmPoweredOnEvent", vm: "vm3", key: 1000, pad: MaxEntryBytes}.event(t)
	evs = append(evs, big)

	for _, ev := range evs {
		if err := disp.Submit(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := disp.Close(ctx); err != nil {
		t.Fatalf("dispatcher did not finish: %v", err)
	}

	dead := map[string]string{}
	for _, dl := range sink.All() {
		dead[dl.Event.ID] = dl.Reason
	}
	if len(dead) != 2 || dead[hopeless.ID] != "retry_limit" || dead[big.ID] != "rejected" {
		t.Errorf("dead letters %v, want the hopeless one (retry_limit) and the oversized one (rejected)", dead)
	}
	got := mb.rule.Drain(t)
	seen := map[string]int{}
	lastKey := map[string]int{}
	for _, e := range got {
		var ce struct {
			ID   string `json:"id"`
			Data struct {
				Key int
				Vm  struct{ Name string }
			} `json:"data"`
		}
		if err := json.Unmarshal(e.Detail, &ce); err != nil {
			t.Fatal(err)
		}
		seen[ce.ID]++
		if k, ok := lastKey[ce.Data.Vm.Name]; ok && ce.Data.Key < k {
			t.Errorf("%s: key %d arrived after key %d", ce.Data.Vm.Name, ce.Data.Key, k)
		}
		lastKey[ce.Data.Vm.Name] = ce.Data.Key
	}
	for _, ev := range evs {
		want := 1
		if _, ok := dead[ev.ID]; ok {
			want = 0
		}
		if seen[ev.ID] != want {
			t.Errorf("event %d (%s) put %d times, want %d", ev.Key, ev.Subject, seen[ev.ID], want)
		}
	}
	h.mu.Lock()
	for i, names := range h.vms {
		dup := map[string]bool{}
		for _, n := range names {
			if dup[n] {
				t.Errorf("call %d has two events about %s: %v", i, n, names)
			}
			dup[n] = true
		}
		if len(names) > MaxEntries {
			t.Errorf("call %d has %d entries", i, len(names))
		}
	}
	calls := len(h.calls)
	h.mu.Unlock()
	if n := testutil.ToFloat64(f.m.EBFailedEntries.WithLabelValues("aws_event_bridge", "ThrottlingException")); n != float64(throttled) {
		t.Errorf("throttled entries counted %v, want %d", n, throttled)
	}
	if n := testutil.ToFloat64(f.m.EBFailedEntries.WithLabelValues("aws_event_bridge", "InternalFailure")); n != 20 {
		t.Errorf("internal failures counted %v, want 20", n)
	}
	t.Logf("%d events, %d PutEvents calls", len(evs), calls)
}
