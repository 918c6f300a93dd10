package main

// Daemon-level tests of the error classes (CONFIG.md, "Error classes, made
// precise"): a destination that refuses every event for a while, because
// its credentials are being rotated or it throttles, loses nothing and
// charges no event an attempt.

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/vmware-samples/vmware-event-router/internal/mototest"
	"github.com/vmware-samples/vmware-event-router/internal/vcsimtest"
)

// TestOpenFaaSInvocations401For4s: the gateway answers 401 to every
// invocation for 4 s (credentials rotated in front of the functions) while
// events come in; every event reaches the function afterwards, each VM's
// in order, and none is dead-lettered.
func TestOpenFaaSInvocations401For4s(t *testing.T) {
	t.Parallel() // long and mostly waiting: runs beside the other long daemon tests
	sim := ofStartSim(t, 10)
	g := ofGateway(t)
	f := g.Deploy("fn", "", map[string]string{"topic": "VmPoweredOnEvent"})
	d := ofRun(t, ofConfig(sim, g, g.Password, nil))
	d.waitReady(t)
	base := sim.LatestKey()
	g.LockInvocations(4 * time.Second)
	want := sim.postRound(100, 10)
	ofCheck(t, f, base, want, 60*time.Second, d)
	if g.Refused() == 0 {
		t.Fatal("the gateway refused no invocation: the test proves nothing")
	}
	for _, reason := range []string{"rejected", "retry_limit"} {
		series := fmt.Sprintf(`eventrouter_dead_letters_total{processor="openfaas",reason=%q}`, reason)
		if n := d.metric(t, series); n != 0 {
			t.Errorf("%s = %v after a 4 s burst of 401s, want 0", series, n)
		}
	}
	if d.metric(t, `eventrouter_processor_deliveries_total{destination="fn",processor="openfaas",result="retry"}`) == 0 {
		t.Error("no retries counted: the 401s were not seen")
	}
	d.alive(t)
}

// TestEventBridgeThrottledAndRefused: AWS throttles PutEvents, then
// refuses the credentials as expired, then throttles single entries, while
// events come in; every event is put once afterwards, nothing is
// dead-lettered and no attempt is counted against any event (retry_limit
// is 2: a counted attempt or two would show).
func TestEventBridgeThrottledAndRefused(t *testing.T) {
	t.Parallel() // long and mostly waiting: runs beside the other long daemon tests
	aws := ebStartAWS(t, mototest.Region, "vsphere", `{"detail":{"subject":["VmPoweredOnEvent"]}}`)
	faults := aws.srv.Faults(t)
	sim := vcsimtest.Start(t)
	entry := fmt.Sprintf(`{"type": "processor", "provider": "aws_event_bridge",
	  "auth": {"method": "access_key", "secret": {"aws_access_key_id": "AKID", "aws_secret_access_key": "secret"}},
	  "options": {"aws_region": %q, "aws_eventbridge_event_bus": "vsphere", "aws_eventbridge_rule_arn": %q,
	    "endpoint": %q, "retry_limit": "2"}}`, mototest.Region, aws.arn, faults.URL)
	d := ebRun(t, ebConfig(t, sim, entry))

	faults.FailCalls("PutEvents", 2, mototest.Fault{Status: http.StatusBadRequest, Code: "ThrottlingException", Message: "Rate exceeded"})
	faults.FailCalls("PutEvents", 2, mototest.Fault{Status: http.StatusForbidden, Code: "ExpiredTokenException", Message: "The security token included in the request is expired"})
	faults.FailEntries(6, "ThrottlingException")
	const vms, perVM = 4, 5
	want := map[ebWant]int{}
	for i := range vms * perVM {
		vm := fmt.Sprintf("held-%d", i%vms)
		sim.Post(ebVMEvent("VmPoweredOnEvent", vm))
		want[ebWant{"VmPoweredOnEvent", vm}]++
	}
	ebSettle(t, d, "vsphere", vms*perVM)
	if calls, entries := faults.Pending(); calls+entries != 0 {
		t.Fatalf("%d call faults and %d entry faults never given: the test proves nothing", calls, entries)
	}
	got := aws.catchAll.Drain(t)
	if g := ebGot(t, got); fmt.Sprint(g) != fmt.Sprint(want) {
		t.Errorf("put %v, want %v", g, want)
	}
	for _, series := range []string{
		`eventrouter_processor_deliveries_total{destination="vsphere",processor="aws_event_bridge",result="retry"}`,
		`eventrouter_processor_deliveries_total{destination="vsphere",processor="aws_event_bridge",result="dead_letter"}`,
	} {
		if n := d.metric(t, series); n != 0 {
			t.Errorf("%s = %v, want 0: a throttled or refusing bus counts no attempt", series, n)
		}
	}
	for _, code := range []string{"ThrottlingException", "ExpiredTokenException"} {
		series := fmt.Sprintf(`eventrouter_eventbridge_failed_entries_total{code=%q,processor="aws_event_bridge"}`, code)
		if d.metric(t, series) == 0 {
			t.Errorf("%s = 0: the refusals were not counted", series)
		}
	}
	d.alive(t)
}
