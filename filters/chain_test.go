package filters

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
)

// funcFilter is a test double of our own Filter interface.
type funcFilter struct {
	name string
	f    func(ev *gateway.Event) Result
}

func (f funcFilter) Name() string { return f.name }
func (f funcFilter) Filter(_ context.Context, ev *gateway.Event) Result {
	return f.f(ev)
}

type subscriber struct{ subjects map[string]bool }

func (s subscriber) Subscription(context.Context) (gateway.Subscription, error) {
	return gateway.SubscriptionFunc(func(ev *gateway.Event) bool { return s.subjects[ev.Subject] }), nil
}

func newChain(m *metrics.Metrics, subjects ...string) *Chain {
	s := subscriber{subjects: map[string]bool{}}
	for _, x := range subjects {
		s.subjects[x] = true
	}
	return NewChain(NewRouting(s), slog.New(slog.NewTextHandler(io.Discard, nil)), m)
}

func TestChain(t *testing.T) {
	rename := funcFilter{"rename.wasm", func(ev *gateway.Event) Result {
		out := *ev
		out.Subject = "VmPoweredOnEvent"
		return Result{Verdict: Replace, Event: &out}
	}}
	dropAll := funcFilter{"drop.wasm", func(*gateway.Event) Result { return Result{Verdict: Drop} }}
	fail := funcFilter{"fail.wasm", func(*gateway.Event) Result { return Result{Verdict: Error, Err: errors.New("boom")} }}
	bogus := funcFilter{"bogus.wasm", func(*gateway.Event) Result { return Result{Verdict: 7} }}
	pass := funcFilter{"pass.wasm", func(*gateway.Event) Result { return Result{Verdict: Pass} }}

	tests := []struct {
		name        string
		user        []Filter
		subject     string
		wantSubject string // "" dropped
		wantErr     string
	}{
		{"no filters, subscribed", nil, "VmPoweredOnEvent", "VmPoweredOnEvent", ""},
		{"no filters, unsubscribed", nil, "VmRenamedEvent", "", ""},
		{"routing runs on the rewritten subject", []Filter{rename}, "VmRenamedEvent", "VmPoweredOnEvent", ""},
		{"drop stops the chain", []Filter{dropAll, rename}, "VmPoweredOnEvent", "", ""},
		{"pass then rewrite", []Filter{pass, rename}, "X", "VmPoweredOnEvent", ""},
		{"error dead-letters", []Filter{fail}, "VmPoweredOnEvent", "", "filter fail.wasm: boom"},
		{"verdict outside the ABI is an error", []Filter{bogus}, "VmPoweredOnEvent", "", "filter bogus.wasm: invalid verdict 7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newChain(metrics.New(), "VmPoweredOnEvent")
			c.SetUserFilters(tt.user)
			out, err := c.Run(context.Background(), &gateway.Event{Subject: tt.subject})
			if tt.wantErr != "" {
				var ce *ChainError
				if !errors.As(err, &ce) || err.Error() != tt.wantErr {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			if out != nil {
				got = out.Subject
			}
			if got != tt.wantSubject {
				t.Errorf("subject %q, want %q", got, tt.wantSubject)
			}
		})
	}
}

func TestChainMetricsAndReload(t *testing.T) {
	m := metrics.New()
	c := newChain(m, "A")
	drop := funcFilter{"drop.wasm", func(*gateway.Event) Result { return Result{Verdict: Drop} }}
	c.SetUserFilters([]Filter{drop})
	for range 3 {
		_, _ = c.Run(context.Background(), &gateway.Event{Subject: "A"})
	}
	if got := testutil.ToFloat64(m.FilterVerdicts.WithLabelValues("drop.wasm", "drop")); got != 3 {
		t.Errorf("drop verdicts %v", got)
	}
	// A reload without the module takes it out of /stats; events then pass.
	c.SetUserFilters(nil)
	out, _ := c.Run(context.Background(), &gateway.Event{Subject: "A"})
	if out == nil {
		t.Fatal("dropped after the dropping filter was removed")
	}
	if got := testutil.ToFloat64(m.FilterVerdicts.WithLabelValues(RoutingName, "pass")); got != 1 {
		t.Errorf("routing pass verdicts %v", got)
	}
}

// BenchmarkChainEmpty is the chain's own cost per event: the routing filter
// and metrics, no user filter.
func BenchmarkChainEmpty(b *testing.B) {
	c := newChain(metrics.New(), "A")
	ev := &gateway.Event{Subject: "A"}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if out, _ := c.Run(ctx, ev); out == nil {
			b.Fatal("dropped")
		}
	}
}

