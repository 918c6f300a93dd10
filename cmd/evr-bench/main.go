// Command evr-bench is the end-to-end benchmark of vmware-event-router: it
// runs the real daemon binary against govmomi's vCenter simulator, started
// in this process, posts events through the simulator's API and times when
// they come out of the router (on its stdout, or at an OpenFaaS function
// served by this process). It prints a Markdown report with the method.
//
//	go run ./cmd/evr-bench -router bin/vmware-event-router
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	// maxBurst keeps a burst within the simulator's history (about 1,000
	// events per collector): a larger one would be pruned before it is read.
	maxBurst = 900
	// burstPosters post a burst concurrently: a second client overlaps
	// one client's round trip with the simulator's work, more only contend
	// for the simulator's locks (measured: 2 clients post fastest).
	burstPosters = 2
	// openfaasVMs is how many distinct VMs the OpenFaaS run spreads its
	// events over (order is kept per VM, so this bounds parallelism).
	openfaasVMs = 64
	// maxStreams bounds -streams: a simulator per stream runs in this
	// process.
	maxStreams = 32
	// phaseLimit bounds the wait for a phase's events to be delivered.
	phaseLimit = 2 * time.Minute
)

type options struct {
	router    string
	rate      float64
	duration  time.Duration
	idle      time.Duration
	burst     int
	processor string
	fnDelay   time.Duration
	quick     bool
	csv       string
	streams   []int // -streams: the counts of streams to measure
	repeat    int
	filter    string // -filter: a Wasm module the router runs on every event
	filterCfg string
}

