package wasm

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/sys"

	"github.com/vmware-samples/vmware-event-router/filters"
	"github.com/vmware-samples/vmware-event-router/gateway"
	"github.com/vmware-samples/vmware-event-router/wasm/internal/instrument"
)

// instance is one persistent instance of a filter's module. It serves one
// call at a time (the pool hands it out); only the watchdog touches it
// concurrently, through deadline and interrupt.
type instance struct {
	f          *Filter
	mod        api.Module
	fn         api.Function
	interruptG api.MutableGlobal
	growFailed api.MutableGlobal
	// stackExhausted is set by the rewriter's call-stack budget before it
	// traps; nil in a module rewritten without one.
	stackExhausted api.Global

	// ctx lives as long as the instance and carries it to the host
	// functions, so a call allocates no context.
	ctx    context.Context
	cancel context.CancelFunc
	stack  [1]uint64

	// deadline is the watchdog-clock deadline of the call in progress
	// (noDeadline for a call without a timeout), 0 when idle, claimed once
	// the watchdog or Close interrupted it.
	deadline atomic.Int64
	// overdue is the deadline the watchdog found passed on its last tick
	// (watchdog goroutine only).
	overdue int64
	// wake cuts a guest's sleep (WASI poll_oneoff) short when interrupted.
	wake chan struct{}

	// The call in progress.
	event  []byte
	out    []byte
	hasOut bool
	outErr string
	errMsg []byte

	stdout, stderr *lineLogger
}

// noDeadline is the deadline of a call without a timeout: the watchdog
// never reaches it, but Close sees the instance is busy.
const noDeadline = math.MaxInt64

type instanceKey struct{}

func instanceFrom(ctx context.Context) *instance {
	in, _ := ctx.Value(instanceKey{}).(*instance)
	return in
}

// newInstance instantiates the module in its sandbox and runs its start-up
// exports (start function, _initialize, evr_init) under the init deadline.
func (f *Filter) newInstance(ctx context.Context) (in *instance, err error) {
	in = &instance{f: f, wake: make(chan struct{}, 1)}
	in.stdout = &lineLogger{f: f, stream: "stdout"}
	in.stderr = &lineLogger{f: f, stream: "stderr"}
	in.ctx = context.WithValue(context.Background(), instanceKey{}, in)
	if f.host.mode == deadlineContextWatchdog {
		in.ctx, in.cancel = context.WithCancel(in.ctx)
	}
	// The sandbox: no arguments, no environment, no files, no sockets;
	// real clocks and a cryptographic random source; output to the log.
	//
	// Every WASI function that can be called in a loop is hooked (clocks,
	// sleep, yield, random, stdout, stderr; stdin is empty and never
	// blocks), as are the evr imports: once the call is stopped, the next
	// host call traps at once. Without this a guest that sleeps or reads
	// the clock in a loop ran on until its next fuel checkpoint, up to
	// FuelTicks turns later (40 s for a 10 ms sleep).
	mc := wazero.NewModuleConfig().
		WithName("").
		WithStartFunctions().
		WithWalltime(in.walltime, sys.ClockResolution(time.Microsecond)).
		WithNanotime(in.nanotime, 1).
		WithNanosleep(in.sleep).
		WithOsyield(in.checkpoint).
		WithRandSource(guardedReader{in, rand.Reader}).
		WithStdout(guardedWriter{in, in.stdout}).
		WithStderr(guardedWriter{in, in.stderr})
	mod, err := f.rt.InstantiateModule(experimental.WithMemoryAllocator(in.ctx, guestMemory), f.compiled, mc)
	if err != nil {
		return nil, fmt.Errorf("instantiate: %w", err)
	}
	in.mod = mod
	in.fn = mod.ExportedFunction(exportFilter)
	in.interruptG, _ = mod.ExportedGlobal(instrument.InterruptExport).(api.MutableGlobal)
	in.growFailed, _ = mod.ExportedGlobal(instrument.GrowFailedExport).(api.MutableGlobal)
	in.stackExhausted = mod.ExportedGlobal(instrument.StackExhaustedExport)
	if in.fn == nil || in.interruptG == nil || in.growFailed == nil {
		_ = mod.Close(context.Background())
		return nil, errors.New("internal error: instrumented exports missing")
	}
	f.host.wd.register(in)

	initTimeout := time.Duration(0)
	if f.opts.Timeout > 0 {
		initTimeout = max(10*f.opts.Timeout, initTimeoutMin)
	}
	steps := []struct {
		name string
		run  bool
	}{{instrument.StartExport, f.hasStart}, {exportInitialize, f.hasInit}, {exportInit, f.hasEvInit}}
	for _, s := range steps {
		if !s.run {
			continue
		}
		in.stack[0] = 0
		kind, err := in.invoke(mod.ExportedFunction(s.name), initTimeout)
		if err != nil {
			in.close()
			name := s.name
			if name == instrument.StartExport {
				name = "the start function"
			}
			if kind == KindTimeout {
				return nil, fmt.Errorf("%s did not return within %s", name, initTimeout)
			}
			return nil, fmt.Errorf("%s failed (%s): %w", name, kind, err)
		}
		if s.name == exportInit {
			if rc := int32(uint32(in.stack[0])); rc != 0 {
				reason := ""
				if len(in.errMsg) > 0 {
					reason = ": " + string(in.errMsg)
				}
				in.close()
				return nil, fmt.Errorf("%s returned %d, refusing to load%s", exportInit, rc, reason)
			}
		}
	}
	return in, nil
}

