package wasm

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/vmware-samples/vmware-event-router/filters"
	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/gateway/config"
	"github.com/vmware-samples/vmware-event-router/wasm/internal/cevent"
	"github.com/vmware-samples/vmware-event-router/wasm/internal/instrument"
)

// MaxModuleSize caps a module file, and a .wasm.gz file once decompressed.
const MaxModuleSize = 64 << 20

// Error kinds, the values of eventrouter_filter_errors_total's kind label.
const (
	KindTrap    = "trap"    // the guest trapped (or a host call it made was invalid)
	KindTimeout = "timeout" // the call overran the filter's timeout
	KindMemory  = "memory"  // the guest failed to grow its memory past memory_limit
	KindExit    = "exit"    // the guest called proc_exit
	KindVerdict = "verdict" // verdict 3 (error) or a number outside 0..3
	KindOutput  = "output"  // verdict 2 (replace) without a valid CloudEvent
	KindStack   = "stack"   // the guest exhausted its call-stack budget (runaway recursion)
)

var kinds = []string{KindTrap, KindTimeout, KindMemory, KindExit, KindVerdict, KindOutput, KindStack}

// initTimeoutMin bounds an instance's start-up (start function,
// _initialize, evr_init): a Go module's runtime initialisation takes a few
// milliseconds, far more than one event.
const initTimeoutMin = 2 * time.Second

// Filter is one loaded module: a filters.Filter that runs the module's
// evr_filter on a pool of persistent instances.
type Filter struct {
	name string
	path string
	opts config.WasmFilter
	// config is opts.Config, as evr.get_config copies it.
	config []byte
	host   *Host
	log    *slog.Logger

	rt        wazero.Runtime
	compiled  wazero.CompiledModule
	hasStart  bool
	hasInit   bool
	hasEvInit bool

	// The pool_size slots: pool holds the idle instances, vacant a token
	// per slot without one (never started, or its instance discarded),
	// which gets an instance when used. A call takes an idle instance
	// before it starts a new one.
	pool      chan *instance
	vacant    chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	breaker   breaker // see breaker.go

	errors   map[string]prometheus.Counter
	errLog   limiter
	guestLog limiter
}

var _ filters.Filter = (*Filter)(nil)

// Name returns the module's file name, the filter's name in metrics and
// /stats.
func (f *Filter) Name() string { return f.name }

// Path returns the file the module was read from.
func (f *Filter) Path() string { return f.path }