func main() {
	if addr := os.Getenv(referenceEnv); addr != "" {
		os.Exit(runReferenceChild(addr))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	// fail reports on stderr; there is nowhere to report a failure to write there.
	fail := func(code int, format string, a ...any) int {
		_, _ = fmt.Fprintf(stderr, "evr-bench: "+format+"\n", a...)
		return code
	}
	o, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return fail(2, "%v", err)
	}
	command := strings.Join(append([]string{"evr-bench"}, args...), " ")
	// done writes a report and fails the run when it found problems.
	done := func(report string, problems []string) int {
		if _, err := io.WriteString(stdout, report); err != nil {
			return fail(1, "writing the report: %v", err)
		}
		if len(problems) > 0 {
			return fail(1, "%s", strings.Join(problems, "; "))
		}
		return 0
	}
	switch {
	case len(o.streams) > 0:
		r, err := runStreams(ctx, o)
		if err != nil {
			return fail(1, "%v", err)
		}
		r.command = command
		return done(r.String(), r.problems)
	case o.filter != "" && o.repeat > 1:
		r, err := runFilterCost(ctx, o)
		if err != nil {
			return fail(1, "%v", err)
		}
		r.command = command
		return done(r.String(), r.problems)
	}
	b, err := newBench(ctx, o)
	if err != nil {
		return fail(1, "%v", err)
	}
	defer b.close()
	r, err := b.run(ctx)
	if err != nil {
		return fail(1, "%v\n%s", err, b.logTail())
	}
	r.command = command
	if o.csv != "" {
		if err := b.rec.writeCSV(o.csv); err != nil {
			return fail(1, "-csv: %v", err)
		}
	}
	return done(r.String(), r.problems)
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("evr-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.router, "router", "bin/vmware-event-router", "the router binary to run")
	fs.Float64Var(&o.rate, "rate", 5, "events/s in the steady phase")
	fs.DurationVar(&o.duration, "duration", 60*time.Second, "length of the steady phase")
	fs.DurationVar(&o.idle, "idle", 60*time.Second, "idle time before the single event of the idle phase")
	fs.IntVar(&o.burst, "burst", maxBurst, "events in the burst (at most 900)")
	fs.StringVar(&o.processor, "processor", "stdout", "processor to deliver through: stdout, openfaas or cloudevents (a CloudEvents sink on sdk-go, binary mode)")
	fs.DurationVar(&o.fnDelay, "fn-delay", 0, "how long the OpenFaaS function (or the CloudEvents sink) takes per call")
	fs.BoolVar(&o.quick, "quick", false, "a run of a few seconds (overrides -rate, -duration, -idle, -burst)")
	fs.StringVar(&o.csv, "csv", "", "also write every delivery (key, VM, created, delivered, latency) to this CSV file")
	fs.Func("streams", "measure several streams instead: these counts of streams (e.g. 1,4,16), one simulator each, one stdout processor taking all; -rate and -burst are per stream (defaults 10 and 300), -duration 10s, -idle 5s", func(s string) error {
		for f := range strings.SplitSeq(s, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 || n > maxStreams {
				return fmt.Errorf("must be a comma-separated list of counts from 1 to %d, got %q", maxStreams, f)
			}
			o.streams = append(o.streams, n)
		}
		return nil
	})
	fs.StringVar(&o.filter, "filter", "", "a Wasm filter module (.wasm) for the router to run on every event, to measure its cost")
	fs.StringVar(&o.filterCfg, "filter-config", "", "the -filter module's config option")
	fs.IntVar(&o.repeat, "repeat", 1, "with -streams: measure every count this many times, interleaved, and report the medians; with -filter: run this many pairs of runs, without the filter then with it, and report what it costs (the steady phase 1s and no idle phase unless set)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if len(o.streams) > 0 {
		// Short phases, so that 1, 4 and 16 streams fit in a few minutes
		// and can be repeated.
		for name, v := range map[string]func(){
			"rate": func() { o.rate = 10 }, "duration": func() { o.duration = 10 * time.Second },
			"idle": func() { o.idle = 5 * time.Second }, "burst": func() { o.burst = 300 },
		} {
			if !set[name] {
				v()
			}
		}
	}
	if o.filter != "" && o.repeat > 1 {
		filterCostPhases(set, &o)
	}
	if o.quick {
		o.rate, o.duration, o.idle, o.burst = 20, time.Second, time.Second, 100
		if len(o.streams) > 0 {
			o.burst = 50
		}
	}
	switch {
	case o.repeat < 1:
		return o, fmt.Errorf("-repeat: must be at least 1, got %d", o.repeat)
	case o.repeat > 1 && len(o.streams) == 0 && o.filter == "":
		return o, errors.New("-repeat: only with -streams or -filter")
	case o.repeat > 1 && o.csv != "":
		return o, errors.New("-csv: only for a single run, without -repeat")
	case len(o.streams) > 0 && o.filter != "":
		return o, errors.New("-filter: only without -streams")
	case len(o.streams) > 0 && (o.processor != "stdout" || o.csv != ""):
		return o, errors.New("-streams: measures the stdout processor, without -processor or -csv")
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case o.rate <= 0 || math.IsInf(o.rate, 0) || math.IsNaN(o.rate):
		return o, fmt.Errorf("-rate: must be above 0, got %v", o.rate)
	case o.duration <= 0:
		return o, fmt.Errorf("-duration: must be above 0, got %v", o.duration)
	case o.idle < 0:
		return o, fmt.Errorf("-idle: must not be negative, got %v", o.idle)
	case o.burst < 1 || o.burst > maxBurst:
		return o, fmt.Errorf("-burst: must be 1 to %d (the simulator keeps about 1,000 events), got %d", maxBurst, o.burst)
	case o.processor != "stdout" && o.processor != "openfaas" && o.processor != "cloudevents":
		return o, fmt.Errorf(`-processor: must be "stdout", "openfaas" or "cloudevents", got %q`, o.processor)
	case o.fnDelay < 0:
		return o, fmt.Errorf("-fn-delay: must not be negative, got %v", o.fnDelay)
	}
	return o, nil
}

// bench holds the peers and the router process of one run.
type bench struct {
	routerProc
	o    options
	vc   *vcenter
	gw   *faasGateway
	sink *httptest.Server // -processor cloudevents
	rec  *recorder
}

func newBench(ctx context.Context, o options) (_ *bench, err error) {
	if err := checkRouter(o.router); err != nil {
		return nil, err
	}
	b := &bench{o: o, rec: newRecorder(), routerProc: routerProc{path: o.router}}
	defer func() {
		if err != nil {
			b.close()
		}
	}()
	if b.vc, err = startVCenter(ctx, openfaasVMs); err != nil {
		return nil, err
	}
	processor := map[string]any{"type": "processor", "provider": "stdout"}
	if o.processor == "openfaas" {
		b.gw = startGateway(b.rec, "admin", rand.Text(), o.fnDelay)
		processor = map[string]any{
			"type": "processor", "provider": "openfaas", "address": b.gw.srv.URL,
			"auth":    map[string]any{"method": "basic_auth", "secret": map[string]string{"username": b.gw.user, "password": b.gw.password}},
			"options": map[string]string{"async": "false"},
		}
	}
	if o.processor == "cloudevents" {
		b.sink = startSink(b.rec, o.fnDelay)
		processor = map[string]any{"type": "processor", "provider": "cloudevents", "address": b.sink.URL}
	}
	entries := []any{b.vc.streamEntry(""), processor}
	if o.filter != "" {
		if _, err := os.Stat(o.filter); err != nil {
			return nil, fmt.Errorf("-filter: %w", err)
		}
		abs, err := filepath.Abs(o.filter)
		if err != nil {
			return nil, fmt.Errorf("-filter: %w", err)
		}
		entries = append(entries, map[string]any{"type": "filter", "provider": "wasm", "address": abs,
			"options": map[string]string{"config": o.filterCfg, "timeout": "1s"}})
	}
	if err := b.writeConfig(entries...); err != nil {
		return nil, err
	}
	return b, nil
}

// checkRouter fails early when the router binary is missing.
func checkRouter(path string) error {
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("-router: %w (build it with make binary)", err)
	}
	return nil
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("finding a free port: %w", err)
	}
	defer func() { _ = l.Close() }()
	_, port, err := net.SplitHostPort(l.Addr().String())
	return port, err
}