// interrupt stops the call in progress (called by the watchdog).
func (in *instance) interrupt() {
	if in.cancel != nil {
		in.cancel()
	} else {
		in.interruptG.Set(1)
	}
	select {
	case in.wake <- struct{}{}:
	default:
	}
}

// errStopped is the trap of a host call made by a call that was stopped
// (past its deadline, or its filter closing).
var errStopped = errors.New("call stopped: past its deadline")

// stopped reports whether the call in progress was interrupted.
func (in *instance) stopped() bool { return in.deadline.Load() == claimed }

// checkpoint traps the call if it was interrupted. Every host function
// calls it first: a guest that keeps calling the host after its deadline
// (a retry loop that sleeps, a clock polled in a busy loop) ends at its
// next host call instead of its next fuel checkpoint.
func (in *instance) checkpoint() {
	if in.stopped() {
		panic(errStopped)
	}
}

// sleep is the guest's nanosleep (WASI poll_oneoff): cut short when the
// call is interrupted, and a trap once it is.
func (in *instance) sleep(ns int64) {
	in.checkpoint()
	if ns <= 0 {
		return
	}
	t := time.NewTimer(time.Duration(ns))
	defer t.Stop()
	select {
	case <-t.C:
	case <-in.wake:
	}
	in.checkpoint()
}

// clockBase is the origin of the guests' monotonic clock.
var clockBase = time.Now()

func (in *instance) nanotime() int64 {
	in.checkpoint()
	return int64(time.Since(clockBase))
}

func (in *instance) walltime() (int64, int32) {
	in.checkpoint()
	t := time.Now()
	return t.Unix(), int32(t.Nanosecond())
}

// guardedWriter is a guest's stdout or stderr (WASI fd_write).
type guardedWriter struct {
	in *instance
	w  *lineLogger
}

func (g guardedWriter) Write(p []byte) (int, error) {
	g.in.checkpoint()
	return g.w.Write(p)
}

// guardedReader is a guest's random source (WASI random_get).
type guardedReader struct {
	in *instance
	r  io.Reader
}

func (g guardedReader) Read(p []byte) (int, error) {
	g.in.checkpoint()
	return g.r.Read(p)
}

func (in *instance) close() {
	in.f.host.wd.unregister(in)
	if in.cancel != nil {
		in.cancel()
	}
	_ = in.mod.Close(context.Background())
}

// invoke calls fn with in.stack under timeout and classifies a failure.
// It never panics.
func (in *instance) invoke(fn api.Function, timeout time.Duration) (kind string, err error) {
	ctx := in.ctx
	mode := in.f.host.mode
	// A memory.grow that failed in an earlier call the guest survived is
	// not this call's failure.
	if in.growFailed.Get() != 0 {
		in.growFailed.Set(0)
	}
	// deadline also marks the instance busy for Close, which interrupts
	// calls that outlive their grace, with or without a timeout.
	d := int64(noDeadline)
	if timeout > 0 {
		if mode == deadlinePerCall {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, timeout)
			defer cancel()
		} else {
			d = in.f.host.wd.deadline(timeout)
		}
	}
	wd := in.f.host.wd
	wd.begin()
	in.deadline.Store(d)
	err = in.guarded(ctx, fn)
	interrupted := in.deadline.Swap(0) == claimed
	wd.end()
	if err == nil && !interrupted {
		return "", nil
	}
	if interrupted {
		// Even a call that returned as the watchdog fired (a sleep cut
		// short returns normally) overran its deadline; its interrupt
		// flag may be set, so the instance goes either way.
		return KindTimeout, fmt.Errorf("did not return within %s", timeout)
	}
	err = shortTrace(err)
	var exit *sys.ExitError
	switch {
	case in.stackExhausted != nil && in.stackExhausted.Get() == 1, isStackOverflow(err):
		return KindStack, fmt.Errorf("call stack exhausted (unbounded recursion?): %w", err)
	case in.growFailed.Get() != 0:
		return KindMemory, fmt.Errorf("out of memory (memory_limit %d bytes): %w", int64(memoryLimitPages(in.f.opts.MemoryLimit))*instrument.PageSize, err)
	case errors.As(err, &exit):
		switch exit.ExitCode() {
		case sys.ExitCodeDeadlineExceeded, sys.ExitCodeContextCanceled:
			return KindTimeout, fmt.Errorf("did not return within %s", timeout)
		}
		return KindExit, fmt.Errorf("module called proc_exit(%d)", exit.ExitCode())
	}
	return KindTrap, err
}

