package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmware-samples/vmware-event-router/filters"
	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/checkpoint"
	"github.com/vmware-samples/vmware-event-router/gateway/config"
	"github.com/vmware-samples/vmware-event-router/gateway/deadletter"
	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
	"github.com/vmware-samples/vmware-event-router/gateway/pattern"
	_ "github.com/vmware-samples/vmware-event-router/gateway/providers" // every stream and processor kind
	"github.com/vmware-samples/vmware-event-router/wasm"
)

// Shutdown budget within shutdownLimit: deliveries in flight get
// drainTimeout, closing sessions and the processor get closeTimeout.
const (
	drainTimeout = 10 * time.Second
	closeTimeout = 3 * time.Second
)

// pipeline is what the daemon and replay share: the processors, each with
// its dispatcher, the dead-letter sink they share, and the filter chain.
type pipeline struct {
	cfg     *config.Config
	log     *slog.Logger
	m       *metrics.Metrics
	procs   []*proc
	chain   *filters.Chain
	filters *wasm.Manager    // nil without filter entries
	sink    *deadletter.Sink // nil without a state directory; Degraded() for /readyz

	// closers undo what was built, in reverse order.
	closers []func()
}

// proc is one processor entry built: the processor (with its pattern) and
// its dispatcher.
type proc struct {
	cfg       config.Processor
	processor gateway.Processor
	disp      *gateway.Dispatcher
}

// route is the processor's route for the routers and the routing filter.
func (p *proc) route() gateway.Route {
	return gateway.Route{Name: p.cfg.Name, Dispatcher: p.disp, Streams: p.cfg.Streams}
}

// streamPart is one stream entry built: the stream, its router and its
// checkpoint keeper.
type streamPart struct {
	name   string
	stream gateway.Stream
	router *gateway.Router
	keeper *checkpoint.Keeper // nil without a state directory
}

// daemon is the router assembled from a configuration.
type daemon struct {
	pipeline
	server    *metrics.Server
	serverErr chan error
	started   atomic.Bool // every part is built: ready may look at them
	streams   []*streamPart
}

// newPipeline builds the processors, their dispatchers and the filters. On
// error it closes what it had built.
func newPipeline(ctx context.Context, cfg *config.Config, m *metrics.Metrics, out io.Writer, log *slog.Logger, finished func(*gateway.Event, string, string)) (_ *pipeline, err error) {
	p := &pipeline{cfg: cfg, log: log, m: m}
	defer func() {
		if err != nil {
			p.closeAll()
		}
	}()
	if cfg.State != nil {
		sink, err := deadletter.NewSink(filepath.Join(cfg.State.Dir, "dead-letter"), cfg.State.DeadLetterMaxSize, log, m)
		if err != nil {
			return nil, err
		}
		p.closers = append(p.closers, func() { _ = sink.Close() })
		p.sink = sink
	}
	// Several processors taking one stream share its gauges (watermark,
	// pending), which then count the stream, not one processor's share.
	var gauges *gateway.StreamGauges
	if len(cfg.Processors) > 1 {
		gauges = gateway.NewStreamGauges(m)
	}
	var routes []gateway.Route
	for _, pc := range cfg.Processors {
		pr, err := newProc(ctx, cfg, pc, m, out, log, finished, gauges, p.sink)
		if err != nil {
			return nil, fmt.Errorf("processor %s: %w", pc.Name, err)
		}
		p.closers = append(p.closers, func() { _ = pr.processor.Close() })
		p.procs = append(p.procs, pr)
		routes = append(routes, pr.route())
	}

	p.chain = filters.NewChain(filters.NewRoutingFor(routes), log, p.m)
	if len(cfg.Filters) > 0 {
		cacheDir := ""
		if cfg.State != nil {
			cacheDir = filepath.Join(cfg.State.Dir, "wasm-cache")
		}
		p.filters, err = wasm.NewManager(ctx, wasm.ManagerOptions{
			Filters: cfg.Filters, CacheDir: cacheDir, Log: log, Metrics: p.m, Apply: p.chain.SetUserFilters,
		})
		if err != nil {
			return nil, err
		}
		p.closers = append(p.closers, func() { _ = p.filters.Close() })
	}
	return p, nil
}

