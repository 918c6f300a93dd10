package main

// Daemon-level tests of the EventBridge processor: the whole router (run())
// between an in-process vCenter simulator and moto_server, the AWS
// emulator, with a rule whose SQS target shows what the rule matched and a
// catch-all rule on the same bus that shows everything put. Helpers here
// are prefixed "eb" to stay clear of other topics' test files.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmware/govmomi/vim25/types"

	"github.com/vmware-samples/vmware-event-router/internal/mototest"
	"github.com/vmware-samples/vmware-event-router/internal/vcsimtest"
)

// ebSpecEntry is the spec's EventBridge example entry, verbatim but for the
// rule ARN (%s).
const ebSpecEntry = `{
  "type": "processor",
  "provider": "aws_event_bridge",
  "auth": {
    "method": "access_key",
    "secret": {
      "aws_access_key_id": "ABCDEFGHIJK",
      "aws_secret_access_key": "ZYXWVUTSRQPO"
    }
  },
  "options": {
    "aws_region": "eu-central-1",
    "aws_eventbridge_event_bus": "default",
    "aws_eventbridge_rule_arn": "%s"
  }
}`

const ebCatchAll = `{"source":[{"prefix":""}]}`

// ebAWS is moto with the rule under test and a catch-all rule, each with an
// SQS target, on one bus.
type ebAWS struct {
	srv      *mototest.Server
	bus      string
	arn      string
	rule     *mototest.Queue
	catchAll *mototest.Queue
}

func ebStartAWS(t testing.TB, region, bus, pattern string) *ebAWS {
	t.Helper()
	srv := mototest.Start(t).InRegion(region)
	srv.CreateBus(t, bus)
	a := &ebAWS{srv: srv, bus: bus}
	a.arn = srv.PutRule(t, bus, "vmware-event-router", pattern)
	a.rule = srv.Target(t, bus, "vmware-event-router")
	srv.PutRule(t, bus, "catch-all", ebCatchAll)
	a.catchAll = srv.Target(t, bus, "catch-all")
	return a
}

// ebConfig assembles [stream, processor, metrics] with the simulator's
// stream entry.
func ebConfig(t testing.TB, sim *vcsimtest.Sim, processor string) string {
	t.Helper()
	stream, err := json.Marshal(sim.Config())
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf(`[%s, %s, {"type": "metrics", "provider": "internal", "address": "127.0.0.1:0", "auth": {"method": "none"}}]`,
		stream, processor)
}

// ebRun starts run() with config and waits for /readyz.
func ebRun(t testing.TB, config string) *coreDaemon {
	t.Helper()
	d := startDaemon(t, writeConfigText(t, config))
	d.waitReady(t)
	return d
}

const (
	ebDelivered = `eventrouter_processor_deliveries_total{destination="%s",processor="aws_event_bridge",result="ok"}`
	ebDepth     = `eventrouter_queue_depth{destination="%s",processor="aws_event_bridge"}`
)

// ebSettle waits until n events have been delivered to bus and nothing is
// left in its queue, so that whatever else the router would have put is
// on the bus by then.
func ebSettle(t testing.TB, d *coreDaemon, bus string, n int) {
	t.Helper()
	d.eventually(t, 60*time.Second, fmt.Sprintf("%d deliveries and an empty queue", n), func() bool {
		return d.metric(t, fmt.Sprintf(ebDelivered, bus)) >= float64(n) && d.metric(t, fmt.Sprintf(ebDepth, bus)) == 0
	})
}

// ebVMEvent is a power event about a VM of the simulator's inventory; the
// name is what the event says, the reference orders its deliveries.
func ebVMEvent(subject, name string) types.BaseEvent {
	ev := types.Event{
		Vm: &types.VmEventArgument{
			EntityEventArgument: types.EntityEventArgument{Name: name},
			Vm:                  types.ManagedObjectReference{Type: "VirtualMachine", Value: "vm-" + name},
		},
		Datacenter: &types.DatacenterEventArgument{
			EntityEventArgument: types.EntityEventArgument{Name: "DC0"},
			Datacenter:          types.ManagedObjectReference{Type: "Datacenter", Value: "datacenter-2"},
		},
		Host: &types.HostEventArgument{
			EntityEventArgument: types.EntityEventArgument{Name: "DC0_H0"},
			Host:                types.ManagedObjectReference{Type: "HostSystem", Value: "host-21"},
		},
	}
	switch subject {
	case "VmPoweredOnEvent":
		return &types.VmPoweredOnEvent{VmEvent: types.VmEvent{Event: ev}}
	case "VmPoweredOffEvent":
		return &types.VmPoweredOffEvent{VmEvent: types.VmEvent{Event: ev}}
	case "VmSuspendedEvent":
		return &types.VmSuspendedEvent{VmEvent: types.VmEvent{Event: ev}}
	}
	panic("ebVMEvent: unknown subject " + subject)
}

