package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
	"github.com/vmware-samples/vmware-event-router/internal/testutil"
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
	gate      chan struct{}  // when set, Deliver waits on it
	hang      string         // deliveries to this destination wait for their ctx
	calling   map[string]int // destination -> calls in flight
	peak      map[string]int // destination -> most calls in flight at once
	peakAll   int            // most calls in flight at once, over all destinations
	// startedBy counts calls by the function that started the goroutine
	// making them: "(*destination).loop", or "(*destination).start" for
	// Submit, a retry and a call ending (the trickle's path).
	startedBy map[string]int
}

func newFake(dests ...string) *fakeProcessor {
	return &fakeProcessor{dests: dests, delivered: map[string][]*Event{}, inFlight: map[string]int{}, attempts: map[*Event]int{},
		calling: map[string]int{}, peak: map[string]int{}, startedBy: map[string]int{}}
}

// starter names the function that started the calling goroutine, from its
// stack's "created by" line.
func starter() string {
	buf := make([]byte, 8192)
	st := string(buf[:runtime.Stack(buf, false)])
	_, by, ok := strings.Cut(st, "\ncreated by ")
	if !ok {
		return "?"
	}
	by, _, _ = strings.Cut(by, " in goroutine")
	return by[strings.LastIndex(by, "gateway.")+len("gateway."):]
}

func (f *fakeProcessor) Start(context.Context) error { return nil }
func (f *fakeProcessor) Subscription(context.Context) (Subscription, error) {
	return SubscriptionFunc(func(*Event) bool { return true }), nil
}
func (f *fakeProcessor) Destinations(*Event) []string { return f.dests }
func (f *fakeProcessor) Ready() error                 { return nil }
func (f *fakeProcessor) Close() error                 { return nil }