// newProc builds one processor and its dispatcher; sink nil: the
// dispatcher's default sink logs each dead letter with its whole event at
// error level.
func newProc(ctx context.Context, cfg *config.Config, pc config.Processor, m *metrics.Metrics, out io.Writer, log *slog.Logger,
	finished func(*gateway.Event, string, string), gauges *gateway.StreamGauges, sink *deadletter.Sink) (*proc, error) {
	// The default stream (the ledger reached without a lookup) is the
	// first the processor takes.
	stream := cfg.StreamName()
	if len(pc.Streams) > 0 {
		stream = pc.Streams[0]
	}
	// The kind's build decides the processor and its dispatcher's address,
	// concurrency, queue and retries; the rest is the daemon's.
	disp, err := pc.Spec.BuildProcessor(ctx, pc.Settings, config.Env{Log: log, Metrics: m, Out: out})
	if err != nil {
		return nil, err
	}
	disp.ProcessorName, disp.Stream, disp.Log, disp.Metrics, disp.Finished, disp.Gauges = pc.Name, stream, log, m, finished, gauges
	// The routing filter and the dispatcher both ask the decorated processor.
	disp.Processor = pattern.Decorate(disp.Processor, pc.Pattern)
	if sink != nil {
		disp.Sink = sink
	}
	pr := &proc{cfg: pc, processor: disp.Processor}
	pr.disp = gateway.NewDispatcher(disp)
	return pr, nil
}

// newDaemon builds every part in dependency order: metrics and their
// server first (so /livez answers while a large filter module compiles or
// AWS is slow), then processors, dispatchers, filters, streams,
// checkpoints. On error it closes what it had built.
func newDaemon(ctx context.Context, cfg *config.Config, out io.Writer, log *slog.Logger) (_ *daemon, err error) {
	d := &daemon{serverErr: make(chan error, 1)}
	m := metrics.New()
	mc := cfg.Metrics
	server, err := metrics.NewServer(m, metrics.ServerOptions{
		Address: mc.Address, Username: mc.Username, Password: mc.Password.Reveal(),
		TLSCertFile: mc.TLSCertFile, TLSKeyFile: mc.TLSKeyFile, Ready: d.ready, Degraded: d.degraded, Log: log,
	})
	if err != nil {
		return nil, err
	}
	d.server = server
	go func() { d.serverErr <- server.Serve() }()
	p, err := newPipeline(ctx, cfg, m, out, log, nil)
	if err != nil {
		_ = server.Shutdown(context.Background())
		return nil, err
	}
	d.pipeline = *p
	d.closers = append([]func(){func() {
		// A scrape in progress gets closeTimeout; the exit does not wait on it.
		ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		defer cancel()
		_ = server.Shutdown(ctx)
	}}, d.closers...)
	defer func() {
		if err != nil {
			d.closeAll()
		}
	}()
	var store *checkpoint.Store
	var window time.Duration // how old an event a catch-up still delivers
	if cfg.State != nil {
		store, err = checkpoint.NewStore(filepath.Join(cfg.State.Dir, "checkpoints"), nil, log)
		if err != nil {
			return nil, err
		}
		window = cfg.State.ReplayWindow
	}
	routes := make([]gateway.Route, len(d.procs))
	for i, pr := range d.procs {
		routes[i] = pr.route()
	}
	// N streams x M processors: each stream has its router, which hands
	// its events to the processors taking it, and its keeper.
	for _, sc := range cfg.Streams {
		vs, err := sc.Spec.BuildStream(sc.Settings, config.Env{Log: log, Metrics: d.m, Out: out})
		if err != nil {
			return nil, fmt.Errorf("stream %s: %w", sc.Name, err)
		}
		d.closers = append(d.closers, func() { _ = vs.Close() })
		sp := &streamPart{name: sc.Name, stream: vs}
		var cps []checkpoint.Processor
		for _, rt := range routes {
			if rt.Takes(sc.Name) {
				cps = append(cps, checkpoint.Processor{Name: rt.Name, Watermarks: rt.Dispatcher})
			}
		}
		if len(cps) == 0 {
			// Nothing to acknowledge: no checkpoint to keep.
			log.Warn("no processor takes this stream (see the processors' option streams): its events are read and dropped", "stream", sc.Name)
		}
		var resume func(string, string, time.Time) (gateway.Resume, bool)
		if store != nil && len(cps) > 0 {
			sp.keeper = checkpoint.NewKeeper(store, cps, cfg.State.ReplayWindow, sc.Name, log, d.m)
			resume = sp.keeper.ResumeAll
		}
		sp.router = gateway.NewRouter(gateway.RouterOptions{Stream: sc.Name, Chain: d.chain, Routes: routes, Log: log, Resume: resume,
			ReplayWindow: window})
		d.streams = append(d.streams, sp)
	}
	d.started.Store(true)
	return d, nil
}