type ebWant struct{ subject, vm string }

func ebGot(t testing.TB, evs []mototest.Event) map[ebWant]int {
	t.Helper()
	out := map[ebWant]int{}
	for _, e := range evs {
		var ce struct {
			Subject string `json:"subject"`
			Data    struct {
				Vm *struct{ Name string } `json:"Vm"`
			} `json:"data"`
		}
		if err := json.Unmarshal(e.Detail, &ce); err != nil {
			t.Fatalf("detail is not a CloudEvent: %v: %s", err, e.Detail)
		}
		if e.DetailType != ce.Subject {
			t.Errorf("detail-type %q, CloudEvent subject %q", e.DetailType, ce.Subject)
		}
		vm := ""
		if ce.Data.Vm != nil {
			vm = ce.Data.Vm.Name
		}
		out[ebWant{ce.Subject, vm}]++
	}
	return out
}

// TestEventBridgeSpecExample runs the spec's EventBridge entry (only the
// rule ARN changed; AWS_ENDPOINT_URL points the SDK at moto) against a rule
// whose pattern uses every operator quamina evaluates, and checks that
// exactly the events the rule matches are put on the bus.
func TestEventBridgeSpecExample(t *testing.T) {
	const pattern = `{
	  "source": [{"wildcard": "https://127.0.0.1:*/sdk"}],
	  "detail-type": [{"equals-ignore-case": "vmpoweredonevent"}, {"equals-ignore-case": "VMPOWEREDOFFEVENT"}],
	  "detail": {
	    "subject": ["VmPoweredOnEvent", "VmPoweredOffEvent", "DrsVmPoweredOnEvent"],
	    "data": {
	      "Vm": {"Name": [{"prefix": "web-"}]},
	      "Host": {"Name": [{"exists": true}]},
	      "Datacenter": {"Name": [{"anything-but": ["DC9"]}]}
	    }
	  }
	}`
	aws := ebStartAWS(t, "eu-central-1", "default", pattern)
	if want := "arn:aws:events:eu-central-1:123456789012:rule/vmware-event-router"; aws.arn != want {
		t.Fatalf("rule ARN %s, want %s", aws.arn, want)
	}
	t.Setenv("AWS_ENDPOINT_URL", aws.srv.URL)
	sim := vcsimtest.Start(t)
	d := ebRun(t, ebConfig(t, sim, fmt.Sprintf(ebSpecEntry, aws.arn)))

	posts := []struct {
		subject, vm string
		match       bool
	}{
		{"VmPoweredOnEvent", "web-01", true},
		{"VmPoweredOnEvent", "db-01", false},
		{"VmSuspendedEvent", "web-01", false},
		{"VmPoweredOffEvent", "web-01", true},
		{"VmPoweredOnEvent", "web-02", true},
		{"VmPoweredOffEvent", "db-01", false},
		{"VmPoweredOffEvent", "web-02", true},
		{"VmSuspendedEvent", "web-02", false},
	}
	want := map[ebWant]int{}
	for _, p := range posts {
		sim.Post(ebVMEvent(p.subject, p.vm))
		if p.match {
			want[ebWant{p.subject, p.vm}]++
		}
	}
	// Events about no VM, and about the simulator's own activity, pass by
	// too; the rule matches none of them.
	sim.Post(&types.UserLoginSessionEvent{SessionEvent: types.SessionEvent{Event: types.Event{}}, IpAddress: "127.0.0.1"})
	sim.PostEx("other", 0, 3)
	// A last matching event: once it and everything queued is delivered,
	// every event posted before it has been filtered and, if it passed,
	// put.
	sim.Post(ebVMEvent("VmPoweredOnEvent", "web-99"))
	want[ebWant{"VmPoweredOnEvent", "web-99"}]++
	ebSettle(t, d, "default", 5)

	ruleGot := aws.rule.Drain(t)
	if got := ebGot(t, ruleGot); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("the rule's target got %v, want %v", got, want)
	}
	if got := ebGot(t, aws.catchAll.Drain(t)); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("put on the bus: %v, want only what the rule matches: %v", got, want)
	}
	for _, e := range ruleGot {
		// moto's default target input template leaves "account" out.
		if !strings.HasPrefix(e.Source, "https://127.0.0.1:") || e.Region != "eu-central-1" {
			t.Errorf("envelope source %q region %q", e.Source, e.Region)
		}
	}
	if n := d.metric(t, `eventrouter_eventbridge_rule_syncs_total{processor="aws_event_bridge",result="ok"}`); n < 1 {
		t.Errorf("rule syncs ok = %v", n)
	}
	_, stats := d.get(t, "/stats")
	var s struct {
		Stats map[string]struct {
			Name        string           `json:"name"`
			Invocations map[string]int64 `json:"invocations"`
		} `json:"vmware.event.router.stats"`
	}
	if err := json.Unmarshal([]byte(stats), &s); err != nil {
		t.Fatalf("/stats: %v", err)
	}
	eb := s.Stats["aws_event_bridge"]
	if eb.Name != aws.arn || eb.Invocations["VmPoweredOnEvent"] != 3 || eb.Invocations["VmPoweredOffEvent"] != 2 {
		t.Errorf("/stats aws_event_bridge = %+v", eb)
	}
	if strings.Contains(d.stderr.String(), "ZYXWVUTSRQPO") {
		t.Error("the secret access key appears in the log")
	}
}

