package gateway

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
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

// BenchmarkTrickleSubmit: one event at a time with a pause after each,
// long enough for the process to go idle, as a stream at a few events a
// second does: what an event costs in goroutine hand-offs, each of which
// may wake a sleeping thread. Like the stream's goroutine, the loop does
// not wait for the acknowledgement (it would be one more hand-off); the
// pause outlasts a delivery by far. It reports the process's CPU time and
// scheduler time slices per event from /proc/self/task/*/schedstat; both
// include the pause's own timer wake-up. (Not named BenchmarkDispatcher...:
// the README's -bench BenchmarkDispatcher -benchtime 300000x would pause
// 300,000 times.)
func BenchmarkTrickleSubmit(b *testing.B) {
	const pause = 5 * time.Millisecond
	p := nopProcessor{newFake("f")}
	d := newTestDispatcher(p, &memSink{}, func(o *DispatcherOptions) {
		o.Concurrency, o.QueueSize = 64, 10000
	})
	evs := make([]*Event, 1024)
	for i := range evs {
		evs[i] = ev(int32(i), fmt.Sprintf("VirtualMachine:vm-%d", i%64))
	}
	ctx := context.Background()
	// The destination exists before the measurement starts.
	if err := d.Submit(ctx, evs[0]); err != nil {
		b.Fatal(err)
	}
	waitIdle(b, d)
	cpu0, slices0 := schedstat(b)
	n := 0
	for b.Loop() {
		if err := d.Submit(ctx, evs[n%len(evs)]); err != nil {
			b.Fatal(err)
		}
		n++
		time.Sleep(pause)
	}
	cpu1, slices1 := schedstat(b)
	waitIdle(b, d)
	b.StopTimer()
	closeBench(b, d)
	b.ReportMetric(float64(cpu1-cpu0)/float64(n)/1e3, "cpu-µs/event")
	b.ReportMetric(float64(slices1-slices0)/float64(n), "slices/event")
}

// schedstat sums the time on CPU (ns) and the time slices of the process's
// threads (/proc/self/task/*/schedstat: fields 1 and 3).
func schedstat(b *testing.B) (cpu, slices int64) {
	b.Helper()
	files, err := filepath.Glob("/proc/self/task/*/schedstat")
	if err != nil || len(files) == 0 {
		b.Fatalf("no /proc/self/task/*/schedstat (Linux with schedstats needed): %v", err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue // the thread ended
		}
		var c, wait, s int64
		if _, err := fmt.Sscan(string(data), &c, &wait, &s); err != nil {
			b.Fatalf("%s: %v", f, err)
		}
		cpu, slices = cpu+c, slices+s
	}
	return cpu, slices
}