func (p *pipeline) closeAll() {
	for i := len(p.closers) - 1; i >= 0; i-- {
		p.closers[i]()
	}
	p.closers = nil
}

// ready is /readyz: every stream connected and every processor has its
// routing; otherwise one line per part that is not.
func (d *daemon) ready() error {
	if !d.started.Load() {
		return errors.New("starting")
	}
	var errs []error
	for _, sp := range d.streams {
		if err := sp.stream.Ready(); err != nil {
			errs = append(errs, fmt.Errorf("stream %s: %w", sp.name, err))
		}
	}
	for _, pr := range d.procs {
		if err := pr.processor.Ready(); err != nil {
			errs = append(errs, fmt.Errorf("processor %s: %w", pr.cfg.Name, err))
		}
	}
	return errors.Join(errs...)
}

// degraded is /readyz's "degraded:" lines after ok: parts that work, but
// not fully. ready, not this, decides 503.
func (d *daemon) degraded() []string {
	if !d.started.Load() {
		return nil
	}
	var lines []string
	for _, pr := range d.procs {
		// The dispatcher's lines: a stream held longer than
		// degraded_after, and held destinations.
		lines = append(lines, pr.disp.Degraded()...)
	}
	for _, sp := range d.streams {
		lines = append(lines, sp.router.Degraded()...) // processors detached from the stream
	}
	// The dead-letter sink, full: it holds the processors' deliveries.
	if d.sink != nil {
		if r := d.sink.Degraded(); r != "" {
			for _, pr := range d.procs {
				lines = append(lines, fmt.Sprintf("processor %s: %s", pr.cfg.Name, r))
			}
		}
	}
	return lines
}

