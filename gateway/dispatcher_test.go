package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
)

// fakeProcessor is a test double of our own Processor interface: a script
// decides each call's results.
type fakeProcessor struct {
	dests  []string
	limits *BatchLimits

	mu        sync.Mutex
	delivered map[string][]*Event // per destination, in delivery order
	calls     [][]*Event
	inFlight  map[string]int // entity -> calls in flight
	overlap   bool           // two deliveries of one entity at once
	result    func(dest string, ev *Event, attempt int) error
	attempts  map[*Event]int
	gate      chan struct{} // when set, Deliver waits on it
}

func newFake(dests ...string) *fakeProcessor {
	return &fakeProcessor{dests: dests, delivered: map[string][]*Event{}, inFlight: map[string]int{}, attempts: map[*Event]int{}}
}

func (f *fakeProcessor) Start(context.Context) error { return nil }
func (f *fakeProcessor) Subscription(context.Context) (Subscription, error) {
	return SubscriptionFunc(func(*Event) bool { return true }), nil
}
func (f *fakeProcessor) Destinations(*Event) []string { return f.dests }
func (f *fakeProcessor) Ready() error                 { return nil }
func (f *fakeProcessor) Close() error                 { return nil }

func (f *fakeProcessor) Deliver(ctx context.Context, dest string, evs []*Event) []error {
	f.mu.Lock()
	f.calls = append(f.calls, evs)
	for _, ev := range evs {
		key := dest + "/" + ev.Entity
		if ev.Entity != "" && f.inFlight[key] > 0 {
			f.overlap = true
		}
		f.inFlight[key]++
	}
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
		}
	}
	errs := make([]error, len(evs))
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, ev := range evs {
		f.inFlight[dest+"/"+ev.Entity]--
		f.attempts[ev]++
		if f.result != nil {
			errs[i] = f.result(dest, ev, f.attempts[ev])
		}
		if errs[i] == nil {
			f.delivered[dest] = append(f.delivered[dest], ev)
		}
	}
	return errs
}

type batchingFake struct{ *fakeProcessor }

func (b batchingFake) BatchLimits() BatchLimits { return *b.limits }

type memSink struct {
	mu      sync.Mutex
	letters []DeadLetter
}

func (s *memSink) Write(_ context.Context, dl DeadLetter) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.letters = append(s.letters, dl)
	return nil
}

func (s *memSink) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.letters)
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newTestDispatcher(p Processor, sink DeadLetterSink, mut func(*DispatcherOptions)) *Dispatcher {
	o := DispatcherOptions{Processor: p, ProcessorName: "fake", StatsName: "fake", Concurrency: 8, QueueSize: 100,
		RetryLimit: 5, BackoffMin: time.Millisecond, BackoffMax: 4 * time.Millisecond, Sink: sink,
		Log: discard(), Metrics: metrics.New()}
	if mut != nil {
		mut(&o)
	}
	return NewDispatcher(o)
}

func ev(key int32, entity string) *Event {
	return &Event{Key: key, Entity: entity, Subject: "VmPoweredOnEvent",
		Time: time.Date(2026, 1, 1, 0, 0, int(key), 0, time.UTC), JSON: []byte(fmt.Sprintf(`{"key":%d}`, key))}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func (f *fakeProcessor) count(dest string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.delivered[dest])
}

func closeDispatcher(t *testing.T, d *Dispatcher) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestDispatcherOrderPerEntity(t *testing.T) {
	p := newFake("f1", "f2")
	// Fail some first attempts so retries interleave with later events.
	p.result = func(_ string, ev *Event, attempt int) error {
		if ev.Key%3 == 0 && attempt == 1 {
			return errors.New("503")
		}
		return nil
	}
	d := newTestDispatcher(p, &memSink{}, nil)
	const n = 300
	for i := 1; i <= n; i++ {
		if err := d.Submit(context.Background(), ev(int32(i), fmt.Sprintf("VirtualMachine:vm-%d", i%7))); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "all delivered", func() bool { return p.count("f1") == n && p.count("f2") == n })
	closeDispatcher(t, d)
	if p.overlap {
		t.Error("two deliveries of one entity were in flight at once")
	}
	for _, dest := range []string{"f1", "f2"} {
		last := map[string]int32{}
		for _, e := range p.delivered[dest] {
			if e.Key < last[e.Entity] {
				t.Fatalf("%s: entity %s got key %d after %d", dest, e.Entity, e.Key, last[e.Entity])
			}
			last[e.Entity] = e.Key
		}
	}
	if wm, ok := d.Watermark(); !ok || wm.Key != n {
		t.Errorf("watermark %+v %v, want key %d", wm, ok, n)
	}
}