func TestChainFailedFilter(t *testing.T) {
	for _, tc := range []struct {
		name       string
		r          Result
		wantOut    bool
		wantTimed  bool
		wantErrStr string
	}{
		{"failed, on_error pass", Result{Verdict: Pass, Failed: true, Err: errors.New("trap")}, true, true, ""},
		{"failed, on_error drop", Result{Verdict: Drop, Failed: true, Err: errors.New("trap")}, false, true, ""},
		{"failed, on_error dead_letter", Result{Verdict: Error, Failed: true, Err: errors.New("trap")}, false, true, "filter f.wasm: trap"},
		{"not run (breaker open)", Result{Verdict: Pass, Failed: true, Skipped: true, Err: errors.New("open")}, true, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := metrics.New()
			c := newChain(m, "A")
			c.SetUserFilters([]Filter{funcFilter{"f.wasm", func(*gateway.Event) Result { return tc.r }}})
			out, err := c.Run(context.Background(), &gateway.Event{Subject: "A"})
			errStr := ""
			if err != nil {
				errStr = err.Error()
			}
			if (out != nil) != tc.wantOut || errStr != tc.wantErrStr {
				t.Fatalf("out %v, err %v", out, err)
			}
			if got := testutil.ToFloat64(m.FilterVerdicts.WithLabelValues("f.wasm", "error")); got != 1 {
				t.Errorf("error verdicts %v, want 1", got)
			}
			for _, v := range []string{"pass", "drop"} {
				if got := testutil.ToFloat64(m.FilterVerdicts.WithLabelValues("f.wasm", v)); got != 0 {
					t.Errorf("%s verdicts %v, want 0", v, got)
				}
			}
			if timed := histogramCount(t, m, "f.wasm") == 1; timed != tc.wantTimed {
				t.Errorf("duration observed: %v, want %v", timed, tc.wantTimed)
			}
		})
	}
}

func histogramCount(t *testing.T, m *metrics.Metrics, filter string) uint64 {
	t.Helper()
	var pb dto.Metric
	if err := m.FilterDuration.WithLabelValues(filter).(prometheus.Histogram).Write(&pb); err != nil {
		t.Fatal(err)
	}
	return pb.GetHistogram().GetSampleCount()
}

// gate is a filter that holds the events with subject "hold" until
// released, telling the test when one arrives.
type gate struct {
	name    string
	arrived chan struct{}
	release chan struct{}
}

func newGate(name string) *gate {
	return &gate{name: name, arrived: make(chan struct{}, 1), release: make(chan struct{})}
}

func (g *gate) Name() string { return g.name }
func (g *gate) Filter(_ context.Context, ev *gateway.Event) Result {
	if ev.Subject == "hold" {
		g.arrived <- struct{}{}
		<-g.release
	}
	return Result{Verdict: Pass}
}

