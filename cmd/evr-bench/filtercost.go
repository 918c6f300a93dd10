package main

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// filterCostTarget is issue 16's bound on what a read+replace filter may
// add: the router's CPU in a burst with the filter, at most this many times
// its CPU without it.
const filterCostTarget = 1.25

// filterCost is the report of -filter with -repeat: pairs of runs, the
// router without the filter then with it, interleaved so both see the same
// machine (a burst's CPU moves ±50% from run to run here).
type filterCost struct {
	o                options
	command, env     string
	without, with    []float64 // router CPU per 1,000 events in the burst, s
	steadyW, steadyF []float64 // and in the steady phase
	problems         []string
	routerVersion    string
}

func runFilterCost(ctx context.Context, o options) (*filterCost, error) {
	r := &filterCost{o: o, env: environment(), routerVersion: routerVersion(o.router)}
	for i := range o.repeat {
		for _, filtered := range []bool{false, true} {
			oo := o
			if !filtered {
				oo.filter, oo.filterCfg = "", ""
			}
			rep, err := runOnce(ctx, oo)
			if err != nil {
				return nil, fmt.Errorf("pair %d of %d, %s: %w", i+1, o.repeat, map[bool]string{false: "without the filter", true: "with the filter"}[filtered], err)
			}
			for _, p := range rep.problems {
				r.problems = append(r.problems, fmt.Sprintf("pair %d: %s", i+1, p))
			}
			burst := rep.burstCPU.Seconds() * 1000 / float64(max(len(rep.burstLat), 1))
			steady := rep.steadyCPU.Seconds() * 1000 / float64(max(len(rep.steady), 1))
			if filtered {
				r.with, r.steadyF = append(r.with, burst), append(r.steadyF, steady)
			} else {
				r.without, r.steadyW = append(r.without, burst), append(r.steadyW, steady)
			}
		}
	}
	return r, nil
}

// runOnce is one whole run of the bench.
func runOnce(ctx context.Context, o options) (*report, error) {
	b, err := newBench(ctx, o)
	if err != nil {
		return nil, err
	}
	defer b.close()
	r, err := b.run(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w\n%s", err, b.logTail())
	}
	return r, nil
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func (r *filterCost) String() string {
	w := &strings.Builder{}
	fmt.Fprintf(w, "## vmware-event-router: what the Wasm filter %s costs (processor %s)\n\n`%s`\n\nrouter %s; %s\n\n",
		filepath.Base(r.o.filter), r.o.processor, r.command, r.routerVersion, r.env)
	w.WriteString("| measure | without the filter | with the filter | ratio | target |\n|---|---|---|---|---|\n")
	perRun := func(v []float64) string {
		s := make([]string, len(v))
		for i, x := range v {
			s[i] = fmt.Sprintf("%.3f", x)
		}
		return strings.Join(s, " ")
	}
	bw, bf := median(r.without), median(r.with)
	ratio := bf / max(bw, 1e-9)
	fmt.Fprintf(w, "| router CPU per 1,000 events, burst of %d (median of %d) | %.3f s | %.3f s | %.2f× | %s |\n",
		r.o.burst, len(r.with), bw, bf, ratio, verdict(fmt.Sprintf("≤ %.2f×", filterCostTarget), ratio <= filterCostTarget, ""))
	sw, sf := median(r.steadyW), median(r.steadyF)
	fmt.Fprintf(w, "| router CPU per 1,000 events, steady phase (%v at %g/s; median) | %.3f s | %.3f s | %.2f× | |\n",
		r.o.duration, r.o.rate, sw, sf, sf/max(sw, 1e-9))
	fmt.Fprintf(w, "| burst, each run (s per 1,000 events) | %s | %s | | |\n", perRun(r.without), perRun(r.with))
	fmt.Fprintf(w, "\nMethod: %d pairs of whole runs (the single-run report's phases), the router without the\n"+
		"filter then with it, so both see the same machine; CPU as in the single-run report. A burst's\n"+
		"CPU depends on how fast the simulator creates its events (the slower, the fewer per update and\n"+
		"the more CPU per event), so single runs scatter: compare the medians.\n", len(r.with))
	return w.String()
}

// filterCostPhases are the phases a filter-cost pair runs unless set: a
// short steady phase and no idle phase, the burst being the measure.
func filterCostPhases(set map[string]bool, o *options) {
	if !set["duration"] {
		o.duration = time.Second
	}
	if !set["idle"] {
		o.idle = 0
	}
}