func TestDispatcherRetryLimitAndPermanent(t *testing.T) {
	p := newFake("f")
	p.result = func(_ string, ev *Event, _ int) error {
		switch ev.Key {
		case 1:
			return errors.New("always 503")
		case 2:
			return Permanent(errors.New("400 bad request"))
		}
		return nil
	}
	sink := &memSink{}
	d := newTestDispatcher(p, sink, func(o *DispatcherOptions) { o.RetryLimit = 4 })
	for i := int32(1); i <= 3; i++ {
		if err := d.Submit(context.Background(), ev(i, fmt.Sprintf("e%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "two dead letters", func() bool { return sink.len() == 2 })
	eventually(t, "watermark past everything", func() bool { wm, ok := d.Watermark(); return ok && wm.Key == 3 })
	closeDispatcher(t, d)
	byKey := map[int32]DeadLetter{}
	for _, dl := range sink.letters {
		byKey[dl.Event.Key] = dl
	}
	if dl := byKey[1]; dl.Reason != "retry_limit" || dl.Attempts != 4 || dl.Origin != OriginProcessor || dl.Destination != "f" {
		t.Errorf("retry-limited letter: %+v", dl)
	}
	if dl := byKey[2]; dl.Reason != "rejected" || dl.Attempts != 1 {
		t.Errorf("permanent letter: %+v", dl)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.attempts[p.delivered["f"][0]] != 1 || p.delivered["f"][0].Key != 3 {
		t.Errorf("healthy event: %+v", p.delivered["f"])
	}
}

// TestDispatcherUnreachableHolds: an unreachable destination costs no
// attempts, however long it is down, and loses nothing.
func TestDispatcherUnreachableHolds(t *testing.T) {
	p := newFake("f")
	var mu sync.Mutex
	down := true
	p.result = func(string, *Event, int) error {
		mu.Lock()
		defer mu.Unlock()
		if down {
			return Unreachable(errors.New("connection refused"))
		}
		return nil
	}
	sink := &memSink{}
	d := newTestDispatcher(p, sink, func(o *DispatcherOptions) { o.RetryLimit = 2 })
	for i := int32(1); i <= 20; i++ {
		if err := d.Submit(context.Background(), ev(i, fmt.Sprintf("e%d", i%3))); err != nil {
			t.Fatal(err)
		}
	}
	// Far more failed calls than the retry limit, and no dead letter.
	eventually(t, "many unreachable attempts", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.calls) > 10
	})
	if sink.len() != 0 {
		t.Fatalf("dead-lettered while unreachable: %+v", sink.letters)
	}
	mu.Lock()
	down = false
	mu.Unlock()
	eventually(t, "all delivered after recovery", func() bool { return p.count("f") == 20 })
	closeDispatcher(t, d)
}

// TestDispatcherBackpressure: a full queue blocks Submit until space frees.
func TestDispatcherBackpressure(t *testing.T) {
	p := newFake("f")
	p.gate = make(chan struct{})
	d := newTestDispatcher(p, &memSink{}, func(o *DispatcherOptions) { o.QueueSize = 3; o.Concurrency = 1 })
	for i := int32(1); i <= 3; i++ {
		if err := d.Submit(context.Background(), ev(i, "e")); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := d.Submit(ctx, ev(4, "e")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Submit to a full queue returned %v, want it to block until its context ends", err)
	}
	if n, _ := d.Pending(); n != 3 {
		t.Errorf("a cancelled Submit registered an event: pending %d", n)
	}
	done := make(chan error, 1)
	go func() { done <- d.Submit(context.Background(), ev(5, "e")) }()
	close(p.gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	eventually(t, "delivered", func() bool { return p.count("f") == 4 })
	closeDispatcher(t, d)
}

func TestDispatcherBatches(t *testing.T) {
	p := newFake("bus")
	p.limits = &BatchLimits{MaxEvents: 10, MaxBytes: 100, Size: func(ev *Event) int { return len(ev.JSON) }, Linger: 5 * time.Millisecond}
	p.gate = make(chan struct{})
	d := newTestDispatcher(batchingFake{p}, &memSink{}, func(o *DispatcherOptions) { o.Concurrency = 1 })
	// 23 events over 4 entities while the first call is held: later calls
	// must batch, with no entity twice in a call.
	for i := int32(1); i <= 23; i++ {
		if err := d.Submit(context.Background(), ev(i, fmt.Sprintf("e%d", i%4))); err != nil {
			t.Fatal(err)
		}
	}
	close(p.gate)
	eventually(t, "delivered", func() bool { return p.count("bus") == 23 })
	closeDispatcher(t, d)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, call := range p.calls {
		seen := map[string]bool{}
		size := 0
		for _, e := range call {
			if seen[e.Entity] {
				t.Errorf("entity %s twice in one batch", e.Entity)
			}
			seen[e.Entity] = true
			size += len(e.JSON)
		}
		if len(call) > 10 || (len(call) > 1 && size > 100) {
			t.Errorf("batch over the limits: %d events, %d bytes", len(call), size)
		}
	}
	if len(p.calls) >= 23 {
		t.Errorf("no batching: %d calls for 23 events", len(p.calls))
	}
}

func TestLedgerWatermark(t *testing.T) {
	var l ledger
	pos := func(k int32) Position { return Position{Time: time.Unix(100, 0), Key: k} }
	a := l.add(pos(1), 2)
	b := l.add(pos(2), 1)
	l.add(pos(3), 0)
	if _, ok := l.watermark(); ok {
		t.Fatal("watermark before anything finished")
	}
	l.done(b)
	if _, ok := l.watermark(); ok {
		t.Fatal("watermark moved past an unfinished event")
	}
	l.done(a)
	if _, ok := l.watermark(); ok {
		t.Fatal("watermark moved before every destination finished")
	}
	l.done(a)
	if wm, ok := l.watermark(); !ok || wm.Key != 3 {
		t.Fatalf("watermark %+v, want key 3", wm)
	}
	l.done(a) // a duplicate acknowledgement must not corrupt anything
	if n, _ := l.pending(); n != 0 {
		t.Fatalf("pending %d", n)
	}
}

func TestPositionOrder(t *testing.T) {
	t0 := time.Unix(100, 0)
	tests := []struct {
		name string
		a, b Position
		want bool
	}{
		{"earlier time", Position{t0, 5}, Position{t0.Add(time.Millisecond), 1}, true},
		{"same time lower key", Position{t0, 1}, Position{t0, 2}, true},
		{"wrapped key at a later time", Position{t0, 2147483647}, Position{t0.Add(time.Second), -2147483648}, true},
		{"equal", Position{t0, 1}, Position{t0, 1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.a.Before(tt.b); got != tt.want {
				t.Errorf("Before = %v", got)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	lo, hi := 250*time.Millisecond, 20*time.Second
	var total time.Duration
	for n := 1; n <= 20; n++ {
		b := backoff(lo, hi, n)
		if b > hi || b < lo/2 {
			t.Fatalf("backoff(%d) = %v out of range", n, b)
		}
		total += b
	}
	// 20 attempts should span minutes, not seconds or hours (about five
	// minutes without jitter; jitter takes up to half off).
	if total < 2*time.Minute || total > 5*time.Minute {
		t.Errorf("20 attempts span %v", total)
	}
}