// TestEventBridgeBatchesAndResync: bursts of 13, 23 and 11 events go out in
// calls of at most 10 entries (moto refuses more, so an over-full call
// would fail them) and all arrive; a rule changed in EventBridge is picked
// up at the next resync. The endpoint is given by options.endpoint here.
func TestEventBridgeBatchesAndResync(t *testing.T) {
	aws := ebStartAWS(t, mototest.Region, "vsphere", `{"detail":{"subject":["VmPoweredOnEvent"]}}`)
	sim := vcsimtest.Start(t)
	entry := fmt.Sprintf(`{"type": "processor", "provider": "aws_event_bridge",
	  "auth": {"method": "access_key", "secret": {"aws_access_key_id": "AKID", "aws_secret_access_key": "secret"}},
	  "options": {"aws_region": %q, "aws_eventbridge_event_bus": "vsphere", "aws_eventbridge_rule_arn": %q,
	    "endpoint": %q, "resync_interval": "100ms", "batch_linger": "50ms"}}`, mototest.Region, aws.arn, aws.srv.URL)
	d := ebRun(t, ebConfig(t, sim, entry))

	total := 0
	for _, n := range []int{13, 23, 11} {
		want := map[ebWant]int{}
		for i := range n {
			vm := fmt.Sprintf("vm-%d-%02d", n, i)
			sim.Post(ebVMEvent("VmPoweredOnEvent", vm))
			want[ebWant{"VmPoweredOnEvent", vm}]++
		}
		total += n
		ebSettle(t, d, "vsphere", total)
		if got := ebGot(t, aws.catchAll.Drain(t)); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("burst of %d: put %v, want each event once", n, got)
		}
		aws.rule.Drain(t)
	}
	calls := d.metric(t, `eventrouter_eventbridge_batch_entries_count{processor="aws_event_bridge"}`)
	within10 := d.metric(t, `eventrouter_eventbridge_batch_entries_bucket{processor="aws_event_bridge",le="10"}`)
	entries := d.metric(t, `eventrouter_eventbridge_batch_entries_sum{processor="aws_event_bridge"}`)
	if calls == 0 || within10 != calls || entries != float64(total) {
		t.Errorf("%v PutEvents calls, %v of them with at most 10 entries, %v entries in all; want all within 10 and %d entries",
			calls, within10, entries, total)
	}
	if failed := d.metric(t, `eventrouter_eventbridge_failed_entries_total{code="other",processor="aws_event_bridge"}`); failed != 0 {
		t.Errorf("%v entries failed", failed)
	}
	t.Logf("%d events in %v PutEvents calls (%.1f entries per call)", total, calls, entries/calls)

	// Change the rule; once two resyncs have passed, the new pattern rules.
	aws.srv.PutRule(t, "vsphere", "vmware-event-router", `{"detail":{"subject":["VmPoweredOffEvent"]}}`)
	syncs := `eventrouter_eventbridge_rule_syncs_total{processor="aws_event_bridge",result="ok"}`
	n0 := d.metric(t, syncs)
	d.eventually(t, 60*time.Second, "two resyncs after the change", func() bool { return d.metric(t, syncs) >= n0+2 })
	sim.Post(ebVMEvent("VmPoweredOnEvent", "after-change"))
	sim.Post(ebVMEvent("VmPoweredOffEvent", "after-change"))
	ebSettle(t, d, "vsphere", total+1)
	want := map[ebWant]int{{"VmPoweredOffEvent", "after-change"}: 1}
	if got := ebGot(t, aws.catchAll.Drain(t)); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("after the rule change: put %v, want %v", got, want)
	}
	if !strings.Contains(d.stderr.String(), "eventbridge rule pattern changed") {
		t.Error("the pattern change is not logged")
	}
}

