package gateway

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
)

// heldProcessor is a processor whose destinations are all down: every
// delivery fails as a whole, so events pile up in the queues.
type heldProcessor struct {
	*fakeProcessor
}

func (heldProcessor) Deliver(_ context.Context, _ string, evs []*Event) []error {
	errs := make([]error, len(evs))
	for i := range errs {
		errs[i] = Unreachable(errors.New("connection refused"))
	}
	return errs
}

// queuedData is the data member of a VmPoweredOnEvent as the vCenter
// stream encodes it (843 bytes as a whole CloudEvent, like the golden file
// gateway/vcenter/testdata/vm_powered_off_event.golden.json).
const queuedData = `{"Key":%d,"ChainId":9895,"CreatedTime":"2020-02-11T21:28:23.677595Z","UserName":"VSPHERE.LOCAL\\Administrator",` +
	`"Datacenter":{"Name":"testDC","Datacenter":{"Type":"Datacenter","Value":"datacenter-2"}},` +
	`"ComputeResource":{"Name":"cls","ComputeResource":{"Type":"ClusterComputeResource","Value":"domain-c7"}},` +
	`"Host":{"Name":"10.185.22.74","Host":{"Type":"HostSystem","Value":"host-21"}},` +
	`"Vm":{"Name":"test-01","Vm":{"Type":"VirtualMachine","Value":"vm-%d"}},"Ds":null,"Net":null,"Dvs":null,` +
	`"FullFormattedMessage":"test-01 on  10.0.0.1 in testDC is powered on","ChangeTag":"","Template":false}`

// queuedEvent builds event i the way the vCenter stream does: every string
// and the JSON allocated for this event alone. entities 0 gives events
// about no object.
func queuedEvent(i, entities int) *Event {
	const source = "https://10.0.0.1:443/sdk"
	vm := 0
	entity := ""
	if entities > 0 {
		vm = i % entities
		entity = "VirtualMachine:vm-" + strconv.Itoa(vm)
	}
	ev := &Event{
		ID:      fmt.Sprintf("0c118625-6028-5bbf-9eea-%012x", i),
		Source:  source,
		Subject: "VmPoweredOnEvent",
		Time:    time.Date(2026, 1, 1, 0, 0, 0, i, time.UTC),
		Key:     int32(i),
		Entity:  entity,
	}
	b := make([]byte, 0, 900)
	b = fmt.Appendf(b, `{"id":%q,"source":%q,"specversion":"1.0","type":%q,"subject":%q,"time":%q,"data":`,
		ev.ID, source, EventType, ev.Subject, ev.Time.Format(time.RFC3339Nano))
	b = fmt.Appendf(b, queuedData, i, vm)
	ev.JSON = append(b, `,"datacontenttype":"application/json"}`...)
	return ev
}

// BenchmarkQueuedEventMemory measures the heap an event costs while it
// waits: n events queued behind destinations that are down, the live heap
// (after a GC) before and after, per event. The event itself (its ~850
// bytes of JSON and attributes) is part of the cost; with several
// destinations every queue shares it.
//
//	go test -run '^$' -bench QueuedEventMemory -benchtime 1x ./gateway/
func BenchmarkQueuedEventMemory(b *testing.B) {
	const n = 10_000 // the default queue_size
	for _, c := range []struct {
		name     string
		dests    int
		entities int
	}{
		{"one destination, 64 VMs", 1, 64},
		{"three destinations, 64 VMs", 3, 64},
		{"one destination, no entity", 1, 0},
	} {
		b.Run(c.name, func(b *testing.B) {
			var per float64
			for b.Loop() {
				per = queuedBytes(b, n, c.dests, c.entities)
			}
			b.ReportMetric(per, "B/event")
			b.ReportMetric(float64(len(queuedEvent(1, c.entities).JSON)), "JSON-B/event")
			b.Logf("issue 16 target: ≤ 2,048 B per queued event: %s (%.0f B)", met(per <= 2048), per)
		})
	}
}

// queuedBytes queues n events for dests destinations that are down and
// returns the live heap they add, per event.
func queuedBytes(b *testing.B, n, dests, entities int) float64 {
	names := make([]string, dests)
	for i := range names {
		names[i] = fmt.Sprintf("fn-%d", i)
	}
	d := NewDispatcher(DispatcherOptions{Processor: heldProcessor{newFake(names...)}, ProcessorName: "held",
		QueueSize: n, BackoffMin: time.Hour, BackoffMax: time.Hour, Log: discard(), Metrics: metrics.New()})
	ctx := context.Background()
	// The destinations and their goroutines exist before the baseline.
	if err := d.Submit(ctx, queuedEvent(0, entities)); err != nil {
		b.Fatal(err)
	}
	before := liveHeap()
	for i := 1; i < n; i++ {
		if err := d.Submit(ctx, queuedEvent(i, entities)); err != nil {
			b.Fatal(err)
		}
	}
	if p, _ := d.Pending(""); p != n {
		b.Fatalf("%d events pending, want %d: the destinations are not held", p, n)
	}
	after := liveHeap()
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_ = d.Close(cctx) // abandons the queued events
	return float64(after-before) / float64(n-1)
}

// liveHeap returns the bytes of live heap objects after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "missed"
}
