package gateway

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// nopProcessor delivers instantly: the benchmarks measure the dispatcher's
// own cost per event.
type nopProcessor struct{ *fakeProcessor }

func (nopProcessor) Deliver(_ context.Context, _ string, evs []*Event) []error {
	return make([]error, len(evs))
}

func benchDispatcher(b *testing.B) *Dispatcher {
	b.Helper()
	p := nopProcessor{newFake("f")}
	return newTestDispatcher(p, &memSink{}, func(o *DispatcherOptions) {
		o.Concurrency, o.QueueSize = 64, 10000
	})
}

func waitIdle(b *testing.B, d *Dispatcher) {
	b.Helper()
	deadline := time.Now().Add(time.Minute)
	for !d.Idle() {
		if time.Now().After(deadline) {
			b.Fatal("dispatcher not idle after a minute")
		}
		time.Sleep(time.Millisecond)
	}
}

// BenchmarkDispatcherSubmit: events over 64 entities to one destination
// that answers at once, from Submit to acknowledgement.
func BenchmarkDispatcherSubmit(b *testing.B) {
	d := benchDispatcher(b)
	evs := make([]*Event, 1024)
	for i := range evs {
		evs[i] = ev(int32(i), fmt.Sprintf("VirtualMachine:vm-%d", i%64))
	}
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := d.Submit(ctx, evs[i%len(evs)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
	waitIdle(b, d)
	b.StopTimer()
	closeBench(b, d)
}

// BenchmarkDispatcherDone: events a filter dropped, acknowledged at once.
func BenchmarkDispatcherDone(b *testing.B) {
	d := benchDispatcher(b)
	e := ev(1, "VirtualMachine:vm-1")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		doneBench(ctx, d, e)
	}
	b.StopTimer()
	closeBench(b, d)
}

func closeBench(b *testing.B, d *Dispatcher) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Close(ctx); err != nil {
		b.Fatal(err)
	}
}

func doneBench(ctx context.Context, d *Dispatcher, e *Event) { _ = d.Done(ctx, e) }