// maxTraceFrames is how many frames of wazero's "wasm stack trace" an error
// keeps: a recursion that exhausts its stack has thousands, and the error
// goes into logs and dead letters.
const maxTraceFrames = 8

// traceError is a trap whose message keeps only the top of its stack trace.
type traceError struct {
	msg string
	err error
}

func (e *traceError) Error() string { return e.msg }
func (e *traceError) Unwrap() error { return e.err }

// shortTrace returns err with its wasm stack trace cut to maxTraceFrames
// frames, saying how many were left out.
func shortTrace(err error) error {
	msg := err.Error()
	const marker = "\nwasm stack trace:\n"
	i := strings.Index(msg, marker)
	if i < 0 {
		return err
	}
	frames := strings.Split(msg[i+len(marker):], "\n")
	if len(frames) <= maxTraceFrames {
		return err
	}
	short := msg[:i+len(marker)] + strings.Join(frames[:maxTraceFrames], "\n") +
		fmt.Sprintf("\n\t... %d more frames", len(frames)-maxTraceFrames)
	return &traceError{msg: short, err: err}
}

// isStackOverflow reports wazero's own stack overflow trap (its stack
// ceiling), which the rewriter's budget normally reaches first.
func isStackOverflow(err error) bool {
	return err != nil && strings.Contains(err.Error(), "stack overflow")
}

func (in *instance) guarded(ctx context.Context, fn api.Function) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic in the host while running the module: %v", r)
		}
	}()
	return fn.CallWithStack(ctx, in.stack[:])
}

// call runs evr_filter on ev. discard reports that the instance must be
// replaced (it trapped, exited, timed out or ran out of memory).
func (in *instance) call(ev *gateway.Event) (res filters.Result, kind string, err error, discard bool) {
	in.event = ev.JSON
	in.out, in.hasOut, in.outErr, in.errMsg = nil, false, "", in.errMsg[:0]
	in.stack[0] = uint64(len(ev.JSON))
	kind, err = in.invoke(in.fn, in.f.opts.Timeout)
	in.event = nil
	if kind != "" {
		return filters.Result{}, kind, err, true
	}
	res, kind, err = in.result(ev, uint32(in.stack[0]))
	in.out = nil // the replacement's bytes belong to the event now
	return res, kind, err, false
}

// The host functions of module "evr". Each finds its instance in the
// call's context. An out-of-range pointer panics, which wazero turns into a
// trap of the call.

func (f *Filter) instantiateHostModule(ctx context.Context) error {
	b := f.rt.NewHostModuleBuilder(hostModule)
	def := func(name string, fn api.GoModuleFunc) {
		sig := hostFunctions[name]
		b.NewFunctionBuilder().WithGoModuleFunction(fn, sig.params, sig.results).Export(name)
	}
	def("read_event", hostReadEvent)
	def("get_config", hostGetConfig)
	def("set_output", hostSetOutput)
	def("set_error", hostSetError)
	def("log", hostLog)
	def("log_enabled", hostLogEnabled)
	_, err := b.Instantiate(ctx)
	return err
}

// mustInstance returns the instance of the call, and traps it if it was
// stopped.
func mustInstance(ctx context.Context, fn string) *instance {
	in := instanceFrom(ctx)
	if in == nil {
		panic(fmt.Errorf("evr.%s called outside a filter call", fn))
	}
	in.checkpoint()
	return in
}

// copyOut writes data at buf if it fits in bufLen and returns its length.
func copyOut(mod api.Module, fn string, buf, bufLen uint32, data []byte) uint64 {
	if uint64(len(data)) <= uint64(bufLen) && len(data) > 0 {
		if !mod.Memory().Write(buf, data) {
			panic(fmt.Errorf("evr.%s: buffer [%d, %d) is outside the module's memory (%d bytes)",
				fn, buf, uint64(buf)+uint64(len(data)), mod.Memory().Size()))
		}
	}
	return uint64(uint32(len(data)))
}

func readIn(mod api.Module, fn string, ptr, n uint32) []byte {
	b, ok := mod.Memory().Read(ptr, n)
	if !ok {
		panic(fmt.Errorf("evr.%s: [%d, %d) is outside the module's memory (%d bytes)",
			fn, ptr, uint64(ptr)+uint64(n), mod.Memory().Size()))
	}
	return b
}