// TestEventBridgeOutageLosesNothing: AWS unreachable at start is waited for
// (/readyz 503 saying why); AWS unreachable later holds the events (no
// attempt counted, nothing dead-lettered) while rule resyncs fail and keep
// the last good pattern; when AWS is back every event is put once, each
// VM's events in order. A proxy in front of moto makes the outage, so moto
// keeps its rules and queues.
func TestEventBridgeOutageLosesNothing(t *testing.T) {
	aws := ebStartAWS(t, mototest.Region, "vsphere", `{"detail":{"subject":["VmPoweredOnEvent","VmPoweredOffEvent"]}}`)
	proxy := aws.srv.Proxy(t)
	proxy.Down()
	sim := vcsimtest.Start(t)
	entry := fmt.Sprintf(`{"type": "processor", "provider": "aws_event_bridge",
	  "auth": {"method": "access_key", "secret": {"aws_access_key_id": "AKID", "aws_secret_access_key": "secret"}},
	  "options": {"aws_region": %q, "aws_eventbridge_event_bus": "vsphere", "aws_eventbridge_rule_arn": %q,
	    "endpoint": %q, "resync_interval": "100ms"}}`, mototest.Region, aws.arn, proxy.URL)
	d := startDaemon(t, writeConfigText(t, ebConfig(t, sim, entry)))
	d.eventually(t, 60*time.Second, "/readyz 503 naming the rule", func() bool {
		code, body := d.get(t, "/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, aws.arn)
	})
	proxy.Up()
	d.eventually(t, 60*time.Second, "/readyz 200 once AWS answers", func() bool { code, _ := d.get(t, "/readyz"); return code == http.StatusOK })

	sim.Post(ebVMEvent("VmPoweredOnEvent", "before"))
	ebSettle(t, d, "vsphere", 1)
	aws.catchAll.Drain(t)

	proxy.Down()
	failedSyncs := `eventrouter_eventbridge_rule_syncs_total{processor="aws_event_bridge",result="failed"}`
	f0 := d.metric(t, failedSyncs)
	const vms, perVM = 4, 5
	want := map[ebWant]int{}
	for i := range vms * perVM {
		subject := []string{"VmPoweredOnEvent", "VmPoweredOffEvent"}[i/vms%2]
		vm := fmt.Sprintf("outage-%d", i%vms)
		sim.Post(ebVMEvent(subject, vm))
		sim.Post(ebVMEvent("VmSuspendedEvent", vm)) // not matched: never put
		want[ebWant{subject, vm}]++
	}
	held := `eventrouter_processor_deliveries_total{destination="vsphere",processor="aws_event_bridge",result="failed"}`
	d.eventually(t, 60*time.Second, "deliveries held and resyncs failing", func() bool {
		return d.metric(t, held) > 0 && d.metric(t, failedSyncs) >= f0+2
	})
	if code, body := d.get(t, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz during the outage: %d %s (readiness does not follow AWS's health)", code, body)
	}
	if !strings.Contains(d.stderr.String(), "keeping the last good pattern") {
		t.Error("the failed resync is not logged")
	}
	proxy.Up()
	ebSettle(t, d, "vsphere", 1+vms*perVM)
	got := aws.catchAll.Drain(t)
	if g := ebGot(t, got); fmt.Sprint(g) != fmt.Sprint(want) {
		t.Errorf("after the outage: put %v, want %v", g, want)
	}
	last := map[string]int{}
	for _, e := range got {
		var ce struct{ Data struct{ Key int } }
		_ = json.Unmarshal(e.Detail, &ce)
		var vm struct {
			Data struct{ Vm struct{ Name string } }
		}
		_ = json.Unmarshal(e.Detail, &vm)
		if k, ok := last[vm.Data.Vm.Name]; ok && ce.Data.Key < k {
			t.Errorf("%s: key %d put after key %d", vm.Data.Vm.Name, ce.Data.Key, k)
		}
		last[vm.Data.Vm.Name] = ce.Data.Key
	}
	for _, series := range []string{
		`eventrouter_processor_deliveries_total{destination="vsphere",processor="aws_event_bridge",result="retry"}`,
		`eventrouter_processor_deliveries_total{destination="vsphere",processor="aws_event_bridge",result="dead_letter"}`,
	} {
		if n := d.metric(t, series); n != 0 {
			t.Errorf("%s = %v, want 0: an outage counts no attempt", series, n)
		}
	}
}

// TestEventBridgeStartErrors: a rule EventBridge does not have stops
// start-up with a message naming the ARN, the bus and the option.
func TestEventBridgeStartErrors(t *testing.T) {
	aws := ebStartAWS(t, "eu-central-1", "default", `{"detail":{"subject":["VmPoweredOnEvent"]}}`)
	t.Setenv("AWS_ENDPOINT_URL", aws.srv.URL)
	sim := vcsimtest.Start(t)
	arn := "arn:aws:events:eu-central-1:123456789012:rule/no-such-rule"
	code, stderr := runToExit(t, writeConfigText(t, ebConfig(t, sim, fmt.Sprintf(ebSpecEntry, arn))), 60*time.Second)
	if code == 0 {
		t.Fatalf("run returned 0 for a missing rule:\n%s", stderr)
	}
	for _, w := range []string{arn, `not found on event bus \"default\"`, "options.aws_eventbridge_rule_arn"} {
		if !strings.Contains(stderr, w) {
			t.Errorf("output does not say %q:\n%s", w, stderr)
		}
	}
}

// BenchmarkEventBridgeBurst: bursts of 900 VmPoweredOnEvents (the
// simulator keeps about 1,000 events per collector) posted to the simulator
// about 64 VMs, read by the router, matched by the rule and put on moto.
// Each iteration is one burst; setup is outside the timed loop. Reported:
// events/s from the first event's CreatedTime to the last delivery, entries
// per PutEvents call, the router's CPU per 1,000 events, and moto's.
//
// The router runs in this process with the simulator and the posting
// client; "match-none" (a rule that matches nothing: no PutEvents) measures
// that shared share, so "match-all" minus "match-none" is what putting
// events on EventBridge costs:
//
//	go test -run '^$' -bench BenchmarkEventBridgeBurst -benchtime 3x ./cmd/vmware-event-router/
func BenchmarkEventBridgeBurst(b *testing.B) {
	for _, tc := range []struct {
		name    string
		pattern string
		matched bool
	}{
		{"match-all", `{"detail":{"subject":["VmPoweredOnEvent"]}}`, true},
		{"match-none", `{"detail":{"subject":["VmPoweredOffEvent"]}}`, false},
	} {
		b.Run(tc.name, func(b *testing.B) {
			const (
				burst   = 900
				vms     = 64
				posters = 2
			)
			// The rule has no target: moto's SQS re-scans a queue's every
			// message on each send, which would make moto, not the router,
			// the measured thing after a few hundred events.
			srv := mototest.Start(b)
			srv.CreateBus(b, "vsphere")
			arn := srv.PutRule(b, "vsphere", "vmware-event-router", tc.pattern)
			sim := vcsimtest.Start(b)
			entry := fmt.Sprintf(`{"type": "processor", "provider": "aws_event_bridge",
			  "auth": {"method": "access_key", "secret": {"aws_access_key_id": "AKID", "aws_secret_access_key": "secret"}},
			  "options": {"aws_region": %q, "aws_eventbridge_event_bus": "vsphere", "aws_eventbridge_rule_arn": %q, "endpoint": %q}}`,
				mototest.Region, arn, srv.URL)
			d := ebRun(b, ebConfig(b, sim, entry))
			sim.Post(ebVMEvent("VmPoweredOnEvent", "warm-up"))
			delivered := 0
			if tc.matched {
				delivered = 1
			}
			ebSettle(b, d, "vsphere", delivered)
			events := `eventrouter_stream_events_total{stream="vmware_vcenter"}`

			var rate, perCall, cpu, motoCPU float64
			bursts := 0
			for b.Loop() {
				read0 := d.metric(b, events)
				calls0 := d.metric(b, `eventrouter_eventbridge_batch_entries_count{processor="aws_event_bridge"}`)
				sum0 := d.metric(b, `eventrouter_eventbridge_batch_entries_sum{processor="aws_event_bridge"}`)
				cpu0, moto0 := ebCPU(b, os.Getpid()), ebCPU(b, srv.PID())
				start := time.Now()
				ebPostBurst(b, sim, burst, vms, posters)
				if tc.matched {
					delivered += burst
					ebSettle(b, d, "vsphere", delivered)
				} else {
					d.eventually(b, 60*time.Second, "the burst read", func() bool { return d.metric(b, events) >= read0+burst })
				}
				elapsed := time.Since(start)
				cpu += (ebCPU(b, os.Getpid()) - cpu0).Seconds() * 1000 / (burst / 1000.0)
				motoCPU += (ebCPU(b, srv.PID()) - moto0).Seconds() * 1000 / (burst / 1000.0)
				rate += burst / elapsed.Seconds()
				if calls := d.metric(b, `eventrouter_eventbridge_batch_entries_count{processor="aws_event_bridge"}`) - calls0; calls > 0 {
					perCall += (d.metric(b, `eventrouter_eventbridge_batch_entries_sum{processor="aws_event_bridge"}`) - sum0) / calls
				}
				bursts++
			}
			n := float64(bursts)
			b.ReportMetric(rate/n, "events/s")
			b.ReportMetric(perCall/n, "entries/call")
			b.ReportMetric(cpu/n, "process-cpu-ms/1000ev")
			b.ReportMetric(motoCPU/n, "moto-cpu-ms/1000ev")
			for _, code := range []string{"ThrottlingException", "InternalFailure", "other"} {
				if n := d.metric(b, fmt.Sprintf(`eventrouter_eventbridge_failed_entries_total{code=%q,processor="aws_event_bridge"}`, code)); n != 0 {
					b.Errorf("%v entries failed with %s", n, code)
				}
			}
		})
	}
}

// ebPostBurst posts n VmPoweredOnEvents round robin over vms VMs from
// several goroutines, each owning a set of VMs so each VM's events are
// posted in order.
func ebPostBurst(b *testing.B, sim *vcsimtest.Sim, n, vms, posters int) {
	var wg sync.WaitGroup
	for p := range posters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := p; i < n; i += posters {
				sim.Post(ebVMEvent("VmPoweredOnEvent", fmt.Sprintf("burst-%02d", i%vms)))
			}
		}()
	}
	wg.Wait()
}

// ebCPU returns the user+system CPU time process pid has used, from
// /proc/PID/stat (clock ticks of 10 ms).
func ebCPU(tb testing.TB, pid int) time.Duration {
	tb.Helper()
	if pid == os.Getpid() {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			tb.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: state is field 3, utime 14, stime 15.
	rest := string(data[strings.LastIndexByte(string(data), ')')+2:])
	f := strings.Fields(rest)
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		tb.Fatalf("/proc/%d/stat: %v %v", pid, err1, err2)
	}
	return time.Duration(ut+st) * 10 * time.Millisecond
}
