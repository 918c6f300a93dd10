package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/vmware-samples/vmware-event-router/filters"
	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/checkpoint"
	"github.com/vmware-samples/vmware-event-router/gateway/config"
	"github.com/vmware-samples/vmware-event-router/gateway/deadletter"
	"github.com/vmware-samples/vmware-event-router/gateway/eventbridge"
	"github.com/vmware-samples/vmware-event-router/gateway/metrics"
	"github.com/vmware-samples/vmware-event-router/gateway/openfaas"
	"github.com/vmware-samples/vmware-event-router/gateway/pattern"
	"github.com/vmware-samples/vmware-event-router/gateway/stdout"
	"github.com/vmware-samples/vmware-event-router/gateway/vcenter"
	"github.com/vmware-samples/vmware-event-router/wasm"
)

// Shutdown budget within shutdownLimit: deliveries in flight get
// drainTimeout, closing sessions and the processor get closeTimeout.
const (
	drainTimeout = 10 * time.Second
	closeTimeout = 3 * time.Second
)

// pipeline is what the daemon and replay share: the processor, its
// dispatcher with the dead-letter sink, and the filter chain.
type pipeline struct {
	cfg       *config.Config
	log       *slog.Logger
	m         *metrics.Metrics
	processor gateway.Processor
	disp      *gateway.Dispatcher
	chain     *filters.Chain
	filters   *wasm.Manager    // nil without filter entries
	sink      *deadletter.Sink // nil without a state directory; Degraded() for /readyz

	// closers undo what was built, in reverse order.
	closers []func()
}

// daemon is the router assembled from a configuration.
type daemon struct {
	pipeline
	server    *metrics.Server
	serverErr chan error
	started   atomic.Bool // every part is built: ready may look at them
	stream    gateway.Stream
	router    *gateway.Router
	keeper    *checkpoint.Keeper // nil without a state directory
}

// newPipeline builds the processor, the dispatcher and the filters. On error
// it closes what it had built.
func newPipeline(ctx context.Context, cfg *config.Config, m *metrics.Metrics, out io.Writer, log *slog.Logger, finished func(*gateway.Event, string, string)) (_ *pipeline, err error) {
	p := &pipeline{cfg: cfg, log: log, m: m}
	defer func() {
		if err != nil {
			p.closeAll()
		}
	}()
	procName := cfg.ProcessorProvider()
	disp := gateway.DispatcherOptions{ProcessorName: procName, Stream: cfg.StreamProvider(), Log: log, Metrics: p.m, Finished: finished}
	switch {
	case cfg.OpenFaaS != nil:
		c := cfg.OpenFaaS
		proc, err := openfaas.New(*c, log, p.m)
		if err != nil {
			return nil, err
		}
		p.processor = proc
		disp.StatsName, disp.Concurrency, disp.QueueSize, disp.RetryLimit = c.Address, c.Concurrency, c.QueueSize, c.RetryLimit
	case cfg.EventBridge != nil:
		c := cfg.EventBridge
		proc, err := eventbridge.New(ctx, *c, log, p.m)
		if err != nil {
			return nil, err
		}
		p.processor = proc
		disp.StatsName, disp.QueueSize, disp.RetryLimit = c.RuleARN, c.QueueSize, c.RetryLimit
	default:
		p.processor = stdout.New(out)
		disp.StatsName = "stdout"
	}
	p.processor = pattern.Decorate(p.processor, cfg.Pattern) // the routing filter and the dispatcher both ask it
	p.closers = append(p.closers, func() { _ = p.processor.Close() })
	disp.Processor = p.processor
	if cfg.State != nil {
		sink, err := deadletter.NewSink(filepath.Join(cfg.State.Dir, "dead-letter"), cfg.State.DeadLetterMaxSize, log, m)
		if err != nil {
			return nil, err
		}
		p.closers = append(p.closers, func() { _ = sink.Close() })
		p.sink, disp.Sink = sink, sink
	}
	// Without a state directory the dispatcher's default sink logs each
	// dead letter with its whole event at error level.
	p.disp = gateway.NewDispatcher(disp)

	p.chain = filters.NewChain(filters.NewRouting(p.processor), log, p.m)
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

// newDaemon builds every part in dependency order: metrics and their
// server first (so /livez answers while a large filter module compiles or
// AWS is slow), then processor, dispatcher, filters, stream, checkpoints.
// On error it closes what it had built.
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
	switch {
	case cfg.VCSim != nil:
		d.stream, err = vcenter.NewSimulated(*cfg.VCSim, log, d.m)
	default:
		d.stream, err = vcenter.New(*cfg.VCenter, log, d.m)
	}
	if err != nil {
		return nil, err
	}
	if c, ok := d.stream.(io.Closer); ok {
		d.closers = append(d.closers, func() { _ = c.Close() })
	}
	// One stream, one processor: the fan-out's N x M with N = M = 1.
	stream, proc := cfg.StreamProvider(), cfg.ProcessorProvider()
	routes := []gateway.Route{{Name: proc, Dispatcher: d.disp}}
	var resume func(string, string, time.Time) (gateway.Resume, bool)
	if cfg.State != nil {
		store, err := checkpoint.NewStore(filepath.Join(cfg.State.Dir, "checkpoints"), nil, log)
		if err != nil {
			return nil, err
		}
		d.keeper = checkpoint.NewKeeper(store, []checkpoint.Processor{{Name: proc, Watermarks: d.disp}},
			cfg.State.ReplayWindow, stream, log, d.m)
		resume = d.keeper.ResumeAll
	}
	d.router = gateway.NewRouter(gateway.RouterOptions{Stream: stream, Chain: d.chain, Routes: routes, Log: log, Resume: resume})
	d.started.Store(true)
	return d, nil
}