func (f *fakeProcessor) Deliver(ctx context.Context, dest string, evs []*Event) []error {
	by := starter()
	f.mu.Lock()
	f.calls = append(f.calls, evs)
	f.startedBy[by]++
	f.calling[dest]++
	f.peak[dest] = max(f.peak[dest], f.calling[dest])
	all := 0
	for _, n := range f.calling {
		all += n
	}
	f.peakAll = max(f.peakAll, all)
	for _, ev := range evs {
		key := dest + "/" + ev.Entity
		if ev.Entity != "" && f.inFlight[key] > 0 {
			f.overlap = true
		}
		f.inFlight[key]++
	}
	gate := f.gate
	if dest == f.hang {
		gate = make(chan struct{}) // never closed: wait for ctx
	}
	f.mu.Unlock()
	cancelled := false
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			cancelled = true
		}
	}
	errs := make([]error, len(evs))
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calling[dest]--
	for i, ev := range evs {
		f.inFlight[dest+"/"+ev.Entity]--
		f.attempts[ev]++
		if cancelled {
			errs[i] = ctx.Err()
		} else if f.result != nil {
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
	if wm, ok := d.Watermark(""); !ok || wm.Key != n {
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
	eventually(t, "watermark past everything", func() bool { wm, ok := d.Watermark(""); return ok && wm.Key == 3 })
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
	if n, _ := d.Pending(""); n != 3 {
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
	l := newLedger(100, nil, nil)
	ctx := context.Background()
	pos := func(k int32) Position { return Position{Time: time.Unix(100, 0), Key: k} }
	a, _ := l.add(ctx, pos(1), 2)
	b, _ := l.add(ctx, pos(2), 1)
	_, _ = l.add(ctx, pos(3), 0)
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

func logTo(buf *testutil.SyncBuffer) *slog.Logger { return slog.New(slog.NewTextHandler(buf, nil)) }

// hasSeries reports whether the registry exports a series of the named
// family for destination dest.
func hasSeries(t *testing.T, m *metrics.Metrics, family, dest string) bool {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != family {
			continue
		}
		for _, s := range mf.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "destination" && l.GetValue() == dest {
					return true
				}
			}
		}
	}
	return false
}

// destinationLoops counts the destination goroutines running in the
// process.
func destinationLoops() int {
	buf := make([]byte, 1<<22)
	n := runtime.Stack(buf, true)
	return strings.Count(string(buf[:n]), "gateway.(*destination).loop(")
}

// TestDispatcherHeldStream: one event held at an unreachable destination
// while filters drop every later one. The watermark ledger stops at
// MaxPending and Done then waits (the stream is held) rather than grow; the
// pending gauge and a /readyz line say so and why; once the destination is
// back everything moves.
func TestDispatcherHeldStream(t *testing.T) {
	p := newFake("f")
	var down atomic.Bool
	down.Store(true)
	p.result = func(string, *Event, int) error {
		if down.Load() {
			return Unreachable(errors.New("dial tcp 10.0.0.1:8080: connection refused"))
		}
		return nil
	}
	m := metrics.New()
	d := newTestDispatcher(p, &memSink{}, func(o *DispatcherOptions) {
		o.Metrics, o.Stream, o.MaxPending, o.DegradedAfter = m, "vcsim", 50, time.Millisecond
	})
	ctx := context.Background()
	if err := d.Submit(ctx, ev(1, "vm-1")); err != nil {
		t.Fatal(err)
	}
	for i := int32(2); i <= 50; i++ {
		if err := d.Done(ctx, ev(i, "")); err != nil {
			t.Fatal(err)
		}
	}
	pending := m.WatermarkPending.WithLabelValues("vcsim")
	if v := promtest.ToFloat64(pending); v != 50 {
		t.Fatalf("eventrouter_watermark_pending_events %v, want 50", v)
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := d.Done(short, ev(51, "")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Done with the ledger at its cap returned %v, want it to wait until its context ends", err)
	}
	if err := d.Submit(short, ev(51, "vm-2")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Submit with the ledger at its cap returned %v, want it to wait until its context ends", err)
	}
	if n, _ := d.Pending(""); n != 50 {
		t.Fatalf("pending %d after cancelled calls, want 50", n)
	}
	want := "by processor fake (destination f held: dial tcp 10.0.0.1:8080: connection refused); " +
		"the checkpoint waits at event key 1 created 2026-01-01T00:00:01Z, 50 events unacknowledged, the cap: reading paused"
	var lines []string
	eventually(t, "the stream shown held on /readyz", func() bool {
		lines = d.Degraded()
		return len(lines) == 2 && strings.HasPrefix(lines[0], "stream vcsim: held for ") && strings.HasSuffix(lines[0], want)
	})
	if !strings.HasPrefix(lines[1], "processor fake: destination f held since ") {
		t.Errorf("second degraded line %q", lines[1])
	}

	done := make(chan error, 1)
	go func() { done <- d.Done(ctx, ev(52, "")) }()
	down.Store(false)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	eventually(t, "the watermark past everything", func() bool { wm, ok := d.Watermark(""); return ok && wm.Key == 52 })
	if v := promtest.ToFloat64(pending); v != 0 {
		t.Errorf("eventrouter_watermark_pending_events %v after recovery, want 0", v)
	}
	// The hold ends once the call that delivered returns, just after its
	// events are acknowledged.
	eventually(t, "no degraded line after recovery", func() bool { return len(d.Degraded()) == 0 })
	closeDispatcher(t, d)
}

// TestDispatcherHeldDestination: a destination failing as a whole (here
// throttled) is held: no attempt counted, one probe at a time, logged once
// per outage with the reason, eventrouter_destination_held 1 and a /readyz
// line while it lasts.
func TestDispatcherHeldDestination(t *testing.T) {
	p := newFake("f")
	var down atomic.Bool
	down.Store(true)
	p.result = func(string, *Event, int) error {
		if down.Load() {
			return Unreachable(errors.New("ThrottlingException: Rate exceeded\n(request id 1)"))
		}
		return nil
	}
	logs := &testutil.SyncBuffer{}
	m := metrics.New()
	sink := &memSink{}
	d := newTestDispatcher(p, sink, func(o *DispatcherOptions) { o.Metrics, o.Log, o.RetryLimit = m, logTo(logs), 1 })
	for i := int32(1); i <= 20; i++ {
		if err := d.Submit(context.Background(), ev(i, fmt.Sprintf("vm-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	held := m.DestinationHeld.WithLabelValues("fake", "f")
	eventually(t, "the destination held", func() bool { return promtest.ToFloat64(held) == 1 })
	// Calls sent before the hold may still be finishing; from one probe
	// on, no other call may run beside it.
	var n0 int
	eventually(t, "at most one call in flight", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.peak["f"], n0 = p.calling["f"], len(p.calls)
		return p.calling["f"] <= 1
	})
	eventually(t, "ten more probes", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.calls) >= n0+10
	})
	p.mu.Lock()
	peak := p.peak["f"]
	p.mu.Unlock()
	if peak > 1 {
		t.Errorf("%d calls at once to a held destination, want one probe at a time", peak)
	}
	lines := d.Degraded()
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "processor fake: destination f held since ") ||
		!strings.HasSuffix(lines[0], "): ThrottlingException: Rate exceeded (request id 1)") {
		t.Errorf("degraded lines %q", lines)
	}
	if sink.len() != 0 {
		t.Errorf("a held destination's events were dead-lettered (attempts counted): %+v", sink.letters)
	}
	if n := promtest.ToFloat64(m.Deliveries.WithLabelValues("fake", "f", "failed")); n < 10 {
		t.Errorf("deliveries_total{result=failed} %v, want every probe counted", n)
	}

	down.Store(false)
	eventually(t, "all delivered after the outage", func() bool { return p.count("f") == 20 })
	// The processor records a delivery before its call returns: the hold
	// ends just after.
	eventually(t, "the hold over", func() bool { return promtest.ToFloat64(held) == 0 && len(d.Degraded()) == 0 })
	closeDispatcher(t, d)
	out := logs.String()
	if n := strings.Count(out, "destination held as a whole"); n != 1 {
		t.Errorf("outage logged %d times, want once:\n%s", n, out)
	}
	if n := strings.Count(out, "destination back"); n != 1 {
		t.Errorf("recovery logged %d times, want once:\n%s", n, out)
	}
}

// TestDispatcherHeldBatchLogsOnce: a batch call where some entries go
// through and others are throttled keeps the destination held (one outage,
// logged once), instead of each success ending the outage and the next
// throttled entry starting a new one.
func TestDispatcherHeldBatchLogsOnce(t *testing.T) {
	p := newFake("bus")
	p.limits = &BatchLimits{MaxEvents: 10}
	var throttled atomic.Bool
	throttled.Store(true)
	p.result = func(_ string, ev *Event, _ int) error {
		if ev.Entity == "vm-0" && throttled.Load() {
			return Unreachable(errors.New("ThrottlingException"))
		}
		return nil
	}
	logs := &testutil.SyncBuffer{}
	d := newTestDispatcher(batchingFake{p}, &memSink{}, func(o *DispatcherOptions) { o.Log = logTo(logs) })
	for i := int32(1); i <= 60; i++ {
		if err := d.Submit(context.Background(), ev(i, fmt.Sprintf("vm-%d", i%6))); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "everything but vm-0 delivered", func() bool { return p.count("bus") == 50 })
	// A call carrying vm-0 may not have run yet, its goroutine started
	// but not scheduled while the others delivered everything else.
	held := d.o.Metrics.DestinationHeld.WithLabelValues("fake", "bus")
	eventually(t, "the destination held", func() bool { return promtest.ToFloat64(held) == 1 })
	eventually(t, "ten calls", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.calls) >= 10
	})
	throttled.Store(false)
	eventually(t, "all delivered", func() bool { return p.count("bus") == 60 })
	closeDispatcher(t, d)
	if n := strings.Count(logs.String(), "destination held as a whole"); n != 1 {
		t.Errorf("one outage logged %d times:\n%s", n, logs.String())
	}
}