func (b *bench) close() {
	b.routerProc.close()
	if b.gw != nil {
		b.gw.srv.Close()
	}
	if b.sink != nil {
		b.sink.Close()
	}
	if b.vc != nil {
		b.vc.close()
	}
}

// run goes through the phases in order: start, steady, idle, burst, then
// memory and shutdown.
func (b *bench) run(ctx context.Context) (*report, error) {
	r := &report{o: b.o, vms: len(b.vc.vms), env: environment(), routerVersion: routerVersion(b.o.router)}
	for _, phase := range []func(context.Context, *report) error{b.start, b.steady, b.idle, b.burst, b.finish} {
		if err := phase(ctx, r); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// start spawns the router, polls /readyz until it answers 200, then posts
// an event every 5 ms until the first one is delivered. Posting before the
// router is ready would race inside the simulator: SetCollectorPageSize,
// which the router calls while it sets up its collector, refills the page
// from the history that PostEvent appends to, under a different lock (the
// race detector reports it). The router follows from the moment it
// connects, so an event created before that is not delivered anyway.
func (b *bench) start(ctx context.Context, r *report) error {
	t0 := time.Now()
	rec := b.rec
	if b.gw != nil {
		rec = nil
	}
	if err := b.spawn(rec); err != nil {
		return err
	}
	deadline := time.After(30 * time.Second)
	if err := b.pollReady(ctx, deadline); err != nil {
		return err
	}
	r.ready = time.Since(t0)
	var err error
	if r.memReady, err = b.stat(); err != nil {
		return err
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for len(b.rec.after(0)) == 0 {
		if err := b.vc.post(ctx); err != nil {
			return err
		}
		select {
		case <-tick.C:
		case <-b.exited:
			return errors.New("the router exited during start-up")
		case <-deadline:
			return errors.New("no event delivered within 30 s of start")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r.first = b.rec.after(0)[0].at.Sub(t0)
	// Wait for the last event posted, so none of the start-up events is
	// counted in the steady phase.
	_, last, err := b.vc.newestKeys(ctx)
	if err != nil {
		return err
	}
	return b.rec.wait(ctx, phaseLimit, b.exited, "start-up events", func(ds []delivery) bool {
		return slices.ContainsFunc(ds, func(d delivery) bool { return d.key == last })
	})
}

// steady posts rate events/s for duration.
func (b *bench) steady(ctx context.Context, r *report) error {
	from, _, err := b.vc.newestKeys(ctx)
	if err != nil {
		return err
	}
	ref, err := startReference(ctx)
	if err != nil {
		return err
	}
	defer ref.close()
	cpu0, err := b.stat()
	if err != nil {
		return err
	}
	ref0, err := ref.stat()
	if err != nil {
		return err
	}
	n := max(1, int(b.o.rate*b.o.duration.Seconds()))
	tick := time.NewTicker(time.Duration(float64(time.Second) / b.o.rate))
	defer tick.Stop()
	for i := range n {
		if i > 0 {
			select {
			case <-tick.C:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if err := b.vc.post(ctx); err != nil {
			return err
		}
		if err := ref.send(); err != nil {
			return fmt.Errorf("reference process: %w", err)
		}
	}
	ds, err := b.phase(ctx, "steady phase", from, n)
	if err != nil {
		return err
	}
	cpu1, err := b.stat()
	if err != nil {
		return err
	}
	ref1, err := ref.stat()
	if err != nil {
		return err
	}
	r.steady, r.steadyCPU, r.steadySlices = latencies(ds), cpu1.cpu-cpu0.cpu, cpu1.slices-cpu0.slices
	r.refCPU, r.refSlices = ref1.cpu-ref0.cpu, ref1.slices-ref0.slices
	return nil
}

// idle waits, then posts one event.
func (b *bench) idle(ctx context.Context, r *report) error {
	cpu0, err := b.stat()
	if err != nil {
		return err
	}
	select {
	case <-time.After(b.o.idle):
	case <-b.exited:
		return errors.New("idle phase: the router exited")
	case <-ctx.Done():
		return ctx.Err()
	}
	cpu1, err := b.stat()
	if err != nil {
		return err
	}
	r.idleCPU = cpu1.cpu - cpu0.cpu
	from, _, err := b.vc.newestKeys(ctx)
	if err != nil {
		return err
	}
	if err := b.vc.post(ctx); err != nil {
		return err
	}
	ds, err := b.phase(ctx, "idle phase", from, 1)
	if err != nil {
		return err
	}
	r.idle = latencies(ds)[0]
	return nil
}

// burst posts the burst from burstPosters clients at once.
func (b *bench) burst(ctx context.Context, r *report) error {
	from, _, err := b.vc.newestKeys(ctx)
	if err != nil {
		return err
	}
	cpu0, err := b.stat()
	if err != nil {
		return err
	}
	self0, err := readProc(os.Getpid())
	if err != nil {
		return err
	}
	if err := postBurst(ctx, []*vcenter{b.vc}, b.o.burst, burstPosters); err != nil {
		return err
	}
	ds, err := b.phase(ctx, "burst", from, b.o.burst)
	if err != nil {
		return err
	}
	cpu1, err := b.stat()
	if err != nil {
		return err
	}
	self1, err := readProc(os.Getpid())
	if err != nil {
		return err
	}
	first, lastCreated, lastAt := span(ds)
	r.burstLat = latencies(ds)
	r.burstCreate, r.burstSpan, r.burstDrain = lastCreated.Sub(first), lastAt.Sub(first), lastAt.Sub(lastCreated)
	r.burstCPU, r.benchCPU = cpu1.cpu-cpu0.cpu, self1.cpu-self0.cpu
	return nil
}

// finish reads the router's memory, checks order and duplicates over the
// whole run, and stops the router with SIGTERM.
func (b *bench) finish(_ context.Context, r *report) error {
	var err error
	if r.mem, err = b.stat(); err != nil {
		return err
	}
	r.dups, r.outOfOrder, r.orderVMs = checkOrder(b.rec.after(math.MinInt32))
	if r.dups > 0 {
		r.problems = append(r.problems, fmt.Sprintf("%d events delivered twice", r.dups))
	}
	if r.outOfOrder > 0 {
		r.problems = append(r.problems, fmt.Sprintf("%d events delivered before an earlier event about the same VM", r.outOfOrder))
	}

	if r.shutdown, r.exitCode, err = b.stop(); err != nil {
		return err
	}
	if r.exitCode != 0 {
		r.problems = append(r.problems, fmt.Sprintf("the router exited with code %d after SIGTERM", r.exitCode))
	}
	return nil
}

// phase waits until n events with keys above from are delivered and
// returns their deliveries.
func (b *bench) phase(ctx context.Context, what string, from int32, n int) ([]delivery, error) {
	err := b.rec.wait(ctx, phaseLimit, b.exited, what, func(all []delivery) bool {
		got := 0
		for _, d := range all {
			if d.key > from {
				got++
			}
		}
		return got >= n
	})
	if err != nil {
		return nil, fmt.Errorf("%w (%d of %d events delivered)", err, len(b.rec.after(from)), n)
	}
	return b.rec.after(from), nil
}

func latencies(ds []delivery) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.at.Sub(d.created)
	}
	slices.Sort(out)
	return out
}

// percentile is the nearest-rank percentile of sorted values.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// postBurst posts n events to each of vcs at once, from posters clients
// per simulator.
func postBurst(ctx context.Context, vcs []*vcenter, n, posters int) error {
	var (
		wg     sync.WaitGroup
		errMu  sync.Mutex
		postEr error
	)
	for _, vc := range vcs {
		var next atomic.Int64
		for range posters {
			wg.Go(func() {
				for next.Add(1) <= int64(n) {
					if err := vc.post(ctx); err != nil {
						errMu.Lock()
						postEr = err
						errMu.Unlock()
						return
					}
				}
			})
		}
	}
	wg.Wait()
	return postEr
}

// span returns the first and last CreatedTime and the last delivery of ds
// (not empty).
func span(ds []delivery) (first, lastCreated, lastAt time.Time) {
	first, lastCreated, lastAt = ds[0].created, ds[0].created, ds[0].at
	for _, d := range ds {
		first = minTime(first, d.created)
		lastCreated = maxTime(lastCreated, d.created)
		lastAt = maxTime(lastAt, d.at)
	}
	return first, lastCreated, lastAt
}

// checkOrder counts the events of ds delivered twice and those delivered
// after a later event about the same VM of the same vCenter (keys are per
// vCenter), and returns how many VMs it saw.
func checkOrder(ds []delivery) (dups, outOfOrder, vms int) {
	type event struct {
		source string
		key    int32
	}
	type vm struct{ source, vm string }
	seen := map[event]bool{}
	lastByVM := map[vm]int32{}
	for _, d := range ds {
		e, v := event{d.source, d.key}, vm{d.source, d.vm}
		if seen[e] {
			dups++
		}
		seen[e] = true
		if prev, ok := lastByVM[v]; ok && d.key < prev {
			outOfOrder++
		}
		lastByVM[v] = max(lastByVM[v], d.key)
	}
	return dups, outOfOrder, len(lastByVM)
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func environment() string {
	return fmt.Sprintf("%s/%s, %d CPUs, load average %s at start, %s", runtime.GOOS, runtime.GOARCH,
		runtime.NumCPU(), loadAverage(), runtime.Version())
}

// loadAverage is the machine's 1, 5 and 15 minute load averages.
func loadAverage() string {
	load, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(load))
	if len(f) > 3 {
		f = f[:3]
	}
	return strings.Join(f, " ")
}

func routerVersion(path string) string {
	out, err := exec.Command(path, "version").Output()
	if err != nil {
		return "unknown"
	}
	return strings.Join(strings.Fields(string(out)), " ")
}

// report is what one run measured.
type report struct {
	o                  options
	command, env       string
	routerVersion      string
	vms                int
	ready, first       time.Duration
	steady             []time.Duration
	steadyCPU          time.Duration
	steadySlices       int64         // the router's time slices in the steady phase
	refCPU             time.Duration // the reference process's, same phase
	refSlices          int64
	idle, idleCPU      time.Duration
	burstLat           []time.Duration
	burstCreate        time.Duration // first to last CreatedTime
	burstSpan          time.Duration // first CreatedTime to last delivery
	burstDrain         time.Duration // last CreatedTime to last delivery
	burstCPU, benchCPU time.Duration
	mem, memReady      procStat
	orderVMs           int
	dups, outOfOrder   int
	shutdown           time.Duration
	exitCode           int
	problems           []string
}

// String is the report in Markdown: a table, then the method.
func (r *report) String() string {
	o := r.o
	w := &strings.Builder{}
	fmt.Fprintf(w, "## vmware-event-router end to end (processor %s", o.processor)
	switch {
	case o.processor == "openfaas" && o.fnDelay > 0:
		fmt.Fprintf(w, ", function takes %v", o.fnDelay)
	case o.processor == "openfaas":
		w.WriteString(", instant function")
	case o.processor == "cloudevents" && o.fnDelay > 0:
		fmt.Fprintf(w, " in binary mode, sink takes %v", o.fnDelay)
	case o.processor == "cloudevents":
		w.WriteString(" in binary mode, instant sink")
	}
	if o.filter != "" {
		fmt.Fprintf(w, ", Wasm filter %s", filepath.Base(o.filter))
	}
	fmt.Fprintf(w, ")\n\n`%s`\n\nrouter %s; %s; simulator with %d VMs\n\n", r.command, r.routerVersion, r.env, r.vms)
	w.WriteString("| measure | result | target | predecessor |\n|---|---|---|---|\n")
	row := func(measure, result, target, pred string) {
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", measure, result, target, pred)
	}
	row("start: spawn to /readyz 200", dur(r.ready), "", "")
	row("start: spawn to first event delivered", dur(r.first), atMost(r.first, 300*time.Millisecond, "300 ms"), "1 s")
	steady := fmt.Sprintf("latency at %g events/s for %v (%d events)", o.rate, o.duration, len(r.steady))
	row(steady+": p50", dur(percentile(r.steady, 50)), "", "")
	row(steady+": p99", dur(percentile(r.steady, 99)), atMost(percentile(r.steady, 99), 25*time.Millisecond, "25 ms"), "1.6 s")
	row(steady+": max", dur(r.steady[len(r.steady)-1]), "", "")
	row(fmt.Sprintf("latency of the first event after %v idle", o.idle), dur(r.idle), atMost(r.idle, 25*time.Millisecond, "25 ms"), "4 s")
	n := float64(len(r.burstLat))
	createRate := n / max(r.burstCreate.Seconds(), 1e-9)
	throughput := n / max(r.burstSpan.Seconds(), 1e-9)
	burst := fmt.Sprintf("burst of %d", len(r.burstLat))
	row(burst+": creation rate (first to last CreatedTime)", rate(createRate), "", "")
	tput := "the creation rate"
	if o.fnDelay > 0 {
		tput = verdict("≥ 300 events/s (the target for a 100 ms function)", throughput >= 300, "")
	} else if r.burstDrain > 100*time.Millisecond {
		tput += ": missed"
	} else {
		tput += ": met"
	}
	row(burst+": delivered throughput (first CreatedTime to last delivery)", rate(throughput), tput, "100 events/s")
	drainTarget := atMost(r.burstDrain, 100*time.Millisecond, "0.1 s")
	if o.fnDelay > 0 {
		drainTarget = ""
	}
	row(burst+": drain (last delivery - last CreatedTime)", dur(r.burstDrain), drainTarget, "1,000 events took 10.6 s")
	row(burst+": latency p50 / p99 / max", dur(percentile(r.burstLat, 50))+" / "+dur(percentile(r.burstLat, 99))+" / "+dur(r.burstLat[len(r.burstLat)-1]), "", "")
	row(fmt.Sprintf("router CPU per 1,000 events, steady phase (%v at %g/s)", o.duration, o.rate),
		cpuPer1000(r.steadyCPU, len(r.steady)), cpuTarget(r.steadyCPU, len(r.steady)), "")
	row("reference process (the floor: a minimal Go process woken the same way), CPU per 1,000 messages, same phase",
		cpuPer1000(r.refCPU, len(r.steady)), fmt.Sprintf("the router costs %.1f× it", r.steadyCPU.Seconds()/max(r.refCPU.Seconds(), 1e-9)), "")
	if r.steadySlices > 0 {
		row("scheduler time slices per event, steady phase: router / reference process",
			fmt.Sprintf("%.1f / %.1f", float64(r.steadySlices)/float64(len(r.steady)), float64(r.refSlices)/float64(len(r.steady))), "", "")
	}
	row(fmt.Sprintf("router CPU while idle (%v without events)", o.idle), fmt.Sprintf("%.2f s", r.idleCPU.Seconds()), "", "")
	row("router CPU per 1,000 events, burst", cpuPer1000(r.burstCPU, len(r.burstLat)), cpuTarget(r.burstCPU, len(r.burstLat)), "")
	row("bench process CPU during the burst (simulator, clients)", fmt.Sprintf("%.2f s", r.benchCPU.Seconds()), "", "")
	// Issue 16's target is the RSS after start: the router ready.
	row("router RSS when /readyz first answered 200 (VmRSS = RssAnon + RssFile)", rss(r.memReady), verdict("≤ 25 MB", r.memReady.rss*1024 <= 25e6, ""), "")
	row("router RSS after the run (VmRSS = RssAnon + RssFile)", rss(r.mem), "", "43 MB")
	row("router peak RSS (VmHWM)", mb(r.mem.hwm), "", "")
	order := fmt.Sprintf("kept over %d VMs", r.orderVMs)
	if r.outOfOrder > 0 {
		order = fmt.Sprintf("%d events out of order", r.outOfOrder)
	}
	row("order per VM", order, "kept", "")
	row("events delivered twice", strconv.Itoa(r.dups), "0", "")
	row("SIGTERM to exit", fmt.Sprintf("%s (exit code %d)", dur(r.shutdown), r.exitCode), atMost(r.shutdown, 15*time.Second, "15 s"), "")
	w.WriteString("\n" + method)
	return w.String()
}

// method is printed under every report: how to read the figures.
const method = `Method: the bench runs govmomi's simulator (VPX model, TLS on 127.0.0.1) in its own
process and the router binary as a child process following it as an external vCenter
(vmware_vcenter stream, insecure TLS). Events are VmPoweredOnEvents posted with
EventManager.PostEvent, round robin over the simulator's VMs; the simulator stamps CreatedTime.
Latency is CreatedTime to the moment the bench reads the event (a line on the router's stdout, or
the request arriving at the OpenFaaS function): one machine, one clock. Start: the router is
spawned, /readyz is polled every 5 ms, and from the moment it answers 200 an event is posted
every 5 ms until one arrives. Steady: events at -rate for -duration. Idle: one event after -idle
without events. Burst: -burst events posted by 2 concurrent clients. CPU is the router's time on
CPU around each phase, summed over its threads' /proc/PID/task/TID/schedstat (nanoseconds; where
that is missing, utime+stime of /proc/PID/stat, 10 ms resolution). During the steady phase a
reference process (this binary again) is woken once per event too: it reads a 2 KB message on a
TLS connection, writes a line to stdout and sends a request, the least any Go process must do per
event; its CPU is the machine's floor for the router's, which on a virtual machine moves from
run to run (waking a process costs what the hypervisor makes it cost). Memory is VmRSS (split into
RssAnon, the router's own memory, and RssFile, pages of the mapped binary) and VmHWM of
/proc/PID/status when ready and at the end. The simulator releases WaitForUpdatesEx results on a 20 ms tick, so
latency has a floor of 0-20 ms (10 ms on average) however fast the router is. The bench and the
simulator share the machine's CPUs with the router.
`

func dur(d time.Duration) string {
	if d < time.Second {
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

func rate(r float64) string { return fmt.Sprintf("%.0f events/s", r) }

func mb(kb int64) string { return fmt.Sprintf("%.1f MB", float64(kb)*1024/1e6) }

func rss(s procStat) string {
	return fmt.Sprintf("%s (%s + %s)", mb(s.rss), mb(s.anon), mb(s.fileRSS))
}

func cpuPer1000(cpu time.Duration, n int) string {
	return fmt.Sprintf("%.3f s", cpu.Seconds()*1000/float64(max(n, 1)))
}

func cpuTarget(cpu time.Duration, n int) string {
	per := cpu.Seconds() * 1000 / float64(max(n, 1))
	return verdict("≤ 0.3 s", per <= 0.3, fmt.Sprintf("%.3f s", per-0.3))
}

// atMost judges d against limit, which reads as name.
func atMost(d, limit time.Duration, name string) string {
	return verdict("≤ "+name, d <= limit, dur(d-limit))
}

func verdict(target string, met bool, by string) string {
	switch {
	case met:
		return target + ": met"
	case by != "":
		return target + ": missed by " + by
	}
	return target + ": missed"
}