func TestChainEventFinishesWithItsList(t *testing.T) {
	c := newChain(metrics.New(), "hold", "V1", "V2")
	rename := func(name, subject string) Filter {
		return funcFilter{name, func(ev *gateway.Event) Result {
			out := *ev
			out.Subject = subject
			return Result{Verdict: Replace, Event: &out}
		}}
	}
	g := newGate("gate.wasm")
	dropAll := funcFilter{"added.wasm", func(*gateway.Event) Result { return Result{Verdict: Drop} }}
	if idle := c.SetUserFilters([]Filter{g, rename("rename.wasm", "V1")}); !closed(idle) {
		t.Fatal("the empty list replaced without events in flight is not idle")
	}

	type result struct {
		out *gateway.Event
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := c.Run(context.Background(), &gateway.Event{Subject: "hold"})
		done <- result{out, err}
	}()
	<-g.arrived
	// A reload while the event is held in the first filter: a new version
	// of the second module and a module added after it that drops all.
	idle := c.SetUserFilters([]Filter{g, rename("rename.wasm", "V2"), dropAll})
	if closed(idle) {
		t.Fatal("the replaced list is reported idle with an event in it")
	}
	// A new event runs in the new list meanwhile.
	if out, err := c.Run(context.Background(), &gateway.Event{Subject: "x"}); out != nil || err != nil {
		t.Fatalf("new event: out %v, err %v, want dropped by the added module", out, err)
	}
	if closed(idle) {
		t.Fatal("the replaced list is reported idle with an event in it")
	}
	close(g.release)
	r := <-done
	if r.err != nil || r.out == nil || r.out.Subject != "V1" {
		t.Fatalf("held event: out %+v, err %v, want subject V1 from the list it started with", r.out, r.err)
	}
	select {
	case <-idle:
	case <-time.After(10 * time.Second): // bound only: the close is synchronous
		t.Fatal("the replaced list is not reported idle after its last event")
	}
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// TestChainNoEventInAnIdleList swaps lists while events run concurrently:
// no filter may run after its list was reported idle (the Manager closes
// its modules then).
func TestChainNoEventInAnIdleList(t *testing.T) {
	c := newChain(metrics.New(), "A")
	var violations atomic.Int64
	list := func() ([]Filter, *atomic.Bool) {
		var idle atomic.Bool
		f := funcFilter{"f.wasm", func(*gateway.Event) Result {
			runtime.Gosched() // widen the window between two filters
			if idle.Load() {
				violations.Add(1)
			}
			return Result{Verdict: Pass}
		}}
		return []Filter{f, f}, &idle
	}
	fs, idle := list()
	c.SetUserFilters(fs)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if out, err := c.Run(context.Background(), &gateway.Event{Subject: "A"}); out == nil || err != nil {
					t.Errorf("out %v, err %v", out, err)
					return
				}
			}
		}()
	}
	var waits sync.WaitGroup
	for range 500 {
		next, nextIdle := list()
		ch := c.SetUserFilters(next)
		waits.Add(1)
		go func(flag *atomic.Bool) {
			defer waits.Done()
			<-ch
			flag.Store(true)
		}(idle)
		idle = nextIdle
	}
	close(stop)
	wg.Wait()
	waits.Wait() // every replaced list became idle
	if n := violations.Load(); n > 0 {
		t.Fatalf("%d filter calls in a list already reported idle", n)
	}
}

// everything subscribes to every subject without allocating.
type everything struct{}

var matchAll = gateway.SubscriptionFunc(func(*gateway.Event) bool { return true })

func (everything) Subscription(context.Context) (gateway.Subscription, error) { return matchAll, nil }

func TestChainRunDoesNotAllocate(t *testing.T) {
	c := NewChain(NewRouting(everything{}), slog.New(slog.DiscardHandler), metrics.New())
	pass := funcFilter{"pass.wasm", func(*gateway.Event) Result { return Result{Verdict: Pass} }}
	c.SetUserFilters([]Filter{pass, pass})
	ev := &gateway.Event{Subject: "A"}
	ctx := context.Background()
	if n := testing.AllocsPerRun(100, func() { _, _ = c.Run(ctx, ev) }); n != 0 {
		t.Fatalf("%v allocations per event, want 0", n)
	}
}