// TestDispatcherHungDestinationLeavesSlots: a destination whose calls hang
// until their context ends takes at most half the slots, and another
// destination's events are delivered while those calls still hang.
func TestDispatcherHungDestinationLeavesSlots(t *testing.T) {
	p := newFake()
	p.hang = "hung"
	d := newTestDispatcher(p, &memSink{}, func(o *DispatcherOptions) { o.Concurrency = 8 })
	ctx := context.Background()
	// The healthy function has had events before: it exists.
	if err := d.SubmitTo(ctx, ev(100, "vm-100"), []string{"ok"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the first event delivered", func() bool { return p.count("ok") == 1 })
	for i := int32(1); i <= 50; i++ {
		if err := d.SubmitTo(ctx, ev(i, fmt.Sprintf("vm-%d", i)), []string{"hung"}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "calls hanging", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.calling["hung"] >= 4
	})
	for i := int32(51); i <= 70; i++ {
		if err := d.SubmitTo(ctx, ev(i, fmt.Sprintf("vm-%d", i)), []string{"ok"}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "the healthy destination's events delivered", func() bool { return p.count("ok") == 21 })
	p.mu.Lock()
	hanging, peak := p.calling["hung"], p.peak["hung"]
	p.mu.Unlock()
	if hanging == 0 || peak > 4 {
		t.Errorf("hung destination: %d calls hanging, %d at most, want 1 to 4 of 8 slots", hanging, peak)
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := d.Close(short); err == nil {
		t.Error("Close reported nothing left in flight, with calls hanging")
	}
	if p.count("hung") != 0 {
		t.Error("a hanging call delivered")
	}
}

// TestDispatcherAloneUsesEverySlot: the half-the-slots cap applies only
// while there are several destinations; one alone (the EventBridge bus, a
// single function) keeps all of Concurrency.
func TestDispatcherAloneUsesEverySlot(t *testing.T) {
	p := newFake("f")
	p.gate = make(chan struct{})
	d := newTestDispatcher(p, &memSink{}, func(o *DispatcherOptions) { o.Concurrency = 8 })
	for i := int32(1); i <= 20; i++ {
		if err := d.Submit(context.Background(), ev(i, fmt.Sprintf("vm-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "every slot in use", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.calling["f"] == 8
	})
	close(p.gate)
	eventually(t, "all delivered", func() bool { return p.count("f") == 20 })
	closeDispatcher(t, d)
}

// TestDispatcherReapsIdleDestination: a destination idle for IdleTimeout
// (a function deleted, say) releases its goroutine and metric series; the
// next event for it creates it again.
func TestDispatcherReapsIdleDestination(t *testing.T) {
	p := newFake()
	p.gate = make(chan struct{})
	m := metrics.New()
	d := newTestDispatcher(p, &memSink{}, func(o *DispatcherOptions) { o.Metrics, o.IdleTimeout = m, 20*time.Millisecond })
	ctx := context.Background()
	before := destinationLoops()
	if err := d.SubmitTo(ctx, ev(1, "vm-1"), []string{"gone"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a call in flight", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.calling["gone"] == 1
	})
	if !hasSeries(t, m, "eventrouter_queue_depth", "gone") || destinationLoops() != before+1 {
		t.Fatal("no queue_depth series or no goroutine while the destination is in use")
	}
	close(p.gate)
	eventually(t, "delivered", func() bool { return p.count("gone") == 1 })
	families := []string{"eventrouter_queue_depth", "eventrouter_processor_deliveries_total", "eventrouter_destination_held"}
	eventually(t, "the idle destination released", func() bool {
		for _, f := range families {
			if hasSeries(t, m, f, "gone") {
				return false
			}
		}
		return destinationLoops() == before
	})
	p.mu.Lock()
	p.gate = make(chan struct{})
	p.mu.Unlock()
	if err := d.SubmitTo(ctx, ev(2, "vm-1"), []string{"gone"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a call in flight again", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.calling["gone"] == 1
	})
	if !hasSeries(t, m, "eventrouter_processor_deliveries_total", "gone") || destinationLoops() != before+1 {
		t.Error("no deliveries_total series or no goroutine once the destination is back")
	}
	close(p.gate)
	eventually(t, "delivered again", func() bool { return p.count("gone") == 2 })
	closeDispatcher(t, d)
}

// TestDispatcherReapRacesSubmit: with destinations reaped as soon as they
// are idle, events submitted meanwhile are all delivered (none pushed to a
// destination whose loop has ended).
func TestDispatcherReapRacesSubmit(t *testing.T) {
	p := newFake()
	d := newTestDispatcher(p, &memSink{}, func(o *DispatcherOptions) { o.IdleTimeout = time.Microsecond })
	const n = 300
	for i := int32(1); i <= n; i++ {
		if err := d.SubmitTo(context.Background(), ev(i, ""), []string{"d"}); err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			eventually(t, "delivered", func() bool { return p.count("d") == int(i) })
		}
	}
	eventually(t, "all delivered", func() bool { return p.count("d") == n })
	closeDispatcher(t, d)
}

// blockingSink is a dead-letter sink that is full: Write waits until its
// context ends.
type blockingSink struct{ writes atomic.Int32 }

func (s *blockingSink) Write(ctx context.Context, _ DeadLetter) error {
	s.writes.Add(1)
	<-ctx.Done()
	return fmt.Errorf("dead-letter sink full: %w", ctx.Err())
}

// TestDispatcherDeadLetterAtShutdown: a dead letter the sink could not take
// before shutdown leaves its event unacknowledged (a checkpointed router
// reads it again), not acknowledged as if kept.
func TestDispatcherDeadLetterAtShutdown(t *testing.T) {
	p := newFake("f")
	p.result = func(string, *Event, int) error { return Permanent(errors.New("400 bad request")) }
	sink := &blockingSink{}
	m := metrics.New()
	var finished atomic.Int32
	d := newTestDispatcher(p, sink, func(o *DispatcherOptions) {
		o.Metrics, o.Finished = m, func(*Event, string, string) { finished.Add(1) }
	})
	if err := d.Submit(context.Background(), ev(1, "vm-1")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the dead letter written", func() bool { return sink.writes.Load() == 1 })
	short, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := d.Close(short); err == nil {
		t.Error("Close reported nothing left in flight")
	}
	if wm, ok := d.Watermark(""); ok {
		t.Errorf("watermark %+v moved past an event whose dead letter was not kept", wm)
	}
	if finished.Load() != 0 {
		t.Error("the event was reported finished")
	}
	if v := promtest.ToFloat64(m.DeadLetters.WithLabelValues("fake", "rejected")); v != 0 {
		t.Errorf("dead_letters_total %v for a letter not kept", v)
	}
}