// Load reads the module at path (a .wasm or .wasm.gz file), validates it
// against the ABI, and starts its instance pool. opts are its entry's
// options; opts.Address is not used. Any error names the file and what is
// wrong.
func (h *Host) Load(ctx context.Context, path string, opts config.WasmFilter) (*Filter, error) {
	bin, err := readModule(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	f, err := h.load(ctx, path, bin, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// readModule reads a module file, gunzipping a .wasm.gz, within
// MaxModuleSize.
func readModule(path string) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer func() { _ = fh.Close() }()
	var r io.Reader = fh
	if strings.HasSuffix(path, ".gz") {
		zr, err := gzip.NewReader(fh)
		if err != nil {
			return nil, fmt.Errorf("not a gzip file: %w", err)
		}
		r = zr
	}
	// A buffer of the file's size (a .wasm.gz grows from it): io.ReadAll
	// would start small and copy a 3 MB Go module ~10 times. It is made,
	// not grown: bytes.Buffer.Grow clears what it allocates, one more pass
	// over a Go module's ~660 pages before the read, the first touch of
	// each (a page fault) in a process that just started.
	var initial []byte
	if fi, err := fh.Stat(); err == nil && fi.Size() < MaxModuleSize {
		initial = make([]byte, 0, int(fi.Size())+bytes.MinRead)
	}
	buf := bytes.NewBuffer(initial)
	_, err = buf.ReadFrom(io.LimitReader(r, MaxModuleSize+1))
	bin := buf.Bytes()
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	if len(bin) > MaxModuleSize {
		return nil, fmt.Errorf("module is larger than %d MiB", MaxModuleSize>>20)
	}
	return bin, nil
}

func memoryLimitPages(limit int64) uint32 {
	if limit <= 0 || limit >= 1<<32 {
		return 65536
	}
	return uint32(max(limit/instrument.PageSize, 1))
}

func (h *Host) load(ctx context.Context, path string, bin []byte, opts config.WasmFilter) (f *Filter, err error) {
	defer func() {
		// Loading parses untrusted input with third-party code: whatever
		// goes wrong is this module's error, never the router's crash.
		if r := recover(); r != nil {
			err = fmt.Errorf("internal error while loading the module: %v", r)
		}
	}()
	if opts.PoolSize < 1 {
		opts.PoolSize = 1
	}
	pages := memoryLimitPages(opts.MemoryLimit)
	out, err := instrument.Rewrite(bin, instrument.Options{MemoryLimitPages: pages})
	if err != nil {
		return nil, err
	}
	f = &Filter{
		name: filepath.Base(path), path: path, opts: opts, host: h,
		hasStart: out.HasStart, config: []byte(opts.Config),
		pool:     make(chan *instance, opts.PoolSize),
		vacant:   make(chan struct{}, opts.PoolSize),
		done:     make(chan struct{}),
		errors:   map[string]prometheus.Counter{},
		errLog:   limiter{rate: 1, burst: 10},
		guestLog: limiter{rate: 10, burst: 50},
	}
	f.log = h.log.With(slog.String("filter", f.name))
	rc := wazero.NewRuntimeConfig().
		WithCompilationCache(h.cache).
		WithMemoryLimitPages(pages).
		WithCloseOnContextDone(h.mode != deadlineInterrupt)
	rt := wazero.NewRuntimeWithConfig(ctx, rc)
	f.rt = rt
	ok := false
	defer func() {
		if !ok {
			_ = rt.Close(context.Background())
		}
	}()
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, f.rt); err != nil {
		return nil, fmt.Errorf("internal error: instantiate WASI: %w", err)
	}
	if err := f.instantiateHostModule(ctx); err != nil {
		return nil, fmt.Errorf("internal error: instantiate module %q: %w", hostModule, err)
	}
	f.compiled, err = f.rt.CompileModule(ctx, out.Binary)
	if err != nil {
		return nil, fmt.Errorf("not a valid WebAssembly module: %w", err)
	}
	wasiDefs := map[string]api.FunctionDefinition{}
	for _, def := range f.rt.Module(wasiModule).ExportedFunctionDefinitions() {
		wasiDefs[def.ExportNames()[0]] = def
	}
	if err := validate(f.compiled, out.Imports, wasiDefs); err != nil {
		return nil, err
	}
	exports := f.compiled.ExportedFunctions()
	_, f.hasInit = exports[exportInitialize]
	_, f.hasEvInit = exports[exportInit]
	for _, k := range kinds {
		f.errors[k] = h.m.FilterErrors.WithLabelValues(f.name, k)
	}
	h.wd.observe(opts.Timeout)

	// Start one instance now: a module that cannot start (its start
	// function, _initialize or evr_init fails) must fail here, not at the
	// first event. The other slots start empty and get their instance when
	// first used, as a discarded one is replaced: a Go instance costs its
	// runtime's start and ~4 MiB, which a filter that never sees
	// concurrent events would pay for nothing at every start and reload.
	in, err := f.newInstance(ctx)
	if err != nil {
		return nil, err
	}
	f.pool <- in
	for range opts.PoolSize - 1 {
		f.vacant <- struct{}{}
	}
	ok = true
	return f, nil
}

// Filter runs the module on ev. Failures are counted, logged (rate-limited)
// and turned into the filter's on_error policy: Pass, Drop, or Error (which
// the chain dead-letters). While the breaker is open (breaker.go) the policy
// applies without calling the module.
func (f *Filter) Filter(ctx context.Context, ev *gateway.Event) filters.Result {
	if !f.breaker.allow() {
		return f.rejected()
	}
	in, err := f.acquire(ctx)
	if err != nil {
		f.breaker.canceled()
		if errors.Is(err, errClosed) {
			return f.late(ctx, ev)
		}
		// The router is stopping: no verdict, and nothing to count.
		return filters.Result{Verdict: filters.Error, Err: err}
	}
	if in == nil {
		if in, err = f.newInstance(ctx); err != nil {
			f.release(nil)
			return f.failure(KindTrap, fmt.Errorf("cannot start an instance: %w", err))
		}
	}
	res, kind, err, discard := in.call(ev)
	if discard {
		in.close()
		in = nil
	}
	f.release(in)
	if kind != "" {
		return f.failure(kind, err)
	}
	f.breaker.succeeded()
	return res
}

// acquire takes a slot: an idle instance, else a vacant slot (nil: the
// caller starts its instance), waiting while all are busy.
func (f *Filter) acquire(ctx context.Context) (*instance, error) {
	select {
	case in := <-f.pool:
		return in, nil
	default:
	}
	select {
	case in := <-f.pool:
		return in, nil
	case <-f.vacant:
		return nil, nil
	case <-f.done:
		return nil, errClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// release gives a slot back: in, or a vacant slot for nil.
func (f *Filter) release(in *instance) {
	if in == nil {
		f.vacant <- struct{}{}
		return
	}
	f.pool <- in
}

// late serves a call that reached f after Close. The Manager closes a
// module only once no event is left in the lists holding it, so this
// happens only while the router stops: the event passes.
func (f *Filter) late(_ context.Context, ev *gateway.Event) filters.Result {
	f.log.Debug("event reached a closed filter: passed", slog.Int("key", int(ev.Key)))
	return filters.Result{Verdict: filters.Pass}
}

func (f *Filter) failure(kind string, err error) filters.Result {
	f.errors[kind].Inc()
	f.breaker.failed(kind, err)
	if ok, suppressed := f.errLog.allow(); ok {
		attrs := []slog.Attr{slog.String("kind", kind), slog.String("on_error", string(f.opts.OnError)), slog.Any("error", err)}
		if suppressed > 0 {
			attrs = append(attrs, slog.Int("suppressed", suppressed))
		}
		f.log.LogAttrs(context.Background(), slog.LevelWarn, "filter error", attrs...)
	}
	return f.onError(fmt.Errorf("%s: %w", kind, err))
}

// Close stops the filter once its in-flight calls have returned and
// releases its instances and runtime. Calls that arrive later pass.
//
// A call still running a grace period after Close (its timeout and two
// watchdog ticks: the watchdog should have stopped it by then) is
// interrupted, again every tick until it returns, so Close never waits on
// a guest for longer than its next host call or fuel checkpoint.
func (f *Filter) Close() error {
	f.closeOnce.Do(func() {
		close(f.done)
		grace := time.NewTimer(f.opts.Timeout + 2*maxTick)
		defer grace.Stop()
		var tick <-chan time.Time
		for range cap(f.pool) {
			for waiting := true; waiting; {
				select {
				case in := <-f.pool:
					in.close()
					waiting = false
				case <-f.vacant:
					waiting = false
				case <-grace.C:
					t := time.NewTicker(maxTick)
					defer t.Stop()
					tick = t.C
					f.host.wd.interruptAll(f)
				case <-tick:
					f.host.wd.interruptAll(f)
				}
			}
		}
		_ = f.rt.Close(context.Background())
	})
	return nil
}

// result turns a completed call's verdict into a filters.Result, or an
// error kind.
func (in *instance) result(ev *gateway.Event, v uint32) (filters.Result, string, error) {
	switch v {
	case verdictPass:
		return filters.Result{Verdict: filters.Pass}, "", nil
	case verdictDrop:
		return filters.Result{Verdict: filters.Drop}, "", nil
	case verdictReplace:
		if in.outErr != "" {
			return filters.Result{}, KindOutput, errors.New(in.outErr)
		}
		if !in.hasOut {
			return filters.Result{}, KindOutput, errors.New("verdict 2 (replace) without a call to evr.set_output")
		}
		out, err := cevent.Parse(in.out, ev)
		if err != nil {
			return filters.Result{}, KindOutput, err
		}
		return filters.Result{Verdict: filters.Replace, Event: out}, "", nil
	case verdictError:
		reason := "no reason given (call evr.set_error)"
		if len(in.errMsg) > 0 {
			reason = string(bytes.ToValidUTF8(in.errMsg, []byte("?")))
		}
		return filters.Result{}, KindVerdict, fmt.Errorf("module returned verdict 3 (error): %s", reason)
	}
	return filters.Result{}, KindVerdict, fmt.Errorf("verdict %d is not 0 (pass), 1 (drop), 2 (replace) or 3 (error)", int32(v))
}
