package filters

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
)

// Chain runs the user's filters in order, then the built-in routing filter.
// Each filter sees the previous one's output; a drop stops the chain. The
// user's filters are swapped atomically at a reload; an event already in the
// chain finishes with the list it started with, and SetUserFilters says when
// the replaced list has no event left in it, so that its filters are closed
// only then.
//
// A filter that returns Error asks for the event to be dead-lettered (a Wasm
// filter does so only with on_error "dead_letter"; its other policies turn
// an error into Pass or Drop themselves).
type Chain struct {
	user    atomic.Pointer[generation]
	mu      sync.Mutex // serialises SetUserFilters
	routing *instrumented
	log     *slog.Logger
	m       *metrics.Metrics
}

// generation is one list of user filters and the events running in it.
type generation struct {
	filters []*instrumented
	// events counts the Runs inside the list; once the list is retired
	// (replaced) and events drops to 0, idle is closed.
	events  atomic.Int64
	retired atomic.Bool
	closed  atomic.Bool
	idle    chan struct{}
}

// enter returns the current list with one more event in it. The second
// load closes the race with SetUserFilters: an event that counted itself
// into a list already retired (and maybe already reported idle) leaves it
// and takes the new one, so no event ever runs in a list reported idle.
func (c *Chain) enter() *generation {
	for {
		g := c.user.Load()
		g.events.Add(1)
		if c.user.Load() == g {
			return g
		}
		g.leave()
	}
}

func (g *generation) leave() {
	if g.events.Add(-1) == 0 && g.retired.Load() {
		g.signal()
	}
}

func (g *generation) signal() {
	if g.closed.CompareAndSwap(false, true) {
		close(g.idle)
	}
}

// ChainError is a filter's Error verdict, which dead-letters the event.
type ChainError struct {
	Filter string
	Err    error
}

func (e *ChainError) Error() string { return fmt.Sprintf("filter %s: %v", e.Filter, e.Err) }
func (e *ChainError) Unwrap() error { return e.Err }

// FilterName names the filter that failed.
func (e *ChainError) FilterName() string { return e.Filter }

// instrumented wraps a filter with its metric handles, looked up once.
type instrumented struct {
	f        Filter
	stat     *metrics.Stat // nil for the routing filter, which is not a module
	duration prometheus.Observer
	verdicts [4]prometheus.Counter
}

func (c *Chain) instrument(f Filter, stats bool) *instrumented {
	in := &instrumented{f: f, duration: c.m.FilterDuration.WithLabelValues(f.Name())}
	for v := Pass; v <= Error; v++ {
		in.verdicts[v] = c.m.FilterVerdicts.WithLabelValues(f.Name(), v.String())
	}
	if stats {
		in.stat = c.m.Stats.Register("filter:"+f.Name(), "filter", f.Name())
	}
	return in
}

// NewChain returns a chain with no user filters and routing as its last
// filter.
func NewChain(routing Filter, log *slog.Logger, m *metrics.Metrics) *Chain {
	c := &Chain{log: log, m: m}
	c.routing = c.instrument(routing, false)
	c.user.Store(&generation{filters: []*instrumented{}, idle: make(chan struct{})})
	return c
}

// SetUserFilters replaces the user's filters. Events already in the chain
// finish with the filters they started with; the returned channel is closed
// once none is left in the replaced list, when its filters may be closed.
func (c *Chain) SetUserFilters(fs []Filter) (replacedIdle <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	next := &generation{filters: make([]*instrumented, len(fs)), idle: make(chan struct{})}
	keep := map[string]bool{}
	for i, f := range fs {
		next.filters[i] = c.instrument(f, true)
		keep[f.Name()] = true
	}
	old := c.user.Swap(next)
	old.retired.Store(true)
	if old.events.Load() == 0 {
		old.signal()
	}
	for _, in := range old.filters {
		if !keep[in.f.Name()] {
			c.m.Stats.Unregister("filter:" + in.f.Name())
		}
	}
	return old.idle
}

// Run passes ev through the chain. It returns the event to deliver, nil when
// a filter dropped it, or a *ChainError when a filter asks for it to be
// dead-lettered.
func (c *Chain) Run(ctx context.Context, ev *gateway.Event) (*gateway.Event, error) {
	// An empty list has nothing to close: an event need not count itself
	// into it (the common case of a router without filters).
	if len(c.user.Load().filters) > 0 {
		var err error
		if ev, err = c.runUser(ctx, ev); ev == nil || err != nil {
			return nil, err
		}
	}
	// The routing filter runs outside the user's list: it may wait long
	// for a processor's routing, and must not keep a replaced list open.
	return c.apply(ctx, c.routing, ev)
}

func (c *Chain) runUser(ctx context.Context, ev *gateway.Event) (*gateway.Event, error) {
	g := c.enter()
	defer g.leave()
	for _, in := range g.filters {
		out, err := c.apply(ctx, in, ev)
		if out == nil || err != nil {
			return nil, err
		}
		ev = out
	}
	return ev, nil
}

func (c *Chain) apply(ctx context.Context, in *instrumented, ev *gateway.Event) (*gateway.Event, error) {
	start := time.Now()
	r := in.f.Filter(ctx, ev)
	if !r.Skipped {
		in.duration.Observe(time.Since(start).Seconds())
	}
	v := r.Verdict
	if v < Pass || v > Error {
		r = Result{Verdict: Error, Err: fmt.Errorf("invalid verdict %d", int(v))}
		v = Error
	}
	// A failed filter counts as an error verdict whatever its on_error
	// policy made of it; the event goes on as that policy says.
	counted := v
	if r.Failed {
		counted = Error
	}
	in.verdicts[counted].Inc()
	if in.stat != nil {
		in.stat.VerdictAt(counted.String(), start)
	}
	switch v {
	case Pass:
		return ev, nil
	case Drop:
		return nil, nil
	case Replace:
		if r.Event == nil {
			return nil, &ChainError{Filter: in.f.Name(), Err: fmt.Errorf("verdict replace without an event")}
		}
		return r.Event, nil
	}
	err := r.Err
	if err == nil {
		err = fmt.Errorf("filter error")
	}
	return nil, &ChainError{Filter: in.f.Name(), Err: err}
}