func (p *pipeline) closeAll() {
	for i := len(p.closers) - 1; i >= 0; i-- {
		p.closers[i]()
	}
	p.closers = nil
}

// ready is /readyz: the stream connected and the processor has its routing.
func (d *daemon) ready() error {
	if !d.started.Load() {
		return errors.New("starting")
	}
	if err := d.stream.Ready(); err != nil {
		return fmt.Errorf("stream %s: %w", d.cfg.StreamProvider(), err)
	}
	if err := d.processor.Ready(); err != nil {
		return fmt.Errorf("processor %s: %w", d.cfg.ProcessorProvider(), err)
	}
	return nil
}

// degraded is /readyz's "degraded:" lines after ok: parts that work, but
// not fully. ready, not this, decides 503.
func (d *daemon) degraded() []string {
	if !d.started.Load() {
		return nil
	}
	// The dispatcher's lines: the stream held longer than degraded_after,
	// and held destinations.
	lines := d.disp.Degraded()
	// The dead-letter sink, full: it holds the processor's deliveries.
	if d.sink != nil {
		if r := d.sink.Degraded(); r != "" {
			lines = append(lines, fmt.Sprintf("processor %s: %s", d.cfg.ProcessorProvider(), r))
		}
	}
	return lines
}

// run starts the parts and blocks until ctx is done (SIGINT/SIGTERM), the
// stream fails for good or a checkpoint cannot be read; then it shuts down
// within shutdownLimit, in this order: stop reading vCenter; give deliveries
// in flight up to drainTimeout (counted from the start of the shutdown);
// stop the checkpoint keeper's loop and write the final checkpoint; only
// then close the rest with short deadlines (the stream's Close logs out of
// vCenter, the processor, the dead-letter sink, the metrics server), so a
// slow logout can never cost the checkpoint.
func (d *daemon) run(ctx context.Context) error {
	defer d.closeAll()
	d.log.Info("vmware-event-router starting", "stream", d.cfg.StreamProvider(), "processor", d.cfg.ProcessorProvider(),
		"filters", len(d.cfg.Filters), "metrics", "http://"+d.server.Addr())

	procCtx, stopProc := context.WithCancel(context.Background())
	defer stopProc()
	if err := d.processor.Start(procCtx); err != nil {
		return fmt.Errorf("processor %s: %w", d.cfg.ProcessorProvider(), err)
	}

	var keeperFailed <-chan error // nil without a keeper: never ready
	if d.keeper != nil {
		d.keeper.Start()
		keeperFailed = d.keeper.Failed()
	}
	streamCtx, stopStream := context.WithCancel(ctx)
	defer stopStream()
	streamErr := make(chan error, 1)
	go func() { streamErr <- d.stream.Run(streamCtx, d.router) }()

	var runErr error
	select {
	case <-ctx.Done():
		d.log.Info("shutting down: stopped reading; finishing deliveries in flight", "grace", drainTimeout)
	case err := <-streamErr:
		streamErr <- err
		runErr = fmt.Errorf("stream %s: %w", d.cfg.StreamProvider(), err)
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
	select {
	case err := <-streamErr:
		if err != nil && !errors.Is(err, context.Canceled) && runErr == nil {
			runErr = fmt.Errorf("stream %s: %w", d.cfg.StreamProvider(), err)
		}
	case <-streamWait.Done():
		d.log.Warn("shutdown: the stream did not stop in time; going on without it", "stream", d.cfg.StreamProvider(), "waited", closeTimeout)
	}
	cancelWait()
	if err := d.disp.Close(drainCtx); err != nil {
		d.log.Warn("shutdown: not every delivery finished; they are not acknowledged and are replayed at the next start", "err", err)
	}
	if d.keeper != nil {
		d.keeper.Stop()
	}
	stopProc()
	d.log.Info("vmware-event-router stopped")
	return runErr
}
