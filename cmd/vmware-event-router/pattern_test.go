package main

import (
	"testing"
	"time"
)

// TestProcessorPattern: the processor option "pattern" narrows the
// OpenFaaS topic routing to the README's examples, VMs whose name starts
// with "prod-" in one datacenter (the simulator's DC0): only those events
// reach the function.
func TestProcessorPattern(t *testing.T) {
	sim := ofStartSim(t, 0)
	prod := sim.CreateVMs("prod", 2)
	test := sim.CreateVMs("test", 2)
	g := ofGateway(t)
	on := g.Deploy("on", "", map[string]string{"topic": "VmPoweredOnEvent"})
	d := ofRun(t, ofConfig(sim, g, g.Password, map[string]string{
		"pattern": `{"data": {"Datacenter": {"Name": ["DC0"]}, "Vm": {"Name": [{"prefix": "prod-"}]}}}`,
	}))
	d.waitReady(t)
	const drops = `eventrouter_filter_verdicts_total{filter="subject_routing",verdict="drop"}`
	dropped := d.metric(t, drops)
	base := sim.LatestKey()
	want := map[string]int{}
	for i := range 3 {
		for _, vm := range test {
			sim.Post(ofPowerEvent(vm, true))
		}
		for _, vm := range prod {
			sim.Post(ofPowerEvent(vm, true))
			want[vm.Ref.Value]++
		}
		sim.Post(ofPowerEvent(prod[i%2], false)) // the pattern takes it, the topics do not
	}
	ofCheck(t, on, base, want, 20*time.Second, d)
	// The routing filter decides before the dispatcher: once it has dropped
	// the test VMs' events and the power-off events, none can arrive later.
	d.eventually(t, 20*time.Second, "9 events dropped by the routing", func() bool {
		return d.metric(t, drops)-dropped >= 9
	})
	got := ofReceived(t, on, base)
	for _, vm := range test {
		if n := len(got[vm.Ref.Value]); n != 0 {
			t.Errorf("%s (%s) does not match the pattern, but the function got %d of its events", vm.Name, vm.Ref.Value, n)
		}
	}
	if n := d.metric(t, drops) - dropped; n != 9 {
		t.Errorf("routing dropped %v events, want 9 (6 of test VMs, 3 power-offs)", n)
	}
}
