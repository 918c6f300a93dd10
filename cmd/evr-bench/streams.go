package main

// The -streams mode: one router following N simulators, each its own
// vmware_vcenter stream entry, delivering everything through one stdout
// processor. Every count of streams gets a fresh router; the counts are
// measured in turn, -repeat times, interleaved, so that the machine's load
// changes hit every count alike.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// streamVMs is how many VMs each simulator of a -streams run has.
const streamVMs = 8

// streamsResult is what one router with n streams measured.
type streamsResult struct {
	n                         int
	ready                     time.Duration
	steady, burst             []time.Duration // latencies, sorted
	steadyWorstP99            time.Duration   // the p99 of the slowest stream
	steadyCPU, steadyWall     time.Duration
	idleCPU, idleWall         time.Duration
	burstCreate, burstSpan    time.Duration
	burstDrain, burstCPU      time.Duration
	mem                       procStat
	shutdown                  time.Duration
	exitCode, dups, misorders int
}

// multi is one router run of the -streams mode.
type multi struct {
	*routerProc
	o   options
	vcs []*vcenter
	rec *recorder
}

// runStreams starts a simulator per stream of the largest count, then
// measures every count -repeat times.
func runStreams(ctx context.Context, o options) (_ *streamsReport, err error) {
	if err := checkRouter(o.router); err != nil {
		return nil, err
	}
	vcs := make([]*vcenter, slices.Max(o.streams))
	defer func() {
		for _, vc := range vcs {
			if vc != nil {
				vc.close()
			}
		}
	}()
	for i := range vcs {
		if vcs[i], err = startVCenter(ctx, streamVMs); err != nil {
			return nil, err
		}
	}
	rep := &streamsReport{o: o, env: environment(), routerVersion: routerVersion(o.router), results: map[int][]streamsResult{}}
	for range o.repeat {
		for _, n := range o.streams {
			r, err := measureStreams(ctx, o, vcs[:n])
			if err != nil {
				return nil, err
			}
			rep.results[n] = append(rep.results[n], r)
			if r.dups > 0 || r.misorders > 0 || r.exitCode != 0 {
				rep.problems = append(rep.problems, fmt.Sprintf("%d streams: %d events delivered twice, %d out of order per VM, exit code %d",
					n, r.dups, r.misorders, r.exitCode))
			}
		}
	}
	rep.loadEnd = loadAverage()
	return rep, nil
}

// measureStreams runs the router with one stream per simulator of vcs
// through the phases: start, steady, idle, burst, finish.
func measureStreams(ctx context.Context, o options, vcs []*vcenter) (streamsResult, error) {
	m := &multi{routerProc: &routerProc{path: o.router}, o: o, vcs: vcs, rec: newRecorder()}
	defer m.close()
	entries := make([]any, 0, len(vcs)+1)
	for i, vc := range vcs {
		entries = append(entries, vc.streamEntry(fmt.Sprintf("vc-%02d", i+1)))
	}
	entries = append(entries, map[string]any{"type": "processor", "provider": "stdout"})
	r := streamsResult{n: len(vcs)}
	if err := m.writeConfig(entries...); err != nil {
		return r, err
	}
	for _, phase := range []func(context.Context, *streamsResult) error{m.start, m.steadyPhase, m.idlePhase, m.burstPhase, m.finish} {
		if err := phase(ctx, &r); err != nil {
			return r, fmt.Errorf("%d streams: %w\n%s", len(vcs), err, m.logTail())
		}
	}
	return r, nil
}

