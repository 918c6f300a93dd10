package filters

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
)

// Chain runs the user's filters in order, then the built-in routing filter.
// Each filter sees the previous one's output; a drop stops the chain. The
// user's filters are swapped atomically at a reload; an event already in the
// chain finishes with the set it started with.
//
// A filter that returns Error asks for the event to be dead-lettered (a Wasm
// filter does so only with on_error "dead_letter"; its other policies turn
// an error into Pass or Drop themselves).
type Chain struct {
	user    atomic.Pointer[[]*instrumented]
	routing *instrumented
	log     *slog.Logger
	m       *metrics.Metrics
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
	empty := []*instrumented{}
	c.user.Store(&empty)
	return c
}

// SetUserFilters replaces the user's filters. Events already in the chain
// finish with the filters they started with: the caller closes the old
// filters only once their in-flight calls have returned.
func (c *Chain) SetUserFilters(fs []Filter) {
	old := *c.user.Load()
	next := make([]*instrumented, len(fs))
	keep := map[string]bool{}
	for i, f := range fs {
		next[i] = c.instrument(f, true)
		keep[f.Name()] = true
	}
	c.user.Store(&next)
	for _, in := range old {
		if !keep[in.f.Name()] {
			c.m.Stats.Unregister("filter:" + in.f.Name())
		}
	}
}

// Run passes ev through the chain. It returns the event to deliver, nil when
// a filter dropped it, or a *ChainError when a filter asks for it to be
// dead-lettered.
func (c *Chain) Run(ctx context.Context, ev *gateway.Event) (*gateway.Event, error) {
	for _, in := range *c.user.Load() {
		out, err := c.apply(ctx, in, ev)
		if out == nil || err != nil {
			return nil, err
		}
		ev = out
	}
	return c.apply(ctx, c.routing, ev)
}

func (c *Chain) apply(ctx context.Context, in *instrumented, ev *gateway.Event) (*gateway.Event, error) {
	start := time.Now()
	r := in.f.Filter(ctx, ev)
	in.duration.Observe(time.Since(start).Seconds())
	v := r.Verdict
	if v < Pass || v > Error {
		r = Result{Verdict: Error, Err: fmt.Errorf("invalid verdict %d", int(v))}
		v = Error
	}
	in.verdicts[v].Inc()
	if in.stat != nil {
		in.stat.Verdict(v.String())
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