// run starts the parts and blocks until ctx is done (SIGINT/SIGTERM), a
// stream fails for good or a checkpoint cannot be read; then it shuts down
// within shutdownLimit, in this order: stop reading every vCenter; give
// deliveries in flight up to drainTimeout (one budget for every
// dispatcher, counted from the start of the shutdown); stop the checkpoint
// keepers' loops and write the final checkpoints; only then close the rest
// with short deadlines (the streams' Close logs out of vCenter, the
// processors, the dead-letter sink, the metrics server), so a slow logout
// can never cost a checkpoint. Each stream runs in its own goroutine and
// reconnects on its own: a vCenter down or slow delays no other stream.
func (d *daemon) run(ctx context.Context) error {
	defer d.closeAll()
	d.log.Info("vmware-event-router starting", "streams", d.streamNames(), "processors", d.procNames(),
		"filters", len(d.cfg.Filters), "metrics", metricsScheme(d.cfg.Metrics)+d.server.Addr())
	// Package initialisation and building the parts leave a few MB of
	// garbage (the AWS SDK's endpoint tables, the config decoder's maps)
	// that the heap would otherwise keep for good: the heap's goal never
	// falls below 4 MB, so the scavenger does not return it. One collection
	// now, before any event, gives it back at once (a few ms, once).
	debug.FreeOSMemory()

	procCtx, stopProc := context.WithCancel(context.Background())
	defer stopProc()
	for _, pr := range d.procs {
		if err := pr.processor.Start(procCtx); err != nil {
			return fmt.Errorf("processor %s: %w", pr.cfg.Name, err)
		}
	}

	keeperFailed := make(chan error, len(d.streams))
	for _, sp := range d.streams {
		if sp.keeper != nil {
			sp.keeper.Start()
			go func(failed <-chan error) {
				select {
				case err := <-failed:
					keeperFailed <- err
				case <-procCtx.Done():
				}
			}(sp.keeper.Failed())
		}
	}
	streamCtx, stopStream := context.WithCancel(ctx)
	defer stopStream()
	type streamResult struct {
		name string
		err  error
	}
	streamErr := make(chan streamResult, len(d.streams))
	for _, sp := range d.streams {
		// The router runs the stream, and the catch-up readers of
		// processors that detach from it.
		go func() { streamErr <- streamResult{sp.name, sp.router.Run(streamCtx, sp.stream)} }()
	}

	var runErr error
	running := len(d.streams)
	select {
	case <-ctx.Done():
		d.log.Info("shutting down: stopped reading; finishing deliveries in flight", "grace", drainTimeout)
	case r := <-streamErr:
		running--
		runErr = fmt.Errorf("stream %s: %w", r.name, r.err)
	case err := <-d.serverErr:
		runErr = fmt.Errorf("metrics server: %w", err)
	case err := <-keeperFailed:
		runErr = err
	}
	drainCtx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	stopStream()
	// Run returns promptly once its context is done; if it does not, the
	// shutdown goes on without it: what it has not handed on is not
	// acknowledged and is read again at the next start.
	streamWait, cancelWait := context.WithTimeout(drainCtx, closeTimeout)
	for ; running > 0; running-- {
		select {
		case r := <-streamErr:
			if r.err != nil && !errors.Is(r.err, context.Canceled) && runErr == nil {
				runErr = fmt.Errorf("stream %s: %w", r.name, r.err)
			}
			continue
		case <-streamWait.Done():
			d.log.Warn("shutdown: a stream did not stop in time; going on without it", "streams", running, "waited", closeTimeout)
		}
		break
	}
	cancelWait()
	var wg sync.WaitGroup
	for _, pr := range d.procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := pr.disp.Close(drainCtx); err != nil {
				d.log.Warn("shutdown: not every delivery finished; they are not acknowledged and are replayed at the next start",
					"processor", pr.cfg.Name, "err", err)
			}
		}()
	}
	wg.Wait()
	for _, sp := range d.streams {
		if sp.keeper != nil {
			sp.keeper.Stop()
		}
	}
	stopProc()
	d.log.Info("vmware-event-router stopped")
	return runErr
}

func (d *daemon) streamNames() []string {
	names := make([]string, len(d.streams))
	for i, sp := range d.streams {
		names[i] = sp.name
	}
	return names
}

func (p *pipeline) procNames() []string {
	names := make([]string, len(p.procs))
	for i, pr := range p.procs {
		names[i] = pr.cfg.Name
	}
	return names
}

// metricsScheme is how the metrics server is reached: https when it has a
// certificate, so the start-up line can be pasted into a browser or `top`.
func metricsScheme(m config.Metrics) string {
	if m.TLSCertFile != "" {
		return "https://"
	}
	return "http://"
}