// start spawns the router, waits for /readyz 200 (every stream connected),
// then posts an event every 5 ms to each stream until one of each is
// delivered (see bench.start for why not earlier).
func (m *multi) start(ctx context.Context, r *streamsResult) error {
	t0 := time.Now()
	if err := m.spawn(m.rec); err != nil {
		return err
	}
	deadline := time.After(30 * time.Second)
	if err := m.pollReady(ctx, deadline); err != nil {
		return err
	}
	r.ready = time.Since(t0)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		delivered := map[string]bool{}
		for _, d := range m.rec.after(0) {
			delivered[d.source] = true
		}
		if len(delivered) == len(m.vcs) {
			break
		}
		for _, vc := range m.vcs {
			if !delivered[vc.address()] {
				if err := vc.post(ctx); err != nil {
					return err
				}
			}
		}
		select {
		case <-tick.C:
		case <-m.exited:
			return errors.New("the router exited during start-up")
		case <-deadline:
			return fmt.Errorf("events of only %d of %d streams delivered within 30 s of start", len(delivered), len(m.vcs))
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	// Wait for the last event posted to each, so none of the start-up
	// events is counted in the steady phase.
	last := map[string]int32{}
	for _, vc := range m.vcs {
		_, mine, err := vc.newestKeys(ctx)
		if err != nil {
			return err
		}
		last[vc.address()] = mine
	}
	return m.rec.wait(ctx, phaseLimit, m.exited, "start-up events", func(ds []delivery) bool {
		got := map[string]bool{}
		for _, d := range ds {
			if d.key == last[d.source] {
				got[d.source] = true
			}
		}
		return len(got) == len(last)
	})
}

// begin starts a phase: it returns the newest event key of every
// stream's vCenter and the router's CPU time and memory.
func (m *multi) begin(ctx context.Context) (map[string]int32, procStat, error) {
	from := map[string]int32{}
	for _, vc := range m.vcs {
		k, _, err := vc.newestKeys(ctx)
		if err != nil {
			return nil, procStat{}, err
		}
		from[vc.address()] = k
	}
	s, err := m.stat()
	return from, s, err
}

// phase waits until every stream has delivered n events above its mark
// and returns those deliveries.
func (m *multi) phase(ctx context.Context, what string, from map[string]int32, n int) ([]delivery, error) {
	err := m.rec.wait(ctx, phaseLimit, m.exited, what, func(all []delivery) bool {
		got := map[string]int{}
		for _, d := range all {
			if k, ok := from[d.source]; ok && d.key > k {
				got[d.source]++
			}
		}
		for src := range from {
			if got[src] < n {
				return false
			}
		}
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("%w (%d of %d events delivered)", err, len(m.rec.afterEach(from)), n*len(from))
	}
	return m.rec.afterEach(from), nil
}

// steadyPhase posts -rate events/s to every stream for -duration, spread
// evenly: one post every 1/(rate × streams) s, round robin.
func (m *multi) steadyPhase(ctx context.Context, r *streamsResult) error {
	from, cpu0, err := m.begin(ctx)
	if err != nil {
		return err
	}
	t0 := time.Now()
	per := max(1, int(m.o.rate*m.o.duration.Seconds()))
	tick := time.NewTicker(time.Duration(float64(time.Second) / (m.o.rate * float64(len(m.vcs)))))
	defer tick.Stop()
	for i := range per * len(m.vcs) {
		if i > 0 {
			select {
			case <-tick.C:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if err := m.vcs[i%len(m.vcs)].post(ctx); err != nil {
			return err
		}
	}
	ds, err := m.phase(ctx, "steady phase", from, per)
	if err != nil {
		return err
	}
	cpu1, err := m.stat()
	if err != nil {
		return err
	}
	r.steadyCPU, r.steadyWall = cpu1.cpu-cpu0.cpu, time.Since(t0)
	r.steady = latencies(ds)
	bySource := map[string][]delivery{}
	for _, d := range ds {
		bySource[d.source] = append(bySource[d.source], d)
	}
	for _, sds := range bySource {
		r.steadyWorstP99 = max(r.steadyWorstP99, percentile(latencies(sds), 99))
	}
	return nil
}

// idlePhase measures the router's CPU while no event comes for -idle.
func (m *multi) idlePhase(ctx context.Context, r *streamsResult) error {
	cpu0, err := m.stat()
	if err != nil {
		return err
	}
	t0 := time.Now()
	select {
	case <-time.After(m.o.idle):
	case <-m.exited:
		return errors.New("idle phase: the router exited")
	case <-ctx.Done():
		return ctx.Err()
	}
	cpu1, err := m.stat()
	if err != nil {
		return err
	}
	r.idleCPU, r.idleWall = cpu1.cpu-cpu0.cpu, time.Since(t0)
	return nil
}

// burstPhase posts -burst events to every stream at once: one client per
// simulator (two with a single stream, as the single-stream bench does).
func (m *multi) burstPhase(ctx context.Context, r *streamsResult) error {
	from, cpu0, err := m.begin(ctx)
	if err != nil {
		return err
	}
	if err := postBurst(ctx, m.vcs, m.o.burst, max(1, burstPosters/len(m.vcs))); err != nil {
		return err
	}
	ds, err := m.phase(ctx, "burst", from, m.o.burst)
	if err != nil {
		return err
	}
	cpu1, err := m.stat()
	if err != nil {
		return err
	}
	first, lastCreated, lastAt := span(ds)
	r.burst = latencies(ds)
	r.burstCreate, r.burstSpan, r.burstDrain = lastCreated.Sub(first), lastAt.Sub(first), lastAt.Sub(lastCreated)
	r.burstCPU = cpu1.cpu - cpu0.cpu
	return nil
}

// finish reads the router's memory, checks order and duplicates, and stops
// the router with SIGTERM.
func (m *multi) finish(_ context.Context, r *streamsResult) error {
	var err error
	if r.mem, err = m.stat(); err != nil {
		return err
	}
	r.dups, r.misorders, _ = checkOrder(m.rec.after(0))
	r.shutdown, r.exitCode, err = m.stop()
	return err
}

// streamsReport is every result of a -streams run, by number of streams.
type streamsReport struct {
	o                     options
	command, env, loadEnd string
	routerVersion         string
	results               map[int][]streamsResult
	problems              []string
}

// figure is one row of the report: a value of a result, formatted.
type figure struct {
	name   string
	value  func(streamsResult) float64
	format func(float64) string
}

func (r *streamsReport) figures() []figure {
	o := r.o
	ms := func(v float64) string { return fmt.Sprintf("%.1f ms", v) }
	durMS := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	pct := func(v float64) string { return fmt.Sprintf("%.1f%%", v) }
	perSec := func(v float64) string { return fmt.Sprintf("%.0f/s", v) }
	sec := func(v float64) string { return fmt.Sprintf("%.3f s", v) }
	mbf := func(v float64) string { return fmt.Sprintf("%.1f MB", v) }
	n := func(s streamsResult) float64 { return float64(s.n) }
	steady := fmt.Sprintf("steady, %g events/s per stream for %v", o.rate, o.duration)
	burst := fmt.Sprintf("burst, %d events per stream at once", o.burst)
	return []figure{
		{"spawn to /readyz 200 (every stream connected)", func(s streamsResult) float64 { return durMS(s.ready) }, ms},
		{steady + ": latency p50", func(s streamsResult) float64 { return durMS(percentile(s.steady, 50)) }, ms},
		{steady + ": latency p99, all streams", func(s streamsResult) float64 { return durMS(percentile(s.steady, 99)) }, ms},
		{steady + ": latency p99 of the slowest stream", func(s streamsResult) float64 { return durMS(s.steadyWorstP99) }, ms},
		{steady + ": router CPU, % of one core", steadyCore, pct},
		{steady + ": router CPU per stream", func(s streamsResult) float64 { return steadyCore(s) / n(s) }, pct},
		{steady + ": router CPU per 1,000 events", func(s streamsResult) float64 { return s.steadyCPU.Seconds() * 1000 / float64(max(len(s.steady), 1)) }, sec},
		{fmt.Sprintf("idle %v: router CPU, %% of one core", o.idle), idleCore, pct},
		{"idle: router CPU per stream", func(s streamsResult) float64 { return idleCore(s) / n(s) }, pct},
		{burst + ": creation rate, all streams", func(s streamsResult) float64 { return float64(len(s.burst)) / max(s.burstCreate.Seconds(), 1e-9) }, perSec},
		{burst + ": delivered throughput, all streams", func(s streamsResult) float64 { return float64(len(s.burst)) / max(s.burstSpan.Seconds(), 1e-9) }, perSec},
		{burst + ": delivered throughput per stream", func(s streamsResult) float64 { return float64(len(s.burst)) / max(s.burstSpan.Seconds(), 1e-9) / n(s) }, perSec},
		{burst + ": drain (last delivery − last CreatedTime)", func(s streamsResult) float64 { return durMS(s.burstDrain) }, ms},
		{burst + ": latency p99", func(s streamsResult) float64 { return durMS(percentile(s.burst, 99)) }, ms},
		{burst + ": router CPU per 1,000 events", func(s streamsResult) float64 { return s.burstCPU.Seconds() * 1000 / float64(max(len(s.burst), 1)) }, sec},
		{"router RSS after the run (VmRSS)", func(s streamsResult) float64 { return toMB(s.mem.rss) }, mbf},
		{"router RssAnon (its own memory) after the run", anonMB, mbf},
		{"router peak RSS (VmHWM)", func(s streamsResult) float64 { return toMB(s.mem.hwm) }, mbf},
		{"SIGTERM to exit", func(s streamsResult) float64 { return durMS(s.shutdown) }, ms},
	}
}

// steadyCore, idleCore and anonMB are the figures the cost of one more
// stream is computed from.
func steadyCore(s streamsResult) float64 { return core(s.steadyCPU, s.steadyWall) }
func idleCore(s streamsResult) float64   { return core(s.idleCPU, s.idleWall) }
func anonMB(s streamsResult) float64     { return toMB(s.mem.anon) }

// core is cpu as a percentage of one core over wall.
func core(cpu, wall time.Duration) float64 { return 100 * cpu.Seconds() / max(wall.Seconds(), 1e-9) }

func toMB(kb int64) float64 { return float64(kb) * 1024 / 1e6 }

// bare formats v without its unit, for a range beside a formatted value.
func (f figure) bare(v float64) string {
	s := f.format(v)
	return strings.TrimRight(s, " abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ%/")
}

// median of the figure over the results, and its range.
func (f figure) median(rs []streamsResult) (med, lo, hi float64) {
	vs := make([]float64, len(rs))
	for i, r := range rs {
		vs[i] = f.value(r)
	}
	slices.Sort(vs)
	med = vs[len(vs)/2]
	if len(vs)%2 == 0 {
		med = (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2
	}
	return med, vs[0], vs[len(vs)-1]
}

// String is the report in Markdown: a table with a column per number of
// streams (the median of the repeats, and their range), the cost of one
// more stream, then the method.
func (r *streamsReport) String() string {
	o := r.o
	w := &strings.Builder{}
	fmt.Fprintf(w, "## vmware-event-router with several streams (one stdout processor takes all)\n\n`%s`\n\n", r.command)
	fmt.Fprintf(w, "router %s; %s; load average %s at the end; a simulator with %d VMs per stream", r.routerVersion, r.env, r.loadEnd, streamVMs)
	if o.repeat > 1 {
		fmt.Fprintf(w, "; each figure is the median of %d runs (range in brackets), the counts of streams interleaved", o.repeat)
	}
	w.WriteString("\n\n| measure |")
	for _, n := range o.streams {
		fmt.Fprintf(w, " %d stream%s |", n, plural(n))
	}
	w.WriteString("\n|---|" + strings.Repeat("---|", len(o.streams)) + "\n")
	figs := r.figures()
	for _, f := range figs {
		fmt.Fprintf(w, "| %s |", f.name)
		for _, n := range o.streams {
			med, lo, hi := f.median(r.results[n])
			cell := f.format(med)
			if o.repeat > 1 {
				cell += " (" + f.bare(lo) + "–" + f.bare(hi) + ")"
			}
			fmt.Fprintf(w, " %s |", cell)
		}
		w.WriteString("\n")
	}
	if lo, hi := slices.Min(o.streams), slices.Max(o.streams); hi > lo {
		d := func(v func(streamsResult) float64) float64 {
			a, _, _ := figure{value: v}.median(r.results[lo])
			b, _, _ := figure{value: v}.median(r.results[hi])
			return (b - a) / float64(hi-lo)
		}
		fmt.Fprintf(w, "\nEach stream beyond %d (from the medians at %d and %d streams): %+.1f%% of a core at %g events/s, %+.1f%% idle, %+.2f MB RssAnon.\n",
			lo, lo, hi, d(steadyCore), o.rate, d(idleCore), d(anonMB))
	}
	w.WriteString("\n" + streamsMethod)
	return w.String()
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// streamsMethod is printed under every -streams report.
const streamsMethod = `Method: the bench runs one govmomi simulator (VPX model, TLS on 127.0.0.1, its own instance
UUID) per stream in its own process, and for each count of streams a fresh router binary as a
child process with one vmware_vcenter stream entry per simulator (named vc-01, vc-02, ...) and
one stdout processor taking every stream. Start: /readyz 200 means every stream is connected;
then each stream gets an event every 5 ms until one of each is delivered. Steady: -rate events/s
per stream for -duration, posted round robin, evenly spaced. Latency is CreatedTime to the
moment the bench reads the CloudEvent line (one machine, one clock); the slowest stream is the
one with the highest p99. Idle: -idle without events. Burst: -burst events per stream, posted to
all simulators at once (one client per simulator, two for a single stream); throughput =
events / (last delivery − first CreatedTime), which is bounded by how fast the simulators create
events on the same CPUs. CPU is utime+stime of the router from /proc/PID/stat over each phase
(10 ms resolution), as a share of one core over the phase's wall time; memory is VmRSS, RssAnon
and VmHWM of /proc/PID/status after the burst. The simulators release WaitForUpdatesEx results
on a 20 ms tick, each on its own, so latency has a floor of 0-20 ms per event however fast the
router is; each simulator keeps about 1,000 events per collector, so -burst is at most 900 per
stream. The bench and the simulators share the machine's CPUs with the router.
`