func hostReadEvent(ctx context.Context, mod api.Module, stack []uint64) {
	in := mustInstance(ctx, "read_event")
	stack[0] = copyOut(mod, "read_event", api.DecodeU32(stack[0]), api.DecodeU32(stack[1]), in.event)
}

func hostGetConfig(ctx context.Context, mod api.Module, stack []uint64) {
	in := mustInstance(ctx, "get_config")
	stack[0] = copyOut(mod, "get_config", api.DecodeU32(stack[0]), api.DecodeU32(stack[1]), in.f.config)
}

func hostSetOutput(ctx context.Context, mod api.Module, stack []uint64) {
	in := mustInstance(ctx, "set_output")
	ptr, n := api.DecodeU32(stack[0]), api.DecodeU32(stack[1])
	if n > gateway.MaxEventSize {
		in.hasOut, in.outErr = false, fmt.Sprintf("output of %d bytes is over the %d byte limit", n, gateway.MaxEventSize)
		return
	}
	// The one copy of the output: these bytes become the replacement
	// event's JSON (cevent.Parse keeps them), so they are new each time,
	// never a reused buffer.
	in.out = bytes.Clone(readIn(mod, "set_output", ptr, n))
	in.hasOut, in.outErr = true, ""
}

func hostSetError(ctx context.Context, mod api.Module, stack []uint64) {
	in := mustInstance(ctx, "set_error")
	ptr, n := api.DecodeU32(stack[0]), api.DecodeU32(stack[1])
	b := readIn(mod, "set_error", ptr, n)
	in.errMsg = append(in.errMsg[:0], b[:min(len(b), maxErrorReason)]...)
}

func guestLevel(l int32) slog.Level {
	switch {
	case l <= guestLevelDebug:
		return slog.LevelDebug
	case l == guestLevelInfo:
		return slog.LevelInfo
	case l == guestLevelWarn:
		return slog.LevelWarn
	}
	return slog.LevelError
}

func hostLog(ctx context.Context, mod api.Module, stack []uint64) {
	in := mustInstance(ctx, "log")
	level := guestLevel(api.DecodeI32(stack[0]))
	ptr, n := api.DecodeU32(stack[1]), api.DecodeU32(stack[2])
	b := readIn(mod, "log", ptr, n)
	if !in.f.log.Enabled(context.Background(), level) {
		return
	}
	in.f.guestMessage(level, "guest log", b)
}

func hostLogEnabled(ctx context.Context, _ api.Module, stack []uint64) {
	in := mustInstance(ctx, "log_enabled")
	if in.f.log.Enabled(context.Background(), guestLevel(api.DecodeI32(stack[0]))) {
		stack[0] = 1
	} else {
		stack[0] = 0
	}
}

// guestMessage logs one line from the guest, rate-limited per filter.
func (f *Filter) guestMessage(level slog.Level, msg string, line []byte, attrs ...slog.Attr) {
	ok, suppressed := f.guestLog.allow()
	if !ok {
		return
	}
	if len(line) > maxGuestLogLine {
		line = line[:maxGuestLogLine]
	}
	attrs = append(attrs, slog.String("message", string(line)))
	if suppressed > 0 {
		attrs = append(attrs, slog.Int("suppressed", suppressed))
	}
	f.log.LogAttrs(context.Background(), level, msg, attrs...)
}

// lineLogger sends a guest's stdout or stderr to the log at debug level,
// one record per line.
type lineLogger struct {
	f      *Filter
	stream string
	buf    []byte
}

func (l *lineLogger) Write(p []byte) (int, error) {
	if !l.f.log.Enabled(context.Background(), slog.LevelDebug) {
		return len(p), nil
	}
	n := len(p)
	for len(p) > 0 {
		i := 0
		for i < len(p) && p[i] != '\n' {
			i++
		}
		if len(l.buf) < maxGuestLogLine {
			l.buf = append(l.buf, p[:min(i, maxGuestLogLine-len(l.buf))]...)
		}
		if i == len(p) {
			break
		}
		l.f.guestMessage(slog.LevelDebug, "guest output", l.buf, slog.String("stream", l.stream))
		l.buf = l.buf[:0]
		p = p[i+1:]
	}
	return n, nil
}

// limiter is a token bucket: rate tokens a second, up to burst.
type limiter struct {
	rate, burst float64

	mu         sync.Mutex
	tokens     float64
	last       time.Time
	suppressed int
	started    bool
}

// allow takes a token if there is one, and reports how many calls were
// refused since the last allowed one.
func (l *limiter) allow() (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if !l.started {
		l.started, l.tokens = true, l.burst
	} else {
		l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	}
	l.last = now
	if l.tokens < 1 {
		l.suppressed++
		return false, 0
	}
	l.tokens--
	s := l.suppressed
	l.suppressed = 0
	return true, s
}
